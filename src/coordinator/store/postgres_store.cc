// The Store on PostgreSQL through libpq: one connection per store, one statement or transaction
// at a time on it. Several coordinators may share the database; migrations run under an
// advisory lock so that only one of them applies each.
#include <fmt/format.h>
#include <libpq-fe.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <set>

#include "base/encoding.h"
#include "base/log.h"
#include "coordinator/store/store.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

// Versioned schema, the PostgreSQL dialect of sqlite_store.cc's list: entry i brings the database
// from version i to i + 1. Append, never edit.
constexpr const char* kMigrations[] = {
    R"sql(
      CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        key_prefix TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        created_at BIGINT NOT NULL
      );
      CREATE INDEX api_keys_account ON api_keys(account_id);
    )sql",
    R"sql(
      CREATE TABLE releases (
        binary_hash TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE TABLE provider_keys (
        public_key TEXT PRIMARY KEY,
        key_backend TEXT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        replaced_by TEXT
      );
    )sql",
    R"sql(
      ALTER TABLE accounts ADD COLUMN balance BIGINT NOT NULL DEFAULT 0
        CHECK (balance BETWEEN 0 AND 1000000000000000000);
      ALTER TABLE accounts ADD COLUMN referrer TEXT REFERENCES accounts(id);
      ALTER TABLE accounts ADD COLUMN owner TEXT REFERENCES accounts(id);
      CREATE TABLE ledger (
        id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        amount BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (request_id, account_id, kind)
      );
      CREATE INDEX ledger_account ON ledger(account_id, id);
      CREATE INDEX accounts_owner ON accounts(owner);
      CREATE TABLE prices (
        model TEXT PRIMARY KEY,
        input_per_million BIGINT NOT NULL CHECK (input_per_million >= 0),
        output_per_million BIGINT NOT NULL CHECK (output_per_million >= 0)
      );
    )sql",
};

// Any number: the key of the advisory lock migrations hold.
constexpr int64_t kMigrationLock = 0x6461726b626c6f6f;  // "darkbloo"

