// The Store on PostgreSQL through libpq: one connection per store, one statement or transaction
// at a time on it. Several coordinators may share the database; migrations run under an
// advisory lock so that only one of them applies each.
#include <fmt/format.h>
#include <libpq-fe.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <vector>

#include "base/encoding.h"
#include "base/log.h"
#include "base/time.h"
#include "coordinator/store/schema.h"
#include "coordinator/store/store.h"
#include "coordinator/store/transaction.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

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

std::string one_line(const char* message) {
  std::string text = message ? message : "unknown error";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// The connection as a Transaction uses it.
struct PostgresSession {
  PGconn* connection;

  // A statement without parameters (transaction control, DDL); any rows it returns are dropped.
  Status exec(const std::string& sql) const {
    PgResult result(PQexec(connection, sql.c_str()));
    const ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      return make_error(PQstatus(connection) == CONNECTION_OK ? Errc::io_error : Errc::unavailable,
                        "database error: " + one_line(PQerrorMessage(connection)));
    }
    return {};
  }
  bool in_transaction() const {
    const PGTransactionStatusType status = PQtransactionStatus(connection);
    return status == PQTRANS_INTRANS || status == PQTRANS_INERROR;
  }
};
using PostgresTransaction = Transaction<PostgresSession>;

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(Connection connection) : connection_(std::move(connection)) {}
  // Ends the claims before the connection closes. Closing alone ends them too, but only once the
  // server's backend has noticed and exited, after PQfinish has returned: a coordinator started
  // right after this one stopped could still find its id taken.
  ~PostgresStore() override {
    if (claims_.empty() || PQstatus(connection_.get()) != CONNECTION_OK) return;
    if (auto released = command("SELECT pg_advisory_unlock_all()"); !released) {
      log::warn("store: releasing the coordinator claims: {}", released.error().message);
    }
  }

  std::string_view kind() const override { return "postgres"; }

  // One transaction for all pending versions, under an advisory lock that coordinators starting
  // at once queue on: the second finds the first's work done.
  Status migrate() {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto transaction = begin();
    if (!transaction) return transaction.error();
    // Waiting for another coordinator's migration is not a stuck statement.
    DARKBLOOM_RETURN_IF_ERROR(command("SET LOCAL statement_timeout = 0"));
    DARKBLOOM_RETURN_IF_ERROR(status_of(run("SELECT pg_advisory_xact_lock($1)", {std::to_string(kMigrationLock)})));
    DARKBLOOM_RETURN_IF_ERROR(command(create_schema_version_table(SqlDialect::postgres)));
    auto current = run("SELECT version FROM schema_version", {});
    if (!current) return current.error();
    const int64_t version = PQntuples(current->get()) > 0 ? integer(*current, 0, 0) : 0;
    DARKBLOOM_RETURN_IF_ERROR(check_schema_version(version));
    const int64_t latest = latest_schema_version();
    if (version == latest) return transaction->commit();
    const std::vector<std::string> migrations = schema_migrations(SqlDialect::postgres);
    for (int64_t v = version; v < latest; ++v) DARKBLOOM_RETURN_IF_ERROR(command(migrations[static_cast<size_t>(v)]));
    DARKBLOOM_RETURN_IF_ERROR(command(set_schema_version(version, latest)));
    return transaction->commit();
  }

  Result<std::string> create_account(std::string_view name) override {
    const std::string id = "acct_" + hex_encode(crypto::random_bytes(12));
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
                      {id, std::string(name), std::to_string(unix_seconds_now())});
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
    // Without the coordinator-id claim another coordinator may be using these escrow accounts.
    if (claims_lost_) return make_error(Errc::unavailable, "this coordinator's id is not held on the database");
    auto transaction = begin();
    if (!transaction) return transaction.error();
    int added = 0;
    BalanceChanges changes;
    const std::string now = std::to_string(unix_seconds_now());
    for (const LedgerEntry& entry : entries) {
      auto inserted = run_entry(
          "INSERT INTO ledger (request_id, account_id, kind, amount, created_at) VALUES ($1, $2, $3, $4, $5) "
          "ON CONFLICT (request_id, account_id, kind) DO NOTHING",
          {entry.request_id, entry.account_id, ledger_kind_name(entry.kind), std::to_string(entry.amount), now}, entry);
      if (!inserted) return inserted.error();
      if (std::string_view(PQcmdTuples(inserted->get())) == "0") continue;  // recorded before
      DARKBLOOM_RETURN_IF_ERROR(changes.add(entry));
      ++added;
    }
    // One update per account, in account order: row locks are always taken in the same order, so
    // coordinators writing at once cannot deadlock.
    for (const auto& [account, amount] : changes.by_account) {
      DARKBLOOM_RETURN_IF_ERROR(status_of(run_entry("UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                                                    {account, std::to_string(amount)},
                                                    LedgerEntry{"", account, LedgerKind::charge, amount, 0})));
    }
    DARKBLOOM_RETURN_IF_ERROR(transaction->commit());
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

  Status set_account_limits(const AccountLimits& limits) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run(
        "INSERT INTO account_limits (account_id, requests_per_second, burst, max_concurrent) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (account_id) DO UPDATE SET requests_per_second = excluded.requests_per_second, "
        "burst = excluded.burst, max_concurrent = excluded.max_concurrent",
        {limits.account_id, std::to_string(limits.requests_per_second), std::to_string(limits.burst),
         std::to_string(limits.max_concurrent)});
    if (!result) {
      if (last_state_ == "23503") return make_error(Errc::not_found, fmt::format("no account {}", limits.account_id));
      return result.error();
    }
    return {};
  }

  Result<std::vector<AccountLimits>> account_limits() override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run(
        "SELECT account_id, requests_per_second, burst, max_concurrent FROM account_limits ORDER BY account_id", {});
    if (!result) return result.error();
    std::vector<AccountLimits> all;
    for (int row = 0; row < PQntuples(result->get()); ++row) {
      all.push_back(
          {text(*result, row, 0), integer(*result, row, 1), integer(*result, row, 2), integer(*result, row, 3)});
    }
    return all;
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
            {id, owner, std::to_string(unix_seconds_now()), name});
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

  bool claims_held() const override { return !claims_lost_.load(); }

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
    auto transaction = begin();
    if (!transaction) return transaction.error();
    DARKBLOOM_RETURN_IF_ERROR(set_referrer_locked(account_id, referrer_id));
    return transaction->commit();
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

  Status set_catalog_model(const CatalogModel& model) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result =
        run("INSERT INTO model_catalog (id, merkle_root, size_bytes, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO UPDATE SET merkle_root = excluded.merkle_root, size_bytes = excluded.size_bytes, "
            "created_at = excluded.created_at",
            {model.id, model.merkle_root, std::to_string(model.size_bytes), std::to_string(model.created_at)});
    if (!result) return result.error();
    return {};
  }

  Result<std::vector<CatalogModel>> catalog_models() override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    auto result = run("SELECT id, merkle_root, size_bytes, created_at FROM model_catalog ORDER BY id", {});
    if (!result) return result.error();
    std::vector<CatalogModel> models;
    for (int row = 0; row < PQntuples(result->get()); ++row) {
      models.push_back({text(*result, row, 0), text(*result, row, 1), static_cast<uint64_t>(integer(*result, row, 2)),
                        integer(*result, row, 3)});
    }
    return models;
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
    auto transaction = begin();
    if (!transaction) return transaction.error();
    const std::string now = std::to_string(unix_seconds_now());
    DARKBLOOM_RETURN_IF_ERROR(status_of(
        run("INSERT INTO provider_keys (public_key, key_backend, first_seen, last_seen) VALUES ($1, $2, $3, $3) "
            "ON CONFLICT (public_key) DO UPDATE SET last_seen = excluded.last_seen, key_backend = excluded.key_backend",
            {public_key, key_backend, now})));
    if (!replaces.empty()) {
      // The old key is retired: a rotation is one-way, so it can never register again. Only
      // once, and only to one new key; a key this store never saw leaves no row.
      auto retired =
          run("UPDATE provider_keys SET replaced_by = $2 WHERE public_key = $1 "
              "AND (replaced_by IS NULL OR replaced_by = '' OR replaced_by = $2) RETURNING 1",
              {replaces, public_key});
      if (!retired) return retired.error();
      if (PQntuples(retired->get()) == 0) {
        auto known = run("SELECT 1 FROM provider_keys WHERE public_key = $1", {replaces});
        if (!known) return known.error();
        if (PQntuples(known->get()) > 0) return rotated_elsewhere();
      }
    }
    return transaction->commit();
  }

  Status expire_provider_keys(int64_t unix_seconds) override {
    std::lock_guard lock(mutex_);
    reconnect_if_broken();
    return status_of(run("DELETE FROM provider_keys WHERE (replaced_by IS NULL OR replaced_by = '') AND last_seen < $1",
                         {std::to_string(unix_seconds)}));
  }

 private:
  // Before an operation (never inside a transaction): a lost connection is opened again, so one
  // server restart or network blip does not fail every later call.
  void reconnect_if_broken() {
    if (PQstatus(connection_.get()) == CONNECTION_OK && !claims_lost_) return;
    if (PQstatus(connection_.get()) != CONNECTION_OK) {
      // Advisory locks belong to the session that ended: until they are taken again, another
      // coordinator may hold this one's id, and billing pauses (claims_held()).
      if (!claims_.empty()) claims_lost_ = true;
      PQreset(connection_.get());
      if (PQstatus(connection_.get()) != CONNECTION_OK) return;
      log::warn("store: reconnected to PostgreSQL");
    }
    bool all = true;
    for (const std::string& id : claims_) {
      if (auto claimed = try_claim(id); !claimed) {
        log::error("store: {}; billing paused until it is taken again", claimed.error().message);
        all = false;
      }
    }
    if (all && claims_lost_) log::info("store: coordinator id claimed again; billing resumes");
    claims_lost_ = !all;
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

  Result<PostgresTransaction> begin() {
    return PostgresTransaction::begin(PostgresSession{connection_.get()}, "BEGIN");
  }
  Status command(const std::string& sql) { return PostgresSession{connection_.get()}.exec(sql); }

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
    // A lost connection or a statement cut off by statement_timeout (57014) is a database that is
    // not answering, not a refused statement: the API answers 503 and retries later.
    const bool unavailable =
        PQstatus(connection_.get()) != CONNECTION_OK || last_state_ == "57014" || last_state_.rfind("08", 0) == 0;
    return {unavailable ? Errc::unavailable : Errc::io_error,
            "database error: " + one_line(PQerrorMessage(connection_.get()))};
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
  std::atomic<bool> claims_lost_{false};
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres_store(const std::string& url) {
  // Bounds on a database that stops answering, unless the URL sets its own: connecting gives up
  // after 5 s, a statement after 10 s, and a silent peer is noticed by TCP keep-alives within
  // about 20 s. Keywords are read in order and the URL (expanded from dbname) comes last, so its
  // settings win.
  // The environment (PGCONNECT_TIMEOUT, PGOPTIONS) wins over these defaults too.
  std::vector<const char*> keywords{"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                    "tcp_user_timeout"};
  std::vector<const char*> values{"1", "10", "5", "2", "20000"};
  if (std::getenv("PGCONNECT_TIMEOUT") == nullptr) {
    keywords.push_back("connect_timeout");
    values.push_back("5");
  }
  if (std::getenv("PGOPTIONS") == nullptr) {
    keywords.push_back("options");
    values.push_back("-c statement_timeout=10000");
  }
  keywords.push_back("dbname");
  values.push_back(url.c_str());
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  Connection connection(PQconnectdbParams(keywords.data(), values.data(), 1));
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
