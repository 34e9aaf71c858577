// POST /v1/chat/completions and /v1/completions on the coordinator: authenticate, parse,
// reserve the worst case, hand the request to the dispatcher (route, queue, seal, dispatch,
// retries), then relay the provider's chunks to the client as SSE or as one JSON response, and
// settle what was delivered. The provider never sees the client; the client never sees a
// provider that failed before answering.
#pragma once

#include <memory>

#include "coordinator/api/api_context.h"
#include "coordinator/api/pending_request.h"
#include "coordinator/api/request_dispatcher.h"
#include "proto/openai.h"

namespace darkbloom::coordinator {

class CompletionHandler {
 public:
  CompletionHandler(ApiContext& context, RequestDispatcher& dispatcher, ProviderGateway& gateway)
      : context_(context), dispatcher_(dispatcher), gateway_(gateway) {}

  // Adds both completion routes.
  void add_routes(http::Router& routes);
  net::awaitable<void> handle(http::Exchange& exchange, proto::Endpoint endpoint);
  // The server's header check, for requests with a body still to read: a completion request
  // without a valid API key, or an admin request without the admin token, is refused before its
  // body (up to --max-body-bytes) is read.
  net::awaitable<std::optional<Refusal>> check_before_body(const http::Request& request, const std::string& address);

 private:
  // Each step answers the client itself when it fails and then returns false.
  net::awaitable<bool> authenticate_and_parse(http::Exchange& exchange, proto::Endpoint endpoint,
                                              PendingRequest& request);
  // The account's rate and in-flight limits: 429 with Retry-After and x-ratelimit-* when over.
  net::awaitable<bool> admit(http::Exchange& exchange, PendingRequest& request, RateLimiter::Ticket& in_flight);
  net::awaitable<bool> reserve_credit(http::Exchange& exchange, PendingRequest& request);
  net::awaitable<bool> check_model_served(http::Exchange& exchange, const PendingRequest& request);

  net::awaitable<void> relay(http::Exchange& exchange, PendingRequest& request, FirstAnswer answer);
  net::awaitable<void> relay_whole(http::Exchange& exchange, PendingRequest& request, FirstAnswer& answer);
  net::awaitable<void> relay_stream(http::Exchange& exchange, PendingRequest& request, FirstAnswer& answer);
  // The next event of the answer; an answer silent for the inference timeout ends as Gone.
  net::awaitable<ProviderEvent> next_event(FirstAnswer& answer);

  Headers response_headers(const PendingRequest& request, const ProviderSession& provider) const;
  // Charges what the provider reports (or, after a failure, the chunks delivered) and pays it.
  void settle(PendingRequest& request, const ProviderSession& provider, int64_t prompt_tokens,
              int64_t completion_tokens);
  void cancel_at_provider(const FirstAnswer& answer);

  ApiContext& context_;
  RequestDispatcher& dispatcher_;
  ProviderGateway& gateway_;
};

}  // namespace darkbloom::coordinator
