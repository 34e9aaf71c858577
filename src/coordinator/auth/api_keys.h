// API keys: "db-" + 64 hex characters, shown once at creation. The store keeps only a SHA-256
// hash and a short prefix; verified keys are cached in memory so a request costs no database
// round trip.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "coordinator/store/store.h"

namespace darkbloom::coordinator {

struct CreatedKey {
  std::string api_key;  // the secret; never stored
  std::string account_id;
};

class ApiKeys {
 public:
  explicit ApiKeys(Store& store) : store_(store) {}

  // A new account with its first key.
  Result<CreatedKey> create_account_key(std::string_view account_name);
  // The account of an "Authorization: Bearer <key>" header; nullopt for a missing, malformed or
  // unknown key. Database errors are errors.
  Result<std::optional<std::string>> authenticate(std::string_view authorization_header);

 private:
  Store& store_;
  std::unordered_map<std::string, std::string> verified_;  // key hash → account id
};

// The token of "Bearer <token>", or "" when the header has another shape.
std::string_view bearer_token(std::string_view authorization_header);

}  // namespace darkbloom::coordinator
