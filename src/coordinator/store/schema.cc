#include "coordinator/store/schema.h"

#include <fmt/format.h>

#include <iterator>
#include <string_view>

namespace darkbloom::coordinator {
namespace {

// Versioned schema: entry i brings the database from version i to i + 1. Append, never edit:
// databases in use are at some version and get only the entries after it.
//
// Written for both dialects, with placeholders (fmt syntax, so a literal brace is written twice):
//   {int64}   a 64-bit integer: SQLite's INTEGER holds 64 bits, PostgreSQL's only 32 (BIGINT there).
//   {row_id}  an integer primary key the database assigns in insertion order: SQLite's
//             "INTEGER PRIMARY KEY" (exactly that spelling makes it the rowid), PostgreSQL's BIGSERIAL.
constexpr std::string_view kMigrations[] = {
    R"sql(
      CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at {int64} NOT NULL
      );
      CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        key_prefix TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        created_at {int64} NOT NULL
      );
      CREATE INDEX api_keys_account ON api_keys(account_id);
    )sql",
    R"sql(
      CREATE TABLE releases (
        binary_hash TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at {int64} NOT NULL
      );
      CREATE TABLE provider_keys (
        public_key TEXT PRIMARY KEY,
        key_backend TEXT NOT NULL,
        first_seen {int64} NOT NULL,
        last_seen {int64} NOT NULL,
        replaced_by TEXT
      );
    )sql",
    R"sql(
      ALTER TABLE accounts ADD COLUMN balance {int64} NOT NULL DEFAULT 0
        CHECK (balance BETWEEN 0 AND 1000000000000000000);
      ALTER TABLE accounts ADD COLUMN referrer TEXT REFERENCES accounts(id);
      ALTER TABLE accounts ADD COLUMN owner TEXT REFERENCES accounts(id);
      CREATE TABLE ledger (
        id {row_id},
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        amount {int64} NOT NULL,
        created_at {int64} NOT NULL,
        UNIQUE (request_id, account_id, kind)
      );
      CREATE INDEX ledger_account ON ledger(account_id, id);
      CREATE INDEX accounts_owner ON accounts(owner);
      CREATE TABLE prices (
        model TEXT PRIMARY KEY,
        input_per_million {int64} NOT NULL CHECK (input_per_million >= 0),
        output_per_million {int64} NOT NULL CHECK (output_per_million >= 0)
      );
    )sql",
    R"sql(
      CREATE TABLE account_limits (
        account_id TEXT PRIMARY KEY REFERENCES accounts(id),
        requests_per_second {int64} NOT NULL CHECK (requests_per_second >= 0),
        burst {int64} NOT NULL CHECK (burst >= 0),
        max_concurrent {int64} NOT NULL CHECK (max_concurrent >= 0)
      );
    )sql",
    R"sql(
      CREATE TABLE model_catalog (
        id TEXT PRIMARY KEY,
        merkle_root TEXT NOT NULL,
        size_bytes {int64} NOT NULL CHECK (size_bytes >= 0),
        created_at {int64} NOT NULL
      );
    )sql",
};

std::string in_dialect(std::string_view sql, SqlDialect dialect) {
  const bool sqlite = dialect == SqlDialect::sqlite;
  return fmt::format(fmt::runtime(sql), fmt::arg("int64", sqlite ? "INTEGER" : "BIGINT"),
                     fmt::arg("row_id", sqlite ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY"));
}

}  // namespace

std::vector<std::string> schema_migrations(SqlDialect dialect) {
  std::vector<std::string> migrations;
  for (std::string_view migration : kMigrations) migrations.push_back(in_dialect(migration, dialect));
  return migrations;
}

int64_t latest_schema_version() {
  return static_cast<int64_t>(std::size(kMigrations));
}

std::string create_schema_version_table(SqlDialect dialect) {
  return in_dialect("CREATE TABLE IF NOT EXISTS schema_version (version {int64} NOT NULL)", dialect);
}

std::string set_schema_version(int64_t from, int64_t to) {
  return from == 0 ? fmt::format("INSERT INTO schema_version (version) VALUES ({})", to)
                   : fmt::format("UPDATE schema_version SET version = {}", to);
}

Status check_schema_version(int64_t version) {
  if (version <= latest_schema_version()) return {};
  return make_error(Errc::unsupported,
                    fmt::format("the database has schema version {}, newer than this coordinator's {}", version,
                                latest_schema_version()));
}

}  // namespace darkbloom::coordinator
