// POST /v1/chat/completions, /v1/completions and /v1/responses on the coordinator: authenticate, parse,
// reserve the worst case, hand the request to the dispatcher (route, queue, seal, dispatch,
// retries), then relay the provider's chunks to the client as SSE or as one JSON response, and
// settle what was delivered. The provider never sees the client; the client never sees a
// provider that failed before answering.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "coordinator/api/api_context.h"
#include "coordinator/api/pending_request.h"
#include "coordinator/api/request_dispatcher.h"
#include "net/wait_list.h"
#include "proto/answer_stream.h"
#include "proto/openai.h"

namespace darkbloom::coordinator {

// A completion body parsed and validated (`parsed` empty: `error` says why, a 400), with the
// max_tokens bound injected where it had none, and the SealedRequest plaintext that will be
// sealed for the provider. Pure: runs on any thread.
struct ParsedBody {
  std::optional<proto::CompletionRequest> parsed;
  proto::ApiError error;
  std::string plaintext;
};
ParsedBody parse_body(proto::Endpoint endpoint, std::string_view body, int default_max_tokens);

class CompletionHandler {
 public:
  CompletionHandler(ApiContext& context, RequestDispatcher& dispatcher, ProviderGateway& gateway)
      : context_(context), dispatcher_(dispatcher), gateway_(gateway) {}

  // Adds the completion routes (chat, completions, responses).
  void add_routes(http::Router& routes);
  net::awaitable<void> handle(http::Exchange& exchange, proto::Endpoint endpoint);
  // POST /v1/blind/completions (blind_handler.cc): copies sealed by the consumer's proxy.
  net::awaitable<void> handle_blind(http::Exchange& exchange);
  // The server's header check, for requests with a body still to read: a completion request
  // without a valid API key, or an admin request without the admin token, is refused before its
  // body (up to --max-body-bytes) is read.
  net::awaitable<std::optional<Refusal>> check_before_body(const http::Request& request, const std::string& address);

 private:
  // Each step answers the client itself when it fails and then returns false.
  // The body parsed and validated, and the plaintext for the provider encoded; a body of
  // kOffloadBodyBytes or more on the offload workers. Runs after admit(): a client over its
  // limits makes the coordinator parse nothing.
  net::awaitable<bool> parse(http::Exchange& exchange, proto::Endpoint endpoint, PendingRequest& request);
  // The account's rate and in-flight limits: 429 with Retry-After and x-ratelimit-* when over.
  net::awaitable<bool> admit(http::Exchange& exchange, PendingRequest& request, RateLimiter::Ticket& in_flight);
  net::awaitable<bool> reserve_credit(http::Exchange& exchange, PendingRequest& request);
  net::awaitable<bool> check_model_served(http::Exchange& exchange, const PendingRequest& request);

  // A new request of the key's account, within its limits (`in_flight` holds its place); null
  // when the client was answered instead (401, 429).
  net::awaitable<std::shared_ptr<PendingRequest>> begin(http::Exchange& exchange, RateLimiter::Ticket& in_flight);
  // Reserve, dispatch, relay (plain or blind) and settle a request parsed and admitted.
  net::awaitable<void> serve(http::Exchange& exchange, std::shared_ptr<PendingRequest> request);
  net::awaitable<void> relay(http::Exchange& exchange, PendingRequest& request, FirstAnswer answer);
  // A blind answer: sealed chunks and completion as server-sent events, settled on signed usage.
  net::awaitable<void> relay_blind(http::Exchange& exchange, PendingRequest& request, FirstAnswer answer);
  net::awaitable<void> relay_whole(http::Exchange& exchange, PendingRequest& request, FirstAnswer& answer);
  net::awaitable<void> relay_stream(http::Exchange& exchange, PendingRequest& request, FirstAnswer& answer);
  // The next event of the answer; an answer silent for the inference timeout ends as Gone.
  net::awaitable<ProviderEvent> next_event(FirstAnswer& answer);

  Headers response_headers(const PendingRequest& request, const ProviderSession& provider) const;
  // Charges what the provider reports (or, after a failure, the chunks delivered) and pays it.
  void settle(PendingRequest& request, const ProviderSession& provider, int64_t prompt_tokens,
              int64_t completion_tokens);
  void cancel_at_provider(const FirstAnswer& answer);

  // An account's place among the large bodies being parsed: a few at a time per account, so one
  // account cannot keep the offload workers busy for everyone.
  static constexpr int kLargeBodiesPerAccount = 4;
  class LargeBodyTicket {
   public:
    LargeBodyTicket(std::unordered_map<std::string, int>& counts, std::string account)
        : counts_(counts), account_(std::move(account)) {
      ++counts_[account_];
    }
    ~LargeBodyTicket() {
      if (--counts_[account_] <= 0) counts_.erase(account_);
    }
    LargeBodyTicket(const LargeBodyTicket&) = delete;
    LargeBodyTicket& operator=(const LargeBodyTicket&) = delete;

   private:
    std::unordered_map<std::string, int>& counts_;
    std::string account_;
  };
  // True when the account may have one more large body parsed; else answers 429 and false.
  net::awaitable<bool> admit_large_body(http::Exchange& exchange, const std::string& account);

  ApiContext& context_;
  RequestDispatcher& dispatcher_;
  ProviderGateway& gateway_;
  std::unordered_map<std::string, int> large_bodies_;                      // account → large bodies being parsed
  std::unordered_map<std::string, std::shared_ptr<net::WaitList>> holds_;  // account → requests waiting for its hold
};

}  // namespace darkbloom::coordinator