struct ConnectionCloser {
  void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct ResultClearer {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Connection = std::unique_ptr<PGconn, ConnectionCloser>;
using PgResult = std::unique_ptr<PGresult, ResultClearer>;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string one_line(const char* message) {
  std::string text = message ? message : "unknown error";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(Connection connection) : connection_(std::move(connection)) {}

  std::string_view kind() const override { return "postgres"; }

  Status migrate() {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    DARKBLOOM_RETURN_IF_ERROR(command("BEGIN"));
    Status done = migrate_locked();
    if (!done) {
      (void)command("ROLLBACK");
      return done;
    }
    return command("COMMIT");
  }

  Result<std::string> create_account(std::string_view name) override {
    const std::string id = "acct_" + hex_encode(crypto::random_bytes(12));
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
                      {id, std::string(name), std::to_string(unix_now())});
    if (!result) return result.error();
    return id;
  }

  Status add_api_key(const ApiKeyRecord& key) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("INSERT INTO api_keys (key_hash, key_prefix, account_id, created_at) VALUES ($1, $2, $3, $4)",
                      {key.key_hash, key.key_prefix, key.account_id, std::to_string(key.created_at)});
    if (!result) return result.error();
    return {};
  }

  Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view key_hash) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("SELECT key_hash, key_prefix, account_id, created_at FROM api_keys WHERE key_hash = $1", {key_hash});
    if (!result) return result.error();
    if (PQntuples(result->get()) == 0) return std::optional<ApiKeyRecord>{};
    ApiKeyRecord record;
    record.key_hash = text(*result, 0, 0);
    record.key_prefix = text(*result, 0, 1);
    record.account_id = text(*result, 0, 2);
    record.created_at = integer(*result, 0, 3);
    return std::optional<ApiKeyRecord>{std::move(record)};
  }

  Result<std::optional<int64_t>> balance(std::string_view account_id) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("SELECT balance FROM accounts WHERE id = $1", {account_id});
    if (!result) return result.error();
    if (PQntuples(result->get()) == 0) return std::optional<int64_t>{};
    return std::optional<int64_t>{integer(*result, 0, 0)};
  }

  Result<int> apply(const std::vector<LedgerEntry>& entries) override {
    DARKBLOOM_RETURN_IF_ERROR(validate_entries(entries));
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    DARKBLOOM_RETURN_IF_ERROR(command("BEGIN"));
    int added = 0;
    Status done;
    BalanceChanges changes;
    const std::string now = std::to_string(unix_now());
    for (const LedgerEntry& entry : entries) {
      auto inserted = run_entry(
          "INSERT INTO ledger (request_id, account_id, kind, amount, created_at) VALUES ($1, $2, $3, $4, $5) "
          "ON CONFLICT (request_id, account_id, kind) DO NOTHING",
          {entry.request_id, entry.account_id, ledger_kind_name(entry.kind), std::to_string(entry.amount), now}, entry);
      if (!inserted) {
        done = inserted.error();
        break;
      }
      if (std::string_view(PQcmdTuples(inserted->get())) == "0") continue;  // recorded before
      done = changes.add(entry);
      if (!done) break;
      ++added;
    }
    // One update per account, in account order: row locks are always taken in the same order, so
    // coordinators writing at once cannot deadlock.
    for (const auto& [account, amount] : changes.by_account) {
      if (!done) break;
      auto updated =
          run_entry("UPDATE accounts SET balance = balance + $2 WHERE id = $1", {account, std::to_string(amount)},
                    LedgerEntry{"", account, LedgerKind::charge, amount, 0});
      if (!updated) done = updated.error();
    }
    if (!done) {
      (void)command("ROLLBACK");
      return done.error();
    }
    DARKBLOOM_RETURN_IF_ERROR(command("COMMIT"));
    return added;
  }

  Result<std::vector<LedgerEntry>> ledger(std::string_view account_id, int limit) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    const std::string limit_text = std::to_string(limit);
    auto result =
        account_id.empty()
            ? run("SELECT request_id, account_id, kind, amount, created_at FROM ledger ORDER BY id DESC LIMIT $1",
                  {limit_text})
            : run("SELECT request_id, account_id, kind, amount, created_at FROM ledger WHERE account_id = $1 "
                  "ORDER BY id DESC LIMIT $2",
                  {account_id, limit_text});
    if (!result) return result.error();
    return read_entries(*result);
  }

  Status set_price(const Price& price) override {
    DARKBLOOM_RETURN_IF_ERROR(validate_price(price));
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("INSERT INTO prices (model, input_per_million, output_per_million) VALUES ($1, $2, $3) ON CONFLICT (model) "
            "DO UPDATE SET input_per_million = excluded.input_per_million, "
            "output_per_million = excluded.output_per_million",
            {price.model, std::to_string(price.input_per_million), std::to_string(price.output_per_million)});
    if (!result) return result.error();
    return {};
  }

  Result<std::vector<Price>> prices() override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("SELECT model, input_per_million, output_per_million FROM prices ORDER BY model", {});
    if (!result) return result.error();
    std::vector<Price> prices;
    for (int row = 0; row < PQntuples(result->get()); ++row) {
      prices.push_back({text(*result, row, 0), integer(*result, row, 1), integer(*result, row, 2)});
    }
    return prices;
  }

  Status ensure_account(std::string_view id, std::string_view name, std::string_view owner) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("INSERT INTO accounts (id, name, created_at, owner) VALUES ($1, $4, $3, NULLIF($2, '')) "
            "ON CONFLICT (id) DO NOTHING",
            {id, owner, std::to_string(unix_now()), name});
    if (result) return {};
    if (last_state_ == "23503") return make_error(Errc::not_found, fmt::format("no account {}", owner));
    return result.error();
  }

  Result<std::vector<Escrow>> escrows(std::string_view prefix) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("SELECT id, owner, balance FROM accounts WHERE owner IS NOT NULL AND left(id, length($1)) = $1 "
            "AND balance > 0 ORDER BY id",
            {prefix});
    if (!result) return result.error();
    std::vector<Escrow> escrows;
    for (int row = 0; row < PQntuples(result->get()); ++row) {
      escrows.push_back({text(*result, row, 0), text(*result, row, 1), integer(*result, row, 2)});
    }
    return escrows;
  }

  Result<std::vector<LedgerEntry>> charges(std::string_view owner, int limit) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run(
        "SELECT l.request_id, l.account_id, l.kind, l.amount, l.created_at FROM ledger l "
        "JOIN accounts a ON a.id = l.account_id WHERE a.owner = $1 AND l.kind = 'charge' ORDER BY l.id DESC LIMIT $2",
        {owner, std::to_string(limit)});
    if (!result) return result.error();
    return read_entries(*result);
  }

  Status claim_coordinator(std::string_view id) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    if (claims_.count(std::string(id)) != 0) return {};
    DARKBLOOM_RETURN_IF_ERROR(try_claim(id));
    claims_.insert(std::string(id));
    return {};
  }

  Status set_referrer(std::string_view account_id, std::string_view referrer_id) override {
    if (account_id == referrer_id) return make_error(Errc::invalid_argument, "an account cannot refer itself");
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    DARKBLOOM_RETURN_IF_ERROR(command("BEGIN"));
    Status done = set_referrer_locked(account_id, referrer_id);
    if (!done) {
      (void)command("ROLLBACK");
      return done;
    }
    return command("COMMIT");
  }

  Result<std::optional<std::string>> referrer(std::string_view account_id) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("SELECT referrer FROM accounts WHERE id = $1 AND referrer IS NOT NULL", {account_id});
    if (!result) return result.error();
    if (PQntuples(result->get()) == 0) return std::optional<std::string>{};
    return std::optional<std::string>{text(*result, 0, 0)};
  }

  Status add_release(const ReleaseRecord& release) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("INSERT INTO releases (binary_hash, version, note, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (binary_hash) DO UPDATE SET version = excluded.version, note = excluded.note",
            {release.binary_hash, release.version, release.note, std::to_string(release.created_at)});
    if (!result) return result.error();
    return {};
  }

  Result<std::vector<ReleaseRecord>> list_releases() override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("SELECT binary_hash, version, note, created_at FROM releases ORDER BY created_at, binary_hash", {});
    if (!result) return result.error();
    std::vector<ReleaseRecord> releases;
    for (int row = 0; row < PQntuples(result->get()); ++row) {
      releases.push_back(
          {text(*result, row, 0), text(*result, row, 1), text(*result, row, 2), integer(*result, row, 3)});
    }
    return releases;
  }

  Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view public_key) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("SELECT public_key, key_backend, first_seen, last_seen, COALESCE(replaced_by, '') FROM provider_keys "
            "WHERE public_key = $1",
            {public_key});
    if (!result) return result.error();
    if (PQntuples(result->get()) == 0) return std::optional<ProviderKeyRecord>{};
    ProviderKeyRecord record;
    record.public_key = text(*result, 0, 0);
    record.key_backend = text(*result, 0, 1);
    record.first_seen = integer(*result, 0, 2);
    record.last_seen = integer(*result, 0, 3);
    record.replaced_by = text(*result, 0, 4);
    return std::optional<ProviderKeyRecord>{std::move(record)};
  }

  Status record_provider_key(std::string_view public_key, std::string_view key_backend,
                             std::string_view replaces) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    DARKBLOOM_RETURN_IF_ERROR(command("BEGIN"));
    const std::string now = std::to_string(unix_now());
    Status done;
    auto upserted =
        run("INSERT INTO provider_keys (public_key, key_backend, first_seen, last_seen) VALUES ($1, $2, $3, $3) "
            "ON CONFLICT (public_key) DO UPDATE SET last_seen = excluded.last_seen, key_backend = excluded.key_backend",
            {public_key, key_backend, now});
    if (!upserted) done = upserted.error();
    if (done && !replaces.empty()) {
      // The old key is retired: a rotation is one-way, so it can never register again.
      auto retired =
          run("INSERT INTO provider_keys (public_key, key_backend, first_seen, last_seen, replaced_by) "
              "VALUES ($1, '', $3, $3, $2) ON CONFLICT (public_key) DO UPDATE SET replaced_by = excluded.replaced_by",
              {replaces, public_key, now});
      if (!retired) done = retired.error();
    }
    if (!done) {
      (void)command("ROLLBACK");
      return done;
    }
    return command("COMMIT");
  }

 private:
  // Before an operation (never inside a transaction): a lost connection is opened again, so one
  // server restart or network blip does not fail every later call.
  void reconnect_if_broken() {
    if (PQstatus(connection_.get()) == CONNECTION_OK) return;
    PQreset(connection_.get());
    if (PQstatus(connection_.get()) != CONNECTION_OK) return;
    log::warn("store: reconnected to PostgreSQL");
    // Advisory locks belong to the session that ended: take the claims again.
    for (const std::string& id : claims_) {
      if (auto claimed = try_claim(id); !claimed) log::error("store: {}", claimed.error().message);
    }
  }

  Status try_claim(std::string_view id) {
    auto claimed = run("SELECT pg_try_advisory_lock(hashtext('darkbloom-coordinator:' || $1))", {id});
    if (!claimed) return claimed.error();
    if (text(*claimed, 0, 0) != "t") {
      return make_error(Errc::already_exists,
                        fmt::format("another coordinator runs as '{}' on this database: give each its own "
                                    "--coordinator-id",
                                    id));
    }
    return {};
  }

  // Rows of (request_id, account_id, kind, amount, created_at).
  static Result<std::vector<LedgerEntry>> read_entries(const PgResult& result) {
    std::vector<LedgerEntry> entries;
    for (int row = 0; row < PQntuples(result.get()); ++row) {
      LedgerEntry entry;
      entry.request_id = text(result, row, 0);
      entry.account_id = text(result, row, 1);
      auto kind = parse_ledger_kind(text(result, row, 2));
      if (!kind) return make_error(Errc::bad_format, "ledger row with unknown kind " + text(result, row, 2));
      entry.kind = *kind;
      entry.amount = integer(result, row, 3);
      entry.created_at = integer(result, row, 4);
      entries.push_back(std::move(entry));
    }
    return entries;
  }

  Status migrate_locked() {
    DARKBLOOM_RETURN_IF_ERROR(status_of(run("SELECT pg_advisory_xact_lock($1)", {std::to_string(kMigrationLock)})));
    DARKBLOOM_RETURN_IF_ERROR(command("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"));
    auto current = run("SELECT version FROM schema_version", {});
    if (!current) return current.error();
    const int64_t version = PQntuples(current->get()) > 0 ? integer(*current, 0, 0) : 0;
    const int64_t latest = static_cast<int64_t>(std::size(kMigrations));
    if (version > latest) {
      return make_error(
          Errc::unsupported,
          fmt::format("the database has schema version {}, newer than this coordinator's {}", version, latest));
    }
    for (int64_t v = version; v < latest; ++v) DARKBLOOM_RETURN_IF_ERROR(command(kMigrations[v]));
    if (version == latest) return {};
    return command(version == 0 ? fmt::format("INSERT INTO schema_version (version) VALUES ({})", latest)
                                : fmt::format("UPDATE schema_version SET version = {}", latest));
  }

  Status set_referrer_locked(std::string_view account_id, std::string_view referrer_id) {
    for (std::string_view id : {account_id, referrer_id}) {
      auto row = run("SELECT referrer IS NOT NULL FROM accounts WHERE id = $1 FOR UPDATE", {id});
      if (!row) return row.error();
      if (PQntuples(row->get()) == 0) return make_error(Errc::not_found, fmt::format("no account {}", id));
      if (id == account_id && text(*row, 0, 0) == "t") {
        return make_error(Errc::already_exists, fmt::format("account {} already has a referrer", id));
      }
    }
    return status_of(run("UPDATE accounts SET referrer = $2 WHERE id = $1", {account_id, referrer_id}));
  }

  // A statement without parameters or results (transaction control, DDL).
  Status command(const std::string& sql) {
    PgResult result(PQexec(connection_.get(), sql.c_str()));
    const ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return failure(result.get());
    return {};
  }

  Result<PgResult> run(const char* sql, std::initializer_list<std::string_view> parameters) {
    std::vector<std::string> owned(parameters.begin(), parameters.end());
    std::vector<const char*> values;
    for (const std::string& value : owned) values.push_back(value.c_str());
    PgResult result(PQexecParams(connection_.get(), sql, static_cast<int>(values.size()), nullptr, values.data(),
                                 nullptr, nullptr, 0));
    const ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return failure(result.get());
    return result;
  }

  // A ledger statement, with constraint failures named for the entry.
  Result<PgResult> run_entry(const char* sql, std::initializer_list<std::string_view> parameters,
                             const LedgerEntry& entry) {
    auto result = run(sql, parameters);
    if (result) return result;
    if (last_state_ == "23503") return make_error(Errc::not_found, fmt::format("no account {}", entry.account_id));
    if (last_state_ == "23514") return balance_refused(entry);
    return result.error();
  }

  Error failure(const PGresult* result) {
    const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    last_state_ = state ? state : "";
    return {Errc::io_error, "database error: " + one_line(PQerrorMessage(connection_.get()))};
  }

  static Status status_of(const Result<PgResult>& result) {
    if (!result) return result.error();
    return {};
  }

  static std::string text(const PgResult& result, int row, int column) {
    return std::string(PQgetvalue(result.get(), row, column),
                       static_cast<size_t>(PQgetlength(result.get(), row, column)));
  }
  static int64_t integer(const PgResult& result, int row, int column) {
    return std::strtoll(PQgetvalue(result.get(), row, column), nullptr, 10);
  }

  Connection connection_;
  std::mutex mutex_;
  std::string last_state_;        // SQLSTATE of the last failure
  std::set<std::string> claims_;  // coordinator ids this session holds
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres_store(const std::string& url) {
  Connection connection(PQconnectdb(url.c_str()));
  if (!connection || PQstatus(connection.get()) != CONNECTION_OK) {
    return make_error(Errc::unavailable, "cannot connect to PostgreSQL: " +
                                             one_line(connection ? PQerrorMessage(connection.get()) : "out of memory"));
  }
  // Notices ("relation already exists, skipping") are not errors; keep them off stderr.
  PQsetNoticeProcessor(
      connection.get(), [](void*, const char*) {}, nullptr);
  auto store = std::make_unique<PostgresStore>(std::move(connection));
  DARKBLOOM_RETURN_IF_ERROR(store->migrate());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace darkbloom::coordinator
