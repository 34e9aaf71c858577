// API keys: "db-" + 64 hex characters, shown once at creation. The store keeps only a SHA-256
// hash and a short prefix; verified keys are cached in memory so a request costs no database
// round trip.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/random.h"
#include "coordinator/store/store.h"
#include "net/clock.h"

namespace darkbloom::coordinator {

struct CreatedKey {
  std::string api_key;  // the secret; never stored
  std::string account_id;
};

class ApiKeys {
 public:
  ApiKeys(Store& store, net::Clock& clock, RandomSource& random) : store_(store), clock_(clock), random_(random) {}

  // A new account with its first key.
  Result<CreatedKey> create_account_key(std::string_view account_name);
  // The account of an "Authorization: Bearer <key>" header; nullopt for a missing, malformed or
  // unknown key. Database errors are errors.
  Result<std::optional<std::string>> authenticate(std::string_view authorization_header);
  // The same for a bare key (a provider's account token).
  Result<std::optional<std::string>> authenticate_key(std::string_view key);

 private:
  Store& store_;
  net::Clock& clock_;
  RandomSource& random_;                                   // must be a CSPRNG in production: it makes the secrets
  std::unordered_map<std::string, std::string> verified_;  // key hash → account id
};

// The token of "Bearer <token>", or "" when the header has another shape.
std::string_view bearer_token(std::string_view authorization_header);

}  // namespace darkbloom::coordinator
