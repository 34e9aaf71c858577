#include <fmt/format.h>
#include <sqlite3.h>

#include <chrono>

#include "base/encoding.h"
#include "coordinator/store/store.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

// Versioned schema: entry i brings the database from version i to i + 1. Append, never edit.
constexpr const char* kMigrations[] = {
    R"sql(
      CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        key_prefix TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL
      );
      CREATE INDEX api_keys_account ON api_keys(account_id);
    )sql",
    R"sql(
      CREATE TABLE releases (
        binary_hash TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE provider_keys (
        public_key TEXT PRIMARY KEY,
        key_backend TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        replaced_by TEXT
      );
    )sql",
};

struct DatabaseCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
using Database = std::unique_ptr<sqlite3, DatabaseCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(Database db) : db_(std::move(db)) {}

  Status migrate() {
    DARKBLOOM_RETURN_IF_ERROR(exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
    int64_t version = 0;
    {
      auto statement = prepare("SELECT version FROM schema_version");
      if (!statement) return statement.error();
      if (sqlite3_step(statement->get()) == SQLITE_ROW) version = sqlite3_column_int64(statement->get(), 0);
    }
    const int64_t latest = static_cast<int64_t>(std::size(kMigrations));
    if (version > latest) {
      return make_error(
          Errc::unsupported,
          fmt::format("the database has schema version {}, newer than this coordinator's {}", version, latest));
    }
    for (int64_t v = version; v < latest; ++v) {
      DARKBLOOM_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE"));
      Status step = exec(kMigrations[v]);
      if (step)
        step = exec(v == 0 ? "INSERT INTO schema_version (version) VALUES (1)"
                           : fmt::format("UPDATE schema_version SET version = {}", v + 1));
      if (!step) {
        (void)exec("ROLLBACK");
        return step.error();
      }
      DARKBLOOM_RETURN_IF_ERROR(exec("COMMIT"));
    }
    return {};
  }

  Result<std::string> create_account(std::string_view name) override {
    const std::string id = "acct_" + hex_encode(crypto::random_bytes(12));
    auto statement = prepare("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)");
    if (!statement) return statement.error();
    bind_text(statement->get(), 1, id);
    bind_text(statement->get(), 2, name);
    sqlite3_bind_int64(statement->get(), 3, unix_now());
    DARKBLOOM_RETURN_IF_ERROR(step_done(statement->get()));
    return id;
  }

  Status add_api_key(const ApiKeyRecord& key) override {
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

  Status add_release(const ReleaseRecord& release) override {
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

  Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view public_key) override {
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
    DARKBLOOM_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE"));
    Status done = upsert_key(public_key, key_backend);
    if (done && !replaces.empty()) {
      // The old key is retired: a rotation is one-way, so it can never register again.
      auto statement = prepare(
          "INSERT INTO provider_keys (public_key, key_backend, first_seen, last_seen, replaced_by) "
          "VALUES (?1, '', ?3, ?3, ?2) ON CONFLICT(public_key) DO UPDATE SET replaced_by = excluded.replaced_by");
      if (!statement) {
        done = statement.error();
      } else {
        bind_text(statement->get(), 1, replaces);
        bind_text(statement->get(), 2, public_key);
        sqlite3_bind_int64(statement->get(), 3, unix_now());
        done = step_done(statement->get());
      }
    }
    if (!done) {
      (void)exec("ROLLBACK");
      return done;
    }
    return exec("COMMIT");
  }

 private:
  Error failure(std::string_view what) const {
    return make_error(Errc::io_error, fmt::format("database error in {}: {}", what, sqlite3_errmsg(db_.get())));
  }

  Status exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      std::string text = message ? message : "unknown error";
      sqlite3_free(message);
      return make_error(Errc::io_error, "database error: " + text);
    }
    return {};
  }

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
    sqlite3_bind_int64(statement->get(), 3, unix_now());
    return step_done(statement->get());
  }

  Status step_done(sqlite3_stmt* statement) {
    if (sqlite3_step(statement) != SQLITE_DONE) return failure("write");
    return {};
  }

  Database db_;
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
    char* message = nullptr;
    if (sqlite3_exec(db.get(), pragma, nullptr, nullptr, &message) != SQLITE_OK) {
      std::string text = message ? message : "unknown error";
      sqlite3_free(message);
      return make_error(Errc::io_error, fmt::format("{}: {}: {}", path, pragma, text));
    }
  }
  auto store = std::make_unique<SqliteStore>(std::move(db));
  DARKBLOOM_RETURN_IF_ERROR(store->migrate());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace darkbloom::coordinator
