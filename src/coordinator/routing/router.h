// Chooses the provider for a request and queues requests no provider can take yet. Among the
// eligible providers (serving the model, trusted enough, below their concurrency, not excluded)
// that read frames as large as the sealed request) it picks the lowest expected completion time: the tokens already
// queued there plus this request's, at the provider's observed decode rate (its own claim, capped, until it has
// answered), plus a penalty for memory pressure. Near ties go to the provider with fewer requests in flight, then to
// chance. The queue is first in, first out: while anyone waits for a model, new requests for it wait too.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "base/random.h"
#include "coordinator/registry/provider_registry.h"
#include "net/clock.h"

namespace darkbloom::coordinator {

struct RoutingOptions {
  TrustLevel min_trust = TrustLevel::none;
  size_t queue_depth = 10;                       // per model
  std::chrono::milliseconds queue_wait{120000};  // longest wait in the queue
};

enum class QueueOutcome { ready, full, expired, abandoned };

// What a request needs of a provider besides serving its model.
struct ProviderNeeds {
  size_t frame_bytes = 0;  // it reads frames this large (the sealed request's)
  uint32_t features = 0;   // proto::kFeatureBit*: it announced these (structured output, logprobs)
  int sequences = 1;       // concurrent sequences it takes (its n choices)
  // A blind request: only the providers its copies were sealed for, each with a verified
  // identity key (to check the usage it signs). Null: any provider.
  const std::set<std::string>* only = nullptr;
  bool met_by(const ProviderSession& session) const {
    return session.max_frame_bytes() >= frame_bytes && (session.features() & features) == features &&
           (only == nullptr || (only->count(session.id()) != 0 && !session.trust_state().public_key.empty()));
  }
};

class Router {
 public:
  Router(net::Executor executor, net::Clock& clock, RandomSource& random, ProviderRegistry& registry,
         RoutingOptions options);

  // The best provider for the request now, or nullptr. Providers that do not meet `needs` (read
  // no frame as large as the sealed request, lack a feature it needs) are never chosen.
  std::shared_ptr<ProviderSession> pick(const std::string& model, int max_tokens, const std::set<std::string>& excluded,
                                        const ProviderNeeds& needs = {});
  // True when some registered provider trusted enough serves the model (busy, or waiting for
  // its next challenge, or not).
  bool model_known(const std::string& model) const;
  // True when some registered provider serves the model, trusted or not.
  bool model_served(const std::string& model) const { return registry_.any_serving(model); }
  // True when some such provider of the model is not in `excluded` and meets `needs`.
  bool has_candidates(const std::string& model, const std::set<std::string>& excluded,
                      const ProviderNeeds& needs = {}) const;
  // True when a provider of the model not in `excluded` has a free slot now, whatever frames it reads.
  bool has_free_provider(const std::string& model, const std::set<std::string>& excluded) const;
  // The largest frame some provider of the model trusted enough reads; 0 when there is none.
  size_t largest_frame(const std::string& model) const;

  struct Waiter {
    Waiter(net::Clock& clock, net::Executor executor, net::Clock::Time deadline)
        : timer(clock, std::move(executor)), deadline(deadline) {}
    net::Timer timer;
    net::Clock::Time deadline;  // fixed for the whole wait, across re-queues
    bool woken = false;
    bool abandoned = false;
    // The capacity event (Router::capacity_generation) whose wake-up this waiter passed on, having
    // no use for what was freed: it does not pass the same event again, so two waiters that
    // cannot use a free provider do not wake each other in turn.
    uint64_t passed_generation = UINT64_MAX;
  };
  std::shared_ptr<Waiter> make_waiter();

  // Waits in the model's queue until capacity may be free (ready), the queue is full, the
  // waiter's deadline passes, or `abandon` fires (client gone). `front` puts back a waiter that
  // was woken but lost the slot, ahead of later arrivals.
  net::awaitable<QueueOutcome> wait_for_capacity(const std::string& model, std::shared_ptr<Waiter> waiter,
                                                 bool front = false);
  void abandon(const std::shared_ptr<Waiter>& waiter);

  // Capacity may have freed up for a model: wake the first `slots` waiters of its queue.
  void capacity_changed(const std::string& model, int slots = 1);
  // A woken waiter that cannot use the freed capacity (its provider lacks a feature or reads too
  // small frames) hands its wake-up to the next waiter that has not passed this event on yet.
  void pass_wake_up(const std::string& model, Waiter& passing);
  // Every waiter of the model re-checks (a provider left: some may have nobody left to wait for).
  void wake_all(const std::string& model);

  // The decode rate a provider's own claim is believed at (capped; a default when it claims
  // none). What it is observed to do replaces it, up to twice this.
  static double claimed_decode_rate(const ProviderSession& session);

  size_t queued(const std::string& model) const;
  size_t queued_total() const;
  const RoutingOptions& options() const { return options_; }

 private:
  double expected_ms(const ProviderSession& session, int max_tokens) const;

  net::Executor executor_;
  net::Clock& clock_;
  RandomSource& random_;
  ProviderRegistry& registry_;
  RoutingOptions options_;
  std::unordered_map<std::string, std::deque<std::shared_ptr<Waiter>>> queues_;
  std::unordered_map<std::string, uint64_t> capacity_generation_;  // counts capacity_changed per model
};

}  // namespace darkbloom::coordinator
