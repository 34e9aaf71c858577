// The Store on SQLite: one connection, one statement or transaction at a time on it (the store's
// mutex); WAL mode, so readers in other processes do not block the writer.
#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "base/encoding.h"
#include "base/file.h"
#include "base/time.h"
#include "coordinator/store/schema.h"
#include "coordinator/store/store.h"
#include "coordinator/store/transaction.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

struct DatabaseCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
using Database = std::unique_ptr<sqlite3, DatabaseCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// One statement (or several, without parameters or results).
Status exec_sql(sqlite3* db, const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message ? message : "unknown error";
    sqlite3_free(message);
    return make_error(Errc::io_error, "database error: " + text);
  }
  return {};
}

// The connection as a Transaction uses it.
struct SqliteSession {
  sqlite3* db;
  Status exec(const std::string& sql) const { return exec_sql(db, sql); }
  bool in_transaction() const { return sqlite3_get_autocommit(db) == 0; }
};
using SqliteTransaction = Transaction<SqliteSession>;

class SqliteStore final : public Store {
 public:
  SqliteStore(Database db, std::string path) : db_(std::move(db)), path_(std::move(path)) {}
  ~SqliteStore() override {
    for (const auto& [id, fd] : claims_) ::close(fd);  // closing releases the lock
  }

  std::string_view kind() const override { return "sqlite"; }

  // One transaction per version, so a failed step leaves the database at the version before it.
  Status migrate() {
    DARKBLOOM_RETURN_IF_ERROR(exec(create_schema_version_table(SqlDialect::sqlite)));
    int64_t version = 0;
    {
      auto statement = prepare("SELECT version FROM schema_version");
      if (!statement) return statement.error();
      if (sqlite3_step(statement->get()) == SQLITE_ROW) version = sqlite3_column_int64(statement->get(), 0);
    }
    DARKBLOOM_RETURN_IF_ERROR(check_schema_version(version));
    const std::vector<std::string> migrations = schema_migrations(SqlDialect::sqlite);
    for (int64_t v = version; v < latest_schema_version(); ++v) {
      auto transaction = begin();
      if (!transaction) return transaction.error();
      DARKBLOOM_RETURN_IF_ERROR(exec(migrations[static_cast<size_t>(v)]));
      DARKBLOOM_RETURN_IF_ERROR(exec(set_schema_version(v, v + 1)));
      DARKBLOOM_RETURN_IF_ERROR(transaction->commit());
    }
    return {};
  }

