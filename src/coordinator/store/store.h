// The coordinator's durable state behind one interface: accounts and API keys, the release
// allow-list and the provider keys seen (the ledger joins with the billing work). SQLite is the
// embedded default; a PostgreSQL implementation will pass the same tests.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace darkbloom::coordinator {

struct ApiKeyRecord {
  std::string key_hash;    // hex SHA-256 of the whole key; the key itself is never stored
  std::string key_prefix;  // first characters, to recognise a key in listings
  std::string account_id;
  int64_t created_at = 0;  // unix seconds
};

// A provider binary the operator approved: its hash joins the allow-list.
struct ReleaseRecord {
  std::string binary_hash;  // hex SHA-256
  std::string version;
  std::string note;
  int64_t created_at = 0;
};

// An identity key a provider has registered with.
struct ProviderKeyRecord {
  std::string public_key;  // base64 P-256 X ‖ Y
  std::string key_backend;
  int64_t first_seen = 0;
  int64_t last_seen = 0;
  std::string replaced_by;  // set once the key was rotated out; it may not register again
};

class Store {
 public:
  virtual ~Store() = default;

  // A new account; returns its id ("acct_...").
  virtual Result<std::string> create_account(std::string_view name) = 0;
  virtual Status add_api_key(const ApiKeyRecord& key) = 0;
  virtual Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view key_hash) = 0;

  // The release allow-list (empty: no list, any binary).
  virtual Status add_release(const ReleaseRecord& release) = 0;
  virtual Result<std::vector<ReleaseRecord>> list_releases() = 0;

  virtual Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view public_key) = 0;
  // Records that `public_key` registered; with `replaces`, also retires that old key.
  virtual Status record_provider_key(std::string_view public_key, std::string_view key_backend,
                                     std::string_view replaces) = 0;
};

// Opens (creating if needed) a SQLite database in WAL mode and applies pending migrations.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);

}  // namespace darkbloom::coordinator
