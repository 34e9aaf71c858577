// The coordinator's durable state behind one interface: accounts and API keys today (the
// ledger joins with the billing work). SQLite is the embedded default; a PostgreSQL
// implementation will pass the same tests.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace darkbloom::coordinator {

struct ApiKeyRecord {
  std::string key_hash;    // hex SHA-256 of the whole key; the key itself is never stored
  std::string key_prefix;  // first characters, to recognise a key in listings
  std::string account_id;
  int64_t created_at = 0;  // unix seconds
};

class Store {
 public:
  virtual ~Store() = default;

  // A new account; returns its id ("acct_...").
  virtual Result<std::string> create_account(std::string_view name) = 0;
  virtual Status add_api_key(const ApiKeyRecord& key) = 0;
  virtual Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view key_hash) = 0;
};

// Opens (creating if needed) a SQLite database in WAL mode and applies pending migrations.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);

}  // namespace darkbloom::coordinator
