#include "coordinator/api/completion_handler.h"

#include <fmt/format.h>

#include "base/log.h"
#include "base/time.h"

namespace darkbloom::coordinator {
namespace {

using net::awaitable;

// Whatever way a request ends, what was reserved and not settled goes back (a no-op after a
// settlement).
struct RefundUnlessSettled {
  Ledger& ledger;
  const std::shared_ptr<PendingRequest>& request;
  ~RefundUnlessSettled() {
    if (request->reservation) ledger.refund(*request->reservation);
  }
};

// The provider's signed receipt, when it sent one. Built outside the coroutine: GCC 12
// miscompiles brace-initialised temporaries inside them.
std::optional<proto::Receipt> receipt_of(const provider_event::Complete& complete, const ProviderSession& provider) {
  if (complete.response_hash.empty()) return std::nullopt;
  proto::Receipt receipt;
  receipt.request_id = complete.receipt_request_id;
  receipt.completion_tokens = complete.receipt_completion_tokens;
  receipt.response_hash = complete.response_hash;
  receipt.signature = complete.receipt_signature;
  receipt.public_key = provider.trust_state().document.public_key;
  return receipt;
}

// The ending of an answer that failed after it started: for a stream, in-band.
proto::ApiError failure_error(const ProviderEvent& event) {
  if (auto* failed = std::get_if<provider_event::Failed>(&event)) {
    return proto::provider_error("The provider failed: " + failed->message);
  }
  return proto::provider_error("The provider disconnected: " + std::get<provider_event::Gone>(event).reason);
}

}  // namespace

void CompletionHandler::add_routes(http::Router& routes) {
  routes.add(http::bhttp::verb::post, "/v1/chat/completions",
             [this](http::Exchange& exchange) { return handle(exchange, proto::Endpoint::chat_completions); });
  routes.add(http::bhttp::verb::post, "/v1/completions",
             [this](http::Exchange& exchange) { return handle(exchange, proto::Endpoint::completions); });
  routes.add(http::bhttp::verb::post, "/v1/responses",
             [this](http::Exchange& exchange) { return handle(exchange, proto::Endpoint::responses); });
  routes.add(http::bhttp::verb::post, std::string(proto::kBlindPath),
             [this](http::Exchange& exchange) { return handle_blind(exchange); });
}

net::awaitable<std::optional<Refusal>> CompletionHandler::check_before_body(const http::Request& request,
                                                                            const std::string& address) {
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  const auto header = request.find(http::bhttp::field::authorization);
  const std::string authorization = header == request.end() ? std::string() : std::string(header->value());
  if (path.substr(0, 10) == "/v1/admin/") {
    co_return admin_refusal(authorization, context_.config.admin_token, context_.admin_failures, address);
  }
  if (request.method() != http::bhttp::verb::post || (path != "/v1/chat/completions" && path != "/v1/completions" &&
                                                      path != "/v1/responses" && path != proto::kBlindPath)) {
    co_return std::nullopt;
  }
  auto checked = co_await check_consumer_key(authorization, context_.keys, context_.store_worker);
  if (auto* refusal = std::get_if<Refusal>(&checked)) co_return std::move(*refusal);
  co_return std::nullopt;  // the handler looks the key up again: a cache hit
}

Headers CompletionHandler::response_headers(const PendingRequest& request, const ProviderSession& provider) const {
  Headers headers;
  headers.emplace_back("X-Request-Id", request.public_id);
  headers.emplace_back("X-Provider-Id", provider.id());
  headers.emplace_back("X-Provider-Trust-Level", trust_level_name(provider.trust()));
  headers.emplace_back("X-Provider-Attested", provider.trust() == TrustLevel::none ? "false" : "true");
  headers.emplace_back("X-Provider-Encrypted", "true");
  if (!provider.trust_state().public_key.empty()) {
    headers.emplace_back("X-Provider-Key-Backend", provider.trust_state().document.key_backend);
    headers.emplace_back("X-Provider-Public-Key", provider.trust_state().document.public_key);
  }
  headers.emplace_back("X-Timing", request.timing.header());
  headers.insert(headers.end(), request.rate_headers.begin(), request.rate_headers.end());
  return headers;
}

awaitable<void> CompletionHandler::handle(http::Exchange& exchange, proto::Endpoint endpoint) {
  // Held until the request ends: its place among the account's requests in flight.
  RateLimiter::Ticket in_flight;
  const std::shared_ptr<PendingRequest> request = co_await begin(exchange, in_flight);
  if (!request) co_return;
  request->body_bytes = static_cast<int64_t>(exchange.request().body().size());
  if (!co_await parse(exchange, endpoint, *request)) co_return;
  co_await serve(exchange, request);
}

awaitable<std::shared_ptr<PendingRequest>> CompletionHandler::begin(http::Exchange& exchange,
                                                                    RateLimiter::Ticket& in_flight) {
  auto request = std::make_shared<PendingRequest>();
  request->public_id = context_.random.id("req_", 8);
  request->created = unix_seconds(context_.clock.wall_now());
  const std::optional<std::string> account =
      co_await authenticate_consumer(exchange, context_.keys, context_.store_worker);
  if (!account) co_return nullptr;
  request->account_id = *account;
  if (!co_await admit(exchange, *request, in_flight)) co_return nullptr;
  co_return request;
}

awaitable<void> CompletionHandler::serve(http::Exchange& exchange, std::shared_ptr<PendingRequest> request) {
  if (!co_await reserve_credit(exchange, *request)) co_return;
  const RefundUnlessSettled refund_guard{context_.ledger, request};
  if (!co_await check_model_served(exchange, *request)) co_return;
  exchange.on_client_gone([this, request] { dispatcher_.client_gone(*request); });
  DispatchOutcome outcome = co_await dispatcher_.dispatch(request);
  if (auto* answer = std::get_if<FirstAnswer>(&outcome)) {
    if (request->blind) {
      co_await relay_blind(exchange, *request, std::move(*answer));
    } else {
      co_await relay(exchange, *request, std::move(*answer));
    }
  } else if (!request->client_gone) {
    auto& refused = std::get<NoAnswer>(outcome);
    if (request->blind && (refused.error.status == 503 || refused.error.status == 502)) {
      refused.error.message += " (a blind request goes only to the providers its copies were sealed for)";
    }
    co_await exchange.respond_error(refused.error, refused.headers);
  }
}

ParsedBody parse_body(proto::Endpoint endpoint, std::string_view body, int default_max_tokens) {
  ParsedBody out;
  auto parsed = endpoint == proto::Endpoint::responses ? proto::parse_responses_body(body, &out.error)
                                                       : proto::parse_completion_body(endpoint, body, &out.error);
  if (!parsed) return out;
  // Without a bound the worst case is unbounded; inject one so any reservation covers it.
  if (!parsed->max_tokens) parsed->body["max_tokens"] = default_max_tokens;
  proto::SealedRequest sealed;
  // A Responses request travels as the chat completion it was translated into.
  sealed.endpoint = std::string(
      proto::endpoint_name(endpoint == proto::Endpoint::responses ? proto::Endpoint::chat_completions : endpoint));
  sealed.body = parsed->body;
  out.plaintext = proto::encode(sealed);
  out.parsed = std::move(*parsed);
  return out;
}

awaitable<bool> CompletionHandler::parse(http::Exchange& exchange, proto::Endpoint endpoint, PendingRequest& request) {
  const auto started = context_.clock.now();
  const std::string_view body = exchange.request().body();
  const int default_max_tokens = context_.config.default_max_tokens;
  std::optional<ParsedBody> parsed;
  if (body.size() < kOffloadBodyBytes) {
    parsed = parse_body(endpoint, body, default_max_tokens);
  } else if (!co_await admit_large_body(exchange, request.account_id)) {
    co_return false;
  } else {
    // A large body takes a noticeable time to parse: not on the thread that serves everyone.
    const LargeBodyTicket ticket(large_bodies_, request.account_id);
    auto job = [endpoint, body, default_max_tokens] { return parse_body(endpoint, body, default_max_tokens); };
    parsed = co_await context_.offload.run(job);
    if (!parsed) {
      co_await exchange.respond_error(
          proto::service_unavailable(context_.offload.stopped()
                                         ? "The coordinator is stopping; retry shortly"
                                         : "The coordinator is busy reading other large requests; retry shortly"),
          retry_after(1));
      co_return false;
    }
  }
  if (!parsed->parsed) {
    co_await exchange.respond_error(parsed->error);
    co_return false;
  }
  request.parsed = std::move(*parsed->parsed);
  request.plaintext = std::move(parsed->plaintext);
  // Every choice may run to max_tokens: the request's output bound (reserved, routed by) is n times it.
  request.max_tokens = request.parsed.max_tokens.value_or(default_max_tokens) * request.parsed.n;
  if (request.parsed.logprobs && int64_t{request.max_tokens} * (request.parsed.top_logprobs + 1) > kMaxLogprobEntries) {
    // The coordinator holds a whole answer's logprobs: their number is bounded.
    const proto::ApiError refusal = proto::invalid_request(
        fmt::format("logprobs for n x max_tokens = {} tokens with {} alternatives each is more than the {} entries "
                    "a request may ask for; lower max_tokens, n or top_logprobs",
                    request.max_tokens, request.parsed.top_logprobs, kMaxLogprobEntries),
        "max_tokens");
    co_await exchange.respond_error(refusal);
    co_return false;
  }
  request.timing.parse_us = context_.clock.micros_since(started);
  co_return true;
}

awaitable<bool> CompletionHandler::admit_large_body(http::Exchange& exchange, const std::string& account) {
  const auto it = large_bodies_.find(account);
  if (it == large_bodies_.end() || it->second < kLargeBodiesPerAccount) co_return true;
  co_await exchange.respond_error(
      proto::rate_limited(
          fmt::format("This account has {} large requests being read already; retry shortly", kLargeBodiesPerAccount)),
      retry_after(1));
  co_return false;
}

awaitable<bool> CompletionHandler::admit(http::Exchange& exchange, PendingRequest& request,
                                         RateLimiter::Ticket& in_flight) {
  RateLimiter::Decision decision = context_.limiter.admit(request.account_id);
  request.rate_headers = decision.headers;
  if (decision.allowed) {
    in_flight = std::move(decision.ticket);
    co_return true;
  }
  Headers headers = retry_after(decision.retry_after_seconds);
  headers.insert(headers.end(), decision.headers.begin(), decision.headers.end());
  co_await exchange.respond_error(proto::rate_limited(decision.reason), headers);
  co_return false;
}

awaitable<bool> CompletionHandler::reserve_credit(http::Exchange& exchange, PendingRequest& request) {
  // The worst case: every byte of the body a prompt token (a token is at least one byte) and
  // max_tokens generated. In memory against this coordinator's allowance (docs/billing.md). A
  // blind request's prompt bound is its largest copy's parts and bytes (gateway: usage_bound).
  const auto started = context_.clock.now();
  const int64_t max_input = request.blind
                                ? request.body_bytes * 2 + kTemplateTokensPerRequest + kTemplateTokensPerMessage
                                : static_cast<int64_t>(exchange.request().body().size());
  auto in_memory = [&] {
    return context_.ledger.reserve_in_memory(request.account_id, request.public_id, request.parsed.model, max_input,
                                             request.max_tokens);
  };
  std::optional<Result<Reservation>> reserved = in_memory();
  // The allowance ran short. While a hold for the account is on its way, wait for it and look
  // again (a burst of an account's requests makes one hold, not one each), a few times at most.
  for (int round = 0; !reserved && round < 3; ++round) {
    const auto holding = holds_.find(request.account_id);
    if (holding == holds_.end()) break;
    const std::shared_ptr<net::WaitList> hold = holding->second;
    co_await hold->wait();
    reserved = in_memory();
  }
  Result<Reservation> reservation = make_error(Errc::internal, "not reserved");
  if (reserved) {
    reservation = std::move(*reserved);
  } else {
    // A hold, on the store's worker.
    auto hold = std::make_shared<net::WaitList>(context_.clock);
    const bool first = holds_.emplace(request.account_id, hold).second;
    auto hold_and_reserve = [&ledger = context_.ledger, account = request.account_id, id = request.public_id,
                             model = request.parsed.model, max_input, max_output = request.max_tokens] {
      return ledger.reserve(account, id, model, max_input, max_output);
    };
    reservation = co_await context_.store_worker.run(hold_and_reserve);
    if (first) {
      holds_.erase(request.account_id);
      hold->wake_all();
    }
  }
  request.timing.reserve_us = context_.clock.micros_since(started);
  if (reservation) {
    request.reservation = std::move(*reservation);
    co_return true;
  }
  if (reservation.error().code == Errc::unavailable) {
    co_await respond_store_failure(exchange, reservation.error());
  } else if (reservation.error().code == Errc::resource_exhausted) {
    co_await exchange.respond_error(proto::insufficient_quota(
        "Your balance does not cover this request's worst case: add credit, or lower max_tokens (" +
        reservation.error().message + ")"));
  } else {
    log::error("request {}: reservation failed: {}", request.public_id, reservation.error().message);
    co_await exchange.respond_error(proto::server_error("Reserving credit failed"));
  }
  co_return false;
}

awaitable<bool> CompletionHandler::check_model_served(http::Exchange& exchange, const PendingRequest& request) {
  const std::string& model = request.parsed.model;
  if (context_.router.model_known(model)) co_return true;
  if (context_.router.model_served(model)) {
    co_await exchange.respond_error(proto::provider_error(
        fmt::format("No provider of '{}' is trusted enough: this coordinator requires trust level {} (see "
                    "/v1/providers/attestation)",
                    model, trust_level_name(context_.config.min_trust))));
  } else if (context_.registry.served_recently(model)) {
    // Its providers are likely reconnecting: a client should retry, not give up on the model.
    co_await exchange.respond_error(
        proto::no_provider_available(fmt::format("No provider of '{}' is connected right now; retry shortly", model)),
        retry_after(5));
  } else {
    co_await exchange.respond_error(proto::model_not_found(model));
  }
  co_return false;
}

void CompletionHandler::cancel_at_provider(const FirstAnswer& answer) {
  gateway_.abandon_attempt(*answer.provider, answer.attempt->request_id, true);
}

awaitable<ProviderEvent> CompletionHandler::next_event(FirstAnswer& answer) {
  if (answer.first_event) {
    ProviderEvent event = std::move(*answer.first_event);
    answer.first_event.reset();
    co_return event;
  }
  auto event = co_await answer.attempt->events->pop_until(context_.clock.now() + context_.config.inference_timeout);
  if (!event) {
    cancel_at_provider(answer);
    co_return ProviderEvent{provider_event::Gone{"no output for too long"}};
  }
  co_return std::move(*event);
}

awaitable<void> CompletionHandler::relay(http::Exchange& exchange, PendingRequest& request, FirstAnswer answer) {
  if (request.parsed.stream) {
    co_await relay_stream(exchange, request, answer);
  } else {
    co_await relay_whole(exchange, request, answer);
  }
}

awaitable<void> CompletionHandler::relay_whole(http::Exchange& exchange, PendingRequest& request, FirstAnswer& answer) {
  const std::unique_ptr<proto::AnswerWriter> writer =
      proto::answer_writer(request.parsed, request.public_id, request.created);
  const Headers headers = response_headers(request, *answer.provider);
  std::vector<proto::ChunkFormatter::Choice> choices(static_cast<size_t>(request.parsed.n));
  for (;;) {
    ProviderEvent event = co_await next_event(answer);
    if (auto* chunk = std::get_if<provider_event::Text>(&event)) {
      auto& choice = choices[static_cast<size_t>(chunk->index)];  // the gateway checked the index
      choice.text += chunk->text;
      proto::append_logprobs(&choice.logprobs, chunk->logprobs);
      for (const auto& delta : chunk->tool_calls) proto::append_tool_call(&choice.tool_calls, delta);
      continue;
    }
    if (auto* complete = std::get_if<provider_event::Complete>(&event)) {
      const proto::Usage usage{complete->prompt_tokens, complete->completion_tokens};
      settle(request, *answer.provider, complete->prompt_tokens, complete->completion_tokens);
      Headers with_receipt = headers;
      const std::optional<proto::Receipt> receipt = receipt_of(*complete, *answer.provider);
      if (receipt) {
        // The receipt covers the content text and the completion tokens the provider reported
        // (`usage` shows those billed, which may be fewer).
        with_receipt.emplace_back("X-Response-Hash", complete->response_hash);
        with_receipt.emplace_back("X-Response-Signature", complete->receipt_signature);
        with_receipt.emplace_back("X-Receipt-Request-Id", complete->receipt_request_id);
        with_receipt.emplace_back("X-Receipt-Completion-Tokens", std::to_string(complete->receipt_completion_tokens));
      }
      for (size_t i = 0; i < choices.size(); ++i) choices[i].finish_reason = complete->finish_reasons[i];
      std::string body = writer->whole(choices, usage, receipt ? &*receipt : nullptr);
      co_await exchange.respond_json(200, body, with_receipt);
      crypto::wipe_memory(body.data(), body.size());
    } else if (std::holds_alternative<provider_event::ClientGone>(event)) {
      cancel_at_provider(answer);
    } else if (!std::holds_alternative<provider_event::Accepted>(event)) {
      // Not streaming: the client receives none of the text, so it pays nothing (the guard refunds).
      co_await exchange.respond_error(failure_error(event), headers);
    } else {
      continue;
    }
    break;
  }
  for (auto& choice : choices) {
    crypto::wipe_memory(choice.text.data(), choice.text.size());
    for (auto& call : choice.tool_calls) crypto::wipe_memory(call.arguments.data(), call.arguments.size());
  }
}

awaitable<void> CompletionHandler::relay_stream(http::Exchange& exchange, PendingRequest& request,
                                                FirstAnswer& answer) {
  const std::unique_ptr<proto::AnswerWriter> writer =
      proto::answer_writer(request.parsed, request.public_id, request.created);
  const ProviderSession& provider = *answer.provider;
  if (!co_await exchange.start_events(response_headers(request, provider))) {
    cancel_at_provider(answer);
    co_return;
  }
  bool open = co_await http::send_events(exchange, writer->start(request.parsed.n));
  while (open) {
    ProviderEvent event = co_await next_event(answer);
    if (auto* chunk = std::get_if<provider_event::Text>(&event)) {
      open = co_await http::send_events(exchange,
                                        writer->piece(chunk->index, chunk->text, chunk->logprobs, chunk->tool_calls));
      if (open) ++request.delivered_chunks;  // billed only once the client has it (never empty: one byte or more)
      crypto::wipe_memory(chunk->text.data(), chunk->text.size());
      for (auto& delta : chunk->tool_calls) crypto::wipe_memory(delta.arguments.data(), delta.arguments.size());
    } else if (auto* complete = std::get_if<provider_event::Complete>(&event)) {
      settle(request, provider, complete->prompt_tokens, complete->completion_tokens);
      for (size_t i = 0; i < complete->finish_reasons.size(); ++i) {
        co_await http::send_events(exchange, writer->finish_choice(static_cast<int>(i), complete->finish_reasons[i]));
      }
      const std::optional<proto::Receipt> receipt = receipt_of(*complete, provider);
      const proto::Usage usage{complete->prompt_tokens, complete->completion_tokens};
      co_await http::send_events(exchange, writer->end(complete->finish_reasons, usage, request.parsed.include_usage,
                                                       receipt ? &*receipt : nullptr));
      co_await exchange.end_events();
      co_return;
    } else if (std::holds_alternative<provider_event::ClientGone>(event)) {
      open = false;
    } else if (!std::holds_alternative<provider_event::Accepted>(event)) {
      settle(request, provider, 0, request.delivered_chunks);
      // After the stream started, errors go in-band, then the stream's end.
      co_await http::send_events(exchange, writer->error(failure_error(event)));
      co_await exchange.end_events();
      co_return;
    }
  }
  // The client left: it pays for what it was sent.
  settle(request, provider, 0, request.delivered_chunks);
  cancel_at_provider(answer);
}

void CompletionHandler::settle(PendingRequest& request, const ProviderSession& provider, int64_t prompt_tokens,
                               int64_t completion_tokens) {
  if (!request.reservation) return;
  // Usage is the provider's word bounded by what was relayed (the gateway's bill_usage, or the
  // chunks delivered), and never billed beyond the reservation.
  const Settlement settlement =
      context_.ledger.settle(*request.reservation, prompt_tokens, completion_tokens, provider.account_id());
  // The operator sees what each answer earned (`darkbloom status`); the platform's cut is not news.
  if (settlement.payout > 0 && !provider.account_id().empty() && request.attempt) {
    gateway_.tell_earned(provider, request.attempt->request_id, settlement.payout);
  }
  context_.metrics.record(request.timing);
  context_.metrics.prompt_tokens.add(static_cast<uint64_t>(std::max<int64_t>(0, prompt_tokens)));
  context_.metrics.completion_tokens.add(static_cast<uint64_t>(std::max<int64_t>(0, completion_tokens)));
  request.reservation.reset();
}

}  // namespace darkbloom::coordinator
