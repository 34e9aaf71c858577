// The providers connected to this coordinator, by session id, and the questions routing asks of
// them (who serves a model, who is trusted enough). Sessions are created here and changed only by
// the gateway (gateway/provider_session.h). Runs on the network thread: no locks.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/random.h"
#include "coordinator/gateway/provider_session.h"
#include "net/clock.h"

namespace darkbloom::coordinator {

class ProviderRegistry {
 public:
  ProviderRegistry(net::Clock& clock, RandomSource& random) : clock_(clock), random_(random) {}

  // A new session for a provider that just connected over `link`.
  std::shared_ptr<ProviderSession> add(std::shared_ptr<ProviderLink> link);
  // `was_serving`: it was routable, so its models count as served recently.
  void remove(const std::string& id, bool was_serving = false);
  std::shared_ptr<ProviderSession> find(const std::string& id) const;

  // Active providers serving `model` that are routable at `min_trust` now.
  std::vector<std::shared_ptr<ProviderSession>> serving(const std::string& model, TrustLevel min_trust) const;
  // Active providers serving `model` at or above `min_trust`, routable now or once their next
  // challenge passes (worth waiting for).
  std::vector<std::shared_ptr<ProviderSession>> trusted(const std::string& model, TrustLevel min_trust) const;
  // True when any active provider, trusted or not, serves `model`.
  bool any_serving(const std::string& model) const;
  // True when a routable provider of it left within kRecentlyServed: its providers are likely
  // reconnecting, so a request is told to retry (503), not that the model does not exist (404).
  bool served_recently(const std::string& model) const;
  static constexpr std::chrono::minutes kRecentlyServed{10};
  static constexpr size_t kMaxRememberedModels = 10'000;
  std::vector<std::shared_ptr<ProviderSession>> all() const;
  size_t size() const { return sessions_.size(); }
  size_t registered_count() const;
  // Active providers routable at `min_trust` now.
  size_t routable_count(TrustLevel min_trust) const;
  // Sessions that serve nothing now: not registered yet, or not routable at `min_trust`.
  size_t idle_count(TrustLevel min_trust) const;
  // Sessions whose connection comes from `address` (as http::address_key() names it).
  size_t count_from(std::string_view address) const;

 private:
  net::Clock& clock_;
  RandomSource& random_;
  std::unordered_map<std::string, std::shared_ptr<ProviderSession>> sessions_;
  std::unordered_map<std::string, net::Clock::Time> last_served_;  // model -> when its last provider left
};

}  // namespace darkbloom::coordinator
