// Finds the provider that answers a request, without any HTTP: picks the best trusted provider
// (or waits in the model's queue), seals the body to it under a new attempt id and key pair,
// dispatches, and waits for the first chunk. Until that chunk nothing reaches the client, so a
// provider that fails, leaves or stays silent is excluded and the next one is tried, up to
// max_attempts. The first chunk commits the request to its provider.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include "base/random.h"
#include "coordinator/api/http_replies.h"
#include "coordinator/api/pending_request.h"
#include "coordinator/config.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/routing/router.h"
#include "net/clock.h"
#include "net/offload.h"

namespace darkbloom::coordinator {

// A provider started answering: the relay takes it from here.
struct FirstAnswer {
  std::shared_ptr<ProviderSession> provider;
  std::shared_ptr<Attempt> attempt;
  std::optional<ProviderEvent> first_event;  // Text or Complete, until the relay takes it
};
// No provider answered; the client gets this error (unless it left).
struct NoAnswer {
  proto::ApiError error;
  Headers headers;
};
using DispatchOutcome = std::variant<FirstAnswer, NoAnswer>;

class RequestDispatcher {
 public:
  struct Dependencies {
    net::Executor executor;
    const CoordinatorConfig& config;
    net::Clock& clock;
    RandomSource& random;
    Router& router;
    ProviderGateway& gateway;
    net::Offload& offload;  // seals large bodies (kOffloadBodyBytes and up)
  };
  explicit RequestDispatcher(Dependencies dependencies);

  net::awaitable<DispatchOutcome> dispatch(std::shared_ptr<PendingRequest> request);
  // The client left: the request leaves the queue, and its attempt (if any) hears of it.
  void client_gone(PendingRequest& request);

 private:
  struct Pick {
    std::shared_ptr<ProviderSession> provider;  // null: none (see `refusal`)
    std::optional<NoAnswer> refusal;            // the queue was full or the wait expired
  };
  // The best provider not in `excluded`, waiting in the model's queue while all are busy.
  net::awaitable<Pick> pick_provider(PendingRequest& request, const std::set<std::string>& excluded);
  // What a provider must offer to take the request: its frame size and the features it uses.
  static ProviderNeeds needs_of(const PendingRequest& request);
  std::shared_ptr<ProviderSession> timed_pick(PendingRequest& request, const std::set<std::string>& excluded);

  // A new attempt for `provider`: its ids, event queue and channel (a key pair made for this
  // attempt alone), and its message without the ciphertext yet.
  struct NewAttempt {
    std::shared_ptr<Attempt> attempt;
    proto::InferenceRequest message;
  };
  Result<NewAttempt> new_attempt(const PendingRequest& request, const ProviderSession& provider);
  // The request's plaintext sealed on the attempt's channel, as the inference_request frame; on
  // the offload workers for a large body. nullopt: the coordinator is stopping.
  net::awaitable<std::optional<std::string>> seal_frame(const PendingRequest& request, const NewAttempt& fresh);

  // Waits for the attempt's first chunk. nullopt: it failed in a way another provider may not
  // (`last_error` says how); a NoAnswer: stop trying.
  struct AttemptEnd {
    std::optional<FirstAnswer> answer;
    std::optional<NoAnswer> final_error;  // not worth retrying elsewhere
    bool client_left = false;
  };
  net::awaitable<AttemptEnd> await_first_chunk(PendingRequest& request, std::shared_ptr<ProviderSession> provider,
                                               std::shared_ptr<Attempt> attempt, proto::ApiError& last_error);

  net::Executor executor_;
  const CoordinatorConfig& config_;
  net::Clock& clock_;
  RandomSource& random_;
  Router& router_;
  ProviderGateway& gateway_;
  net::Offload& offload_;
};

}  // namespace darkbloom::coordinator