  Result<std::string> create_account(std::string_view name) override {
    std::lock_guard lock(mutex_);
    const std::string id = "acct_" + hex_encode(crypto::random_bytes(12));
    auto statement = prepare("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, id);
    bind_text(statement->get(), 2, name);
    sqlite3_bind_int64(statement->get(), 3, unix_seconds_now());
    DARKBLOOM_RETURN_IF_ERROR(step_done(statement->get()));
    return id;
  }

  Status add_api_key(const ApiKeyRecord& key) override {
    std::lock_guard lock(mutex_);
    auto statement =
        prepare("INSERT INTO api_keys (key_hash, key_prefix, account_id, created_at) VALUES (?1, ?2, ?3, ?4)");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, key.key_hash);
    bind_text(statement->get(), 2, key.key_prefix);
    bind_text(statement->get(), 3, key.account_id);
    sqlite3_bind_int64(statement->get(), 4, key.created_at);
    return step_done(statement->get());
  }

  Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view key_hash) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare("SELECT key_hash, key_prefix, account_id, created_at FROM api_keys WHERE key_hash = ?1");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, key_hash);
    const int rc = sqlite3_step(statement->get());
    if (rc == SQLITE_DONE) return std::optional<ApiKeyRecord>{};
    if (rc != SQLITE_ROW) return failure("find_api_key");
    ApiKeyRecord record;
    record.key_hash = column_text(statement->get(), 0);
    record.key_prefix = column_text(statement->get(), 1);
    record.account_id = column_text(statement->get(), 2);
    record.created_at = sqlite3_column_int64(statement->get(), 3);
    return std::optional<ApiKeyRecord>{std::move(record)};
  }

  Result<std::optional<int64_t>> balance(std::string_view account_id) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare("SELECT balance FROM accounts WHERE id = ?1");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, account_id);
    const int rc = sqlite3_step(statement->get());
    if (rc == SQLITE_DONE) return std::optional<int64_t>{};
    if (rc != SQLITE_ROW) return failure("balance");
    return std::optional<int64_t>{sqlite3_column_int64(statement->get(), 0)};
  }

  Result<int> apply(const std::vector<LedgerEntry>& entries) override {
    DARKBLOOM_RETURN_IF_ERROR(validate_entries(entries));
    std::lock_guard lock(mutex_);
    auto transaction = begin();
    if (!transaction) return transaction.error();
    int added = 0;
    BalanceChanges changes;
    for (const LedgerEntry& entry : entries) {
      auto statement = prepare(
          "INSERT INTO ledger (request_id, account_id, kind, amount, created_at) VALUES (?1, ?2, ?3, ?4, ?5) "
          "ON CONFLICT(request_id, account_id, kind) DO NOTHING");
      if (!statement) return statement.error();
      bind_text(statement->get(), 1, entry.request_id);
      bind_text(statement->get(), 2, entry.account_id);
      bind_text(statement->get(), 3, ledger_kind_name(entry.kind));
      sqlite3_bind_int64(statement->get(), 4, entry.amount);
      sqlite3_bind_int64(statement->get(), 5, unix_seconds_now());
      DARKBLOOM_RETURN_IF_ERROR(step_entry(statement->get(), entry));
      if (sqlite3_changes(db_.get()) == 0) continue;  // recorded before: already applied
      DARKBLOOM_RETURN_IF_ERROR(changes.add(entry));
      ++added;
    }
    // One update per account, in account order (see BalanceChanges).
    for (const auto& [account, amount] : changes.by_account) {
      auto update = prepare("UPDATE accounts SET balance = balance + ?2 WHERE id = ?1");
      if (!update) return update.error();
      bind_text(update->get(), 1, account);
      sqlite3_bind_int64(update->get(), 2, amount);
      DARKBLOOM_RETURN_IF_ERROR(step_entry(update->get(), LedgerEntry{"", account, LedgerKind::charge, amount, 0}));
    }
    DARKBLOOM_RETURN_IF_ERROR(transaction->commit());
    return added;
  }

  Result<std::vector<LedgerEntry>> ledger(std::string_view account_id, int limit) override {
    std::lock_guard lock(mutex_);
    auto statement =
        prepare(account_id.empty()
                    ? "SELECT request_id, account_id, kind, amount, created_at FROM ledger ORDER BY id DESC LIMIT ?2"
                    : "SELECT request_id, account_id, kind, amount, created_at FROM ledger WHERE account_id = ?1 "
                      "ORDER BY id DESC LIMIT ?2");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, account_id);
    sqlite3_bind_int(statement->get(), 2, limit);
    return read_entries(statement->get(), "ledger");
  }

  Status set_price(const Price& price) override {
    DARKBLOOM_RETURN_IF_ERROR(validate_price(price));
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "INSERT INTO prices (model, input_per_million, output_per_million) VALUES (?1, ?2, ?3) ON CONFLICT(model) "
        "DO UPDATE SET input_per_million = excluded.input_per_million, "
        "output_per_million = excluded.output_per_million");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, price.model);
    sqlite3_bind_int64(statement->get(), 2, price.input_per_million);
    sqlite3_bind_int64(statement->get(), 3, price.output_per_million);
    return step_done(statement->get());
  }

  Status set_account_limits(const AccountLimits& limits) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "INSERT INTO account_limits (account_id, requests_per_second, burst, max_concurrent) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(account_id) DO UPDATE SET requests_per_second = excluded.requests_per_second, "
        "burst = excluded.burst, max_concurrent = excluded.max_concurrent");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, limits.account_id);
    sqlite3_bind_int64(statement->get(), 2, limits.requests_per_second);
    sqlite3_bind_int64(statement->get(), 3, limits.burst);
    sqlite3_bind_int64(statement->get(), 4, limits.max_concurrent);
    if (sqlite3_step(statement->get()) != SQLITE_DONE) {
      if (sqlite3_extended_errcode(db_.get()) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return make_error(Errc::not_found, fmt::format("no account {}", limits.account_id));
      }
      return failure("set_account_limits");
    }
    return {};
  }

  Result<std::vector<AccountLimits>> account_limits() override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "SELECT account_id, requests_per_second, burst, max_concurrent FROM account_limits ORDER BY account_id");
    if (!statement) return statement.error();
    std::vector<AccountLimits> all;
    int rc;
    while ((rc = sqlite3_step(statement->get())) == SQLITE_ROW) {
      all.push_back({column_text(statement->get(), 0), sqlite3_column_int64(statement->get(), 1),
                     sqlite3_column_int64(statement->get(), 2), sqlite3_column_int64(statement->get(), 3)});
    }
    if (rc != SQLITE_DONE) return failure("account_limits");
    return all;
  }

  Result<std::vector<Price>> prices() override {
    std::lock_guard lock(mutex_);
    auto statement = prepare("SELECT model, input_per_million, output_per_million FROM prices ORDER BY model");
    if (!statement) return statement.error();
    std::vector<Price> prices;
    int rc;
    while ((rc = sqlite3_step(statement->get())) == SQLITE_ROW) {
      prices.push_back({column_text(statement->get(), 0), sqlite3_column_int64(statement->get(), 1),
                        sqlite3_column_int64(statement->get(), 2)});
    }
    if (rc != SQLITE_DONE) return failure("prices");
    return prices;
  }

  Status ensure_account(std::string_view id, std::string_view name, std::string_view owner) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "INSERT INTO accounts (id, name, created_at, owner) VALUES (?1, ?4, ?3, NULLIF(?2, '')) "
        "ON CONFLICT(id) DO NOTHING");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, id);
    bind_text(statement->get(), 2, owner);
    sqlite3_bind_int64(statement->get(), 3, unix_seconds_now());
    bind_text(statement->get(), 4, name);
    if (sqlite3_step(statement->get()) == SQLITE_DONE) return {};
    if (sqlite3_extended_errcode(db_.get()) == SQLITE_CONSTRAINT_FOREIGNKEY) {
      return make_error(Errc::not_found, fmt::format("no account {}", owner));
    }
    return failure("ensure_account");
  }

  Result<std::vector<Escrow>> escrows(std::string_view prefix) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "SELECT id, owner, balance FROM accounts WHERE owner IS NOT NULL AND substr(id, 1, length(?1)) = ?1 "
        "AND balance > 0 ORDER BY id");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, prefix);
    std::vector<Escrow> escrows;
    int rc;
    while ((rc = sqlite3_step(statement->get())) == SQLITE_ROW) {
      escrows.push_back({column_text(statement->get(), 0), column_text(statement->get(), 1),
                         sqlite3_column_int64(statement->get(), 2)});
    }
    if (rc != SQLITE_DONE) return failure("escrows");
    return escrows;
  }

  Result<std::vector<LedgerEntry>> charges(std::string_view owner, int limit) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "SELECT l.request_id, l.account_id, l.kind, l.amount, l.created_at FROM ledger l "
        "JOIN accounts a ON a.id = l.account_id WHERE a.owner = ?1 AND l.kind = 'charge' ORDER BY l.id DESC LIMIT ?2");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, owner);
    sqlite3_bind_int(statement->get(), 2, limit);
    return read_entries(statement->get(), "charges");
  }

  Status claim_coordinator(std::string_view id) override {
    std::lock_guard lock(mutex_);
    if (claims_.count(std::string(id)) != 0) return {};
    const std::string path = fmt::format("{}.{}.lock", path_, id);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return make_error(Errc::io_error, fmt::format("{}: {}", path, errno_message(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      return make_error(
          Errc::already_exists,
          fmt::format("another coordinator runs as '{}' on {}: give each its own --coordinator-id", id, path_));
    }
    claims_.emplace(std::string(id), fd);
    return {};
  }

  Status set_referrer(std::string_view account_id, std::string_view referrer_id) override {
    if (account_id == referrer_id) return make_error(Errc::invalid_argument, "an account cannot refer itself");
    std::lock_guard lock(mutex_);
    auto transaction = begin();
    if (!transaction) return transaction.error();
    DARKBLOOM_RETURN_IF_ERROR(set_referrer_locked(account_id, referrer_id));
    return transaction->commit();
  }

  Result<std::optional<std::string>> referrer(std::string_view account_id) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare("SELECT referrer FROM accounts WHERE id = ?1 AND referrer IS NOT NULL");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, account_id);
    const int rc = sqlite3_step(statement->get());
    if (rc == SQLITE_DONE) return std::optional<std::string>{};
    if (rc != SQLITE_ROW) return failure("referrer");
    return std::optional<std::string>{column_text(statement->get(), 0)};
  }

  Status add_release(const ReleaseRecord& release) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "INSERT INTO releases (binary_hash, version, note, created_at) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(binary_hash) DO UPDATE SET version = excluded.version, note = excluded.note");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, release.binary_hash);
    bind_text(statement->get(), 2, release.version);
    bind_text(statement->get(), 3, release.note);
    sqlite3_bind_int64(statement->get(), 4, release.created_at);
    return step_done(statement->get());
  }

  Result<std::vector<ReleaseRecord>> list_releases() override {
    std::lock_guard lock(mutex_);
    auto statement =
        prepare("SELECT binary_hash, version, note, created_at FROM releases ORDER BY created_at, binary_hash");
    if (!statement) return statement.error();
    std::vector<ReleaseRecord> releases;
    int rc;
    while ((rc = sqlite3_step(statement->get())) == SQLITE_ROW) {
      ReleaseRecord release;
      release.binary_hash = column_text(statement->get(), 0);
      release.version = column_text(statement->get(), 1);
      release.note = column_text(statement->get(), 2);
      release.created_at = sqlite3_column_int64(statement->get(), 3);
      releases.push_back(std::move(release));
    }
    if (rc != SQLITE_DONE) return failure("list_releases");
    return releases;
  }

  Status set_catalog_model(const CatalogModel& model) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "INSERT INTO model_catalog (id, merkle_root, size_bytes, created_at) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(id) DO UPDATE SET merkle_root = excluded.merkle_root, size_bytes = excluded.size_bytes, "
        "created_at = excluded.created_at");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, model.id);
    bind_text(statement->get(), 2, model.merkle_root);
    sqlite3_bind_int64(statement->get(), 3, static_cast<int64_t>(model.size_bytes));
    sqlite3_bind_int64(statement->get(), 4, model.created_at);
    return step_done(statement->get());
  }

  Result<std::vector<CatalogModel>> catalog_models() override {
    std::lock_guard lock(mutex_);
    auto statement = prepare("SELECT id, merkle_root, size_bytes, created_at FROM model_catalog ORDER BY id");
    if (!statement) return statement.error();
    std::vector<CatalogModel> models;
    int rc;
    while ((rc = sqlite3_step(statement->get())) == SQLITE_ROW) {
      CatalogModel model;
      model.id = column_text(statement->get(), 0);
      model.merkle_root = column_text(statement->get(), 1);
      model.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(statement->get(), 2));
      model.created_at = sqlite3_column_int64(statement->get(), 3);
      models.push_back(std::move(model));
    }
    if (rc != SQLITE_DONE) return failure("catalog_models");
    return models;
  }

  Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view public_key) override {
    std::lock_guard lock(mutex_);
    auto statement = prepare(
        "SELECT public_key, key_backend, first_seen, last_seen, replaced_by FROM provider_keys WHERE public_key = ?1");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, public_key);
    const int rc = sqlite3_step(statement->get());
    if (rc == SQLITE_DONE) return std::optional<ProviderKeyRecord>{};
    if (rc != SQLITE_ROW) return failure("find_provider_key");
    ProviderKeyRecord record;
    record.public_key = column_text(statement->get(), 0);
    record.key_backend = column_text(statement->get(), 1);
    record.first_seen = sqlite3_column_int64(statement->get(), 2);
    record.last_seen = sqlite3_column_int64(statement->get(), 3);
    record.replaced_by = column_text(statement->get(), 4);
    return std::optional<ProviderKeyRecord>{std::move(record)};
  }

  Status record_provider_key(std::string_view public_key, std::string_view key_backend,
                             std::string_view replaces) override {
    std::lock_guard lock(mutex_);
    auto transaction = begin();
    if (!transaction) return transaction.error();
    DARKBLOOM_RETURN_IF_ERROR(upsert_key(public_key, key_backend));
    if (!replaces.empty()) {
      // The old key is retired: a rotation is one-way, so it can never register again. Only
      // once, and only to one new key; a key this store never saw leaves no row.
      auto statement = prepare(
          "UPDATE provider_keys SET replaced_by = ?2 WHERE public_key = ?1 "
          "AND (replaced_by IS NULL OR replaced_by = '' OR replaced_by = ?2)");
      if (!statement) return statement.error();
      bind_text(statement->get(), 1, replaces);
      bind_text(statement->get(), 2, public_key);
      DARKBLOOM_RETURN_IF_ERROR(step_done(statement->get()));
      if (sqlite3_changes(db_.get()) == 0) {
        auto known = prepare("SELECT 1 FROM provider_keys WHERE public_key = ?1");
        if (!known) return known.error();
        bind_text(known->get(), 1, replaces);
        if (sqlite3_step(known->get()) == SQLITE_ROW) return rotated_elsewhere();
      }
    }
    return transaction->commit();
  }

  Status expire_provider_keys(int64_t unix_seconds) override {
    std::lock_guard lock(mutex_);
    auto statement =
        prepare("DELETE FROM provider_keys WHERE (replaced_by IS NULL OR replaced_by = '') AND last_seen < ?1");
    if (!statement) return statement.error();
    sqlite3_bind_int64(statement->get(), 1, unix_seconds);
    return step_done(statement->get());
  }

 private:
  // Rows of (request_id, account_id, kind, amount, created_at).
  Result<std::vector<LedgerEntry>> read_entries(sqlite3_stmt* statement, std::string_view what) {
    std::vector<LedgerEntry> entries;
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
      LedgerEntry entry;
      entry.request_id = column_text(statement, 0);
      entry.account_id = column_text(statement, 1);
      auto kind = parse_ledger_kind(column_text(statement, 2));
      if (!kind) return make_error(Errc::bad_format, "ledger row with unknown kind " + column_text(statement, 2));
      entry.kind = *kind;
      entry.amount = sqlite3_column_int64(statement, 3);
      entry.created_at = sqlite3_column_int64(statement, 4);
      entries.push_back(std::move(entry));
    }
    if (rc != SQLITE_DONE) return failure(what);
    return entries;
  }

  Status set_referrer_locked(std::string_view account_id, std::string_view referrer_id) {
    for (std::string_view id : {account_id, referrer_id}) {
      auto exists = prepare("SELECT referrer FROM accounts WHERE id = ?1");
      if (!exists) return exists.error();
      bind_text(exists->get(), 1, id);
      const int rc = sqlite3_step(exists->get());
      if (rc == SQLITE_DONE) return make_error(Errc::not_found, fmt::format("no account {}", id));
      if (rc != SQLITE_ROW) return failure("set_referrer");
      if (id == account_id && sqlite3_column_type(exists->get(), 0) != SQLITE_NULL) {
        return make_error(Errc::already_exists, fmt::format("account {} already has a referrer", id));
      }
    }
    auto statement = prepare("UPDATE accounts SET referrer = ?2 WHERE id = ?1");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, account_id);
    bind_text(statement->get(), 2, referrer_id);
    return step_done(statement->get());
  }

  // A ledger statement's step, with constraint failures named for the entry.
  Status step_entry(sqlite3_stmt* statement, const LedgerEntry& entry) {
    if (sqlite3_step(statement) == SQLITE_DONE) return {};
    switch (sqlite3_extended_errcode(db_.get())) {
      case SQLITE_CONSTRAINT_FOREIGNKEY:
        return make_error(Errc::not_found, fmt::format("no account {}", entry.account_id));
      case SQLITE_CONSTRAINT_CHECK:
        return balance_refused(entry);
      default:
        return failure("apply");
    }
  }

  Result<SqliteTransaction> begin() { return SqliteTransaction::begin(SqliteSession{db_.get()}, "BEGIN IMMEDIATE"); }

  Error failure(std::string_view what) const {
    return make_error(Errc::io_error, fmt::format("database error in {}: {}", what, sqlite3_errmsg(db_.get())));
  }

  Status exec(const std::string& sql) { return exec_sql(db_.get(), sql); }

  Result<Statement> prepare(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_.get(), sql, -1, &raw, nullptr) != SQLITE_OK) return failure("prepare");
    return Statement(raw);
  }

  static void bind_text(sqlite3_stmt* statement, int index, std::string_view text) {
    sqlite3_bind_text(statement, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }

  static std::string column_text(sqlite3_stmt* statement, int column) {
    const auto* text = sqlite3_column_text(statement, column);
    return text ? std::string(reinterpret_cast<const char*>(text),
                              static_cast<size_t>(sqlite3_column_bytes(statement, column)))
                : std::string();
  }

  Status upsert_key(std::string_view public_key, std::string_view key_backend) {
    auto statement = prepare(
        "INSERT INTO provider_keys (public_key, key_backend, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3) "
        "ON CONFLICT(public_key) DO UPDATE SET last_seen = excluded.last_seen, key_backend = excluded.key_backend");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, public_key);
    bind_text(statement->get(), 2, key_backend);
    sqlite3_bind_int64(statement->get(), 3, unix_seconds_now());
    return step_done(statement->get());
  }

  Status step_done(sqlite3_stmt* statement) {
    if (sqlite3_step(statement) != SQLITE_DONE) return failure("write");
    return {};
  }

  Database db_;
  std::string path_;
  std::map<std::string, int> claims_;  // coordinator id -> locked file descriptor
  std::mutex mutex_;                   // one transaction at a time on the connection
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  Database db(raw);
  if (rc != SQLITE_OK) {
    return make_error(Errc::io_error,
                      fmt::format("{}: cannot open database: {}", path, raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_busy_timeout(db.get(), 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
    if (auto done = exec_sql(db.get(), pragma); !done) return done.error().with_context(path + ": " + pragma);
  }
  auto store = std::make_unique<SqliteStore>(std::move(db), path);
  DARKBLOOM_RETURN_IF_ERROR(store->migrate());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace darkbloom::coordinator
