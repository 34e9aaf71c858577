// API keys: "db-" + 64 hex characters, shown once at creation. The store keeps only a SHA-256
// hash and a short prefix. Verified keys are cached in memory, and so are unknown ones for a
// short while (bounded), so a request costs no database round trip and a flood of random
// well-formed keys costs at most one lookup per key per TTL. The caches belong to the network
// thread; the lookups that miss them run on the StoreWorker.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/random.h"
#include "coordinator/store/store.h"
#include "coordinator/store/store_worker.h"
#include "net/clock.h"
#include "net/wait_list.h"

namespace darkbloom::coordinator {

struct CreatedKey {
  std::string api_key;  // the secret; never stored
  std::string account_id;
};

class ApiKeys {
 public:
  // How long a key the store does not know stays known as unknown, and how many are kept. A key
  // created on another coordinator sharing the database works here at most this long after.
  static constexpr std::chrono::seconds kUnknownTtl{30};
  static constexpr size_t kMaxUnknown = 10'000;

  ApiKeys(Store& store, net::Clock& clock, RandomSource& random) : store_(store), clock_(clock), random_(random) {}

  // A new account with its first key, in the store only (safe on the StoreWorker); then
  // remember() it on the network thread.
  Result<CreatedKey> make_account_key(std::string_view account_name);
  void remember(const CreatedKey& created);
  // Both at once (tests, tools).
  Result<CreatedKey> create_account_key(std::string_view account_name);

  // The account of an "Authorization: Bearer <key>" header; nullopt for a missing, malformed or
  // unknown key. A database that fails is an error (Errc::unavailable when it is not answering).
  net::awaitable<Result<std::optional<std::string>>> authenticate(std::string_view authorization_header,
                                                                  StoreWorker& worker);
  // For a bare key (a provider's account token).
  net::awaitable<Result<std::optional<std::string>>> authenticate_key(std::string key, StoreWorker& worker);

  size_t unknown_cached() const { return unknown_.size(); }

 private:
  struct Cached {
    bool known = false;  // false: nothing cached, look it up
    std::optional<std::string> account;
  };
  // What the caches say of a key's hash.
  Cached cached(const std::string& hash);
  // Stores what the store said of a hash in the caches.
  std::optional<std::string> learn(const std::string& hash, const std::optional<ApiKeyRecord>& record);

  // A lookup in the store on its way, and the requests with the same key waiting for it.
  struct Lookup {
    explicit Lookup(net::Clock& clock) : waiters(clock) {}
    std::optional<Result<std::optional<std::string>>> result;
    net::WaitList waiters;  // woken when the result is in
  };

  Store& store_;
  net::Clock& clock_;
  RandomSource& random_;                                       // must be a CSPRNG in production: it makes the secrets
  std::unordered_map<std::string, std::string> verified_;      // key hash → account id
  std::unordered_map<std::string, net::Clock::Time> unknown_;  // key hash → until when it is known unknown
  std::unordered_map<std::string, std::shared_ptr<Lookup>> lookups_;  // key hash → lookup in flight
};

// The token of "Bearer <token>", or "" when the header has another shape.
std::string_view bearer_token(std::string_view authorization_header);

}  // namespace darkbloom::coordinator
