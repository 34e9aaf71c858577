#include "coordinator/api/completion_service.h"

#include <fmt/format.h>

#include "base/encoding.h"
#include "base/json.h"
#include "base/log.h"
#include "coordinator/provider_gateway.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

namespace bj = json::bj;
using http::awaitable;
using Clock = std::chrono::steady_clock;
using Headers = std::vector<std::pair<std::string, std::string>>;

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string new_id(std::string_view prefix) {
  return std::string(prefix) + hex_encode(crypto::random_bytes(8));
}

Headers retry_after(int seconds) {
  return Headers{{"Retry-After", std::to_string(seconds)}};
}

proto::InferenceRequest make_inference_request(const Attempt& attempt, const crypto::KeyPair& session_keys,
                                               std::vector<uint8_t> ciphertext) {
  proto::InferenceRequest message;
  message.request_id = attempt.request_id;
  message.model = attempt.model;
  message.sealed_body.sender_public_key.assign(session_keys.public_key().begin(), session_keys.public_key().end());
  message.sealed_body.ciphertext = std::move(ciphertext);
  return message;
}

// Built outside the coroutine: GCC 12 miscompiles brace-initialised temporaries inside them.
std::string receipt_event(const proto::ChunkFormatter& format, const provider_event::Complete& complete,
                          const ProviderSession& provider) {
  proto::Receipt receipt;
  receipt.request_id = complete.receipt_request_id;
  receipt.completion_tokens = complete.completion_tokens;
  receipt.response_hash = complete.response_hash;
  receipt.signature = complete.receipt_signature;
  receipt.public_key = provider.trust_state.document.public_key;
  return format.receipt_chunk(receipt);
}

}  // namespace

struct CompletionService::Request {
  std::string public_id;
  proto::CompletionRequest parsed;
  std::string plaintext;  // the SealedRequest JSON; wiped when the request ends
  RequestTiming timing;
  int max_tokens = 0;
  int64_t created = 0;
  bool client_gone = false;
  std::shared_ptr<Router::Waiter> waiter;
  std::shared_ptr<Attempt> attempt;
  std::optional<Reservation> reservation;
  int64_t delivered_chunks = 0;  // content chunks streamed to the client: what a failure mid-stream costs

  ~Request() { crypto::wipe_memory(plaintext.data(), plaintext.size()); }
};

namespace {

// Whatever way a request ends, what was reserved and not settled goes back (a no-op after a
// settlement).
struct RefundUnlessSettled {
  Ledger& ledger;
  const std::shared_ptr<CompletionService::Request>& request;
  ~RefundUnlessSettled() {
    if (request->reservation) ledger.refund(*request->reservation);
  }
};

}  // namespace

Result<CompletionService::SealedAttempt> CompletionService::seal_attempt(const Request& request,
                                                                         const ProviderSession& provider) const {
  try {
    SealedAttempt sealed{crypto::KeyPair::generate(), std::make_shared<Attempt>(), {}};
    sealed.attempt->request_id = new_id("att_");
    sealed.attempt->model = request.parsed.model;
    sealed.attempt->max_tokens = request.max_tokens;
    sealed.attempt->events = std::make_shared<http::AsyncQueue<ProviderEvent>>(executor_);
    sealed.attempt->channel = std::make_unique<crypto::Channel>(provider.encryption_key, sealed.session_keys);
    sealed.ciphertext = crypto::seal(as_bytes(request.plaintext), provider.encryption_key, sealed.session_keys);
    return sealed;
  } catch (const std::exception& e) {
    return make_error(Errc::invalid_argument, e.what());
  }
}

CompletionService::CompletionService(http::net::any_io_executor executor, const CoordinatorConfig& config,
                                     ApiKeys& keys, Router& router, ProviderGateway& gateway, Ledger& ledger)
    : executor_(executor), config_(config), keys_(keys), router_(router), gateway_(gateway), ledger_(ledger) {}

Headers CompletionService::response_headers(const Request& request, const ProviderSession& provider) const {
  Headers headers;
  headers.emplace_back("X-Request-Id", request.public_id);
  headers.emplace_back("X-Provider-Id", provider.id);
  headers.emplace_back("X-Provider-Trust-Level", trust_level_name(provider.trust));
  headers.emplace_back("X-Provider-Attested", provider.trust == TrustLevel::none ? "false" : "true");
  headers.emplace_back("X-Provider-Encrypted", "true");
  if (!provider.trust_state.public_key.empty()) {
    headers.emplace_back("X-Provider-Key-Backend", provider.trust_state.document.key_backend);
    headers.emplace_back("X-Provider-Public-Key", provider.trust_state.document.public_key);
  }
  headers.emplace_back("X-Timing", request.timing.header());
  return headers;
}

awaitable<void> CompletionService::handle(http::Exchange& exchange, proto::Endpoint endpoint) {
  const auto started = Clock::now();
  auto request = std::make_shared<Request>();
  request->public_id = new_id("req_");
  request->created = unix_seconds();

  auto account = keys_.authenticate(exchange.header("Authorization"));
  if (!account) {
    log::error("key lookup failed: {}", account.error().message);
    co_await exchange.respond_error(proto::server_error("Key lookup failed"));
    co_return;
  }
  if (!*account) {
    co_await exchange.respond_error(
        proto::authentication_error("Missing or unknown API key: send 'Authorization: Bearer db-...'"));
    co_return;
  }
  proto::ApiError error;
  auto parsed = proto::parse_completion_body(endpoint, exchange.request().body(), &error);
  if (!parsed) {
    co_await exchange.respond_error(error);
    co_return;
  }
  request->parsed = std::move(*parsed);
  // Without a bound the worst case is unbounded; inject one so any reservation covers it.
  request->max_tokens = request->parsed.max_tokens.value_or(config_.default_max_tokens);
  if (!request->parsed.max_tokens) request->parsed.body["max_tokens"] = request->max_tokens;
  request->timing.parse_us = micros_since(started);

  // The worst case: every byte of the body a prompt token (a token is at least one byte) and
  // max_tokens generated. In memory against this coordinator's allowance (docs/billing.md).
  const auto reserve_started = Clock::now();
  auto reservation = ledger_.reserve(**account, request->public_id, request->parsed.model,
                                     static_cast<int64_t>(exchange.request().body().size()), request->max_tokens);
  request->timing.reserve_us = micros_since(reserve_started);
  if (!reservation) {
    if (reservation.error().code == Errc::resource_exhausted) {
      co_await exchange.respond_error(proto::insufficient_quota(
          "Your balance does not cover this request's worst case: add credit, or lower max_tokens (" +
          reservation.error().message + ")"));
    } else {
      log::error("request {}: reservation failed: {}", request->public_id, reservation.error().message);
      co_await exchange.respond_error(proto::server_error("Reserving credit failed"));
    }
    co_return;
  }
  request->reservation = std::move(*reservation);
  const RefundUnlessSettled refund_guard{ledger_, request};

  const std::string& model = request->parsed.model;
  if (!router_.model_known(model)) {
    if (router_.model_served(model)) {
      co_await exchange.respond_error(proto::provider_error(
          fmt::format("No provider of '{}' is trusted enough: this coordinator requires trust level {} (see "
                      "/v1/providers/attestation)",
                      model, trust_level_name(config_.min_trust))));
    } else {
      co_await exchange.respond_error(proto::model_not_found(model));
    }
    co_return;
  }
  {
    proto::SealedRequest sealed;
    sealed.endpoint = std::string(proto::endpoint_name(endpoint));
    sealed.body = request->parsed.body;
    request->plaintext = proto::encode(sealed);
  }
  exchange.on_client_gone([this, request] {
    request->client_gone = true;
    if (request->waiter) router_.abandon(request->waiter);
    if (request->attempt) request->attempt->events->push_here(provider_event::ClientGone{});
  });

  std::set<std::string> excluded;
  proto::ApiError last_error = proto::provider_error("No provider could serve the request");
  for (int attempt_number = 0; attempt_number < config_.max_attempts; ++attempt_number) {
    if (request->client_gone) co_return;
    // First in, first out: while others wait for this model, a new request waits behind them.
    auto route_started = Clock::now();
    std::shared_ptr<ProviderSession> provider;
    if (router_.queued(model) == 0) provider = router_.pick(model, request->max_tokens, excluded);
    request->timing.route_us += micros_since(route_started);
    bool lost_turn = false;
    while (!provider) {
      // Waiting helps only if some provider of the model has not failed this request already.
      if (!router_.has_candidates(model, excluded)) break;
      const auto queue_started = Clock::now();
      if (!request->waiter) request->waiter = router_.make_waiter();
      const QueueOutcome outcome = co_await router_.wait_for_capacity(model, request->waiter, lost_turn);
      request->timing.queue_us += micros_since(queue_started);
      if (outcome == QueueOutcome::abandoned || request->client_gone) co_return;
      if (outcome == QueueOutcome::full) {
        co_await exchange.respond_error(
            proto::rate_limited(
                fmt::format("All providers of '{}' are busy and its queue is full; retry shortly", model)),
            retry_after(1));
        co_return;
      }
      if (outcome == QueueOutcome::expired) {
        co_await exchange.respond_error(
            proto::rate_limited(fmt::format("No provider of '{}' became free within {:.1f} s; retry later", model,
                                            std::chrono::duration<double>(config_.queue_wait).count())),
            retry_after(5));
        co_return;
      }
      route_started = Clock::now();
      provider = router_.pick(model, request->max_tokens, excluded);
      request->timing.route_us += micros_since(route_started);
      lost_turn = true;  // if another request took the slot first, wait again at the front
    }
    request->waiter.reset();
    if (!provider) break;

    // Seal for this provider with a key pair made for this attempt alone.
    const auto encrypt_started = Clock::now();
    auto sealed = seal_attempt(*request, *provider);
    request->timing.encrypt_us += micros_since(encrypt_started);
    if (!sealed) {
      excluded.insert(provider->id);
      last_error = proto::provider_error("Sealing to the provider failed");
      continue;
    }
    std::shared_ptr<Attempt> attempt = sealed->attempt;

    const auto dispatch_started = Clock::now();
    provider->in_flight[attempt->request_id] = attempt;
    request->attempt = attempt;
    provider->socket->send(
        proto::encode(make_inference_request(*attempt, sealed->session_keys, std::move(sealed->ciphertext))));
    request->timing.dispatch_us += micros_since(dispatch_started);
    const auto dispatched = Clock::now();

    // Nothing reaches the client before the first chunk: until then a failure retries elsewhere.
    const auto deadline = dispatched + config_.first_chunk_timeout;
    for (;;) {
      auto event = co_await attempt->events->pop_until(deadline);
      if (!event) {
        log::warn("request {}: no first chunk from {} within {} ms", request->public_id, provider->id,
                  config_.first_chunk_timeout.count());
        gateway_.abandon_attempt(provider, attempt->request_id, true);
        excluded.insert(provider->id);
        last_error = proto::timeout_error("The provider did not start answering in time");
        break;
      }
      if (std::holds_alternative<provider_event::Accepted>(*event)) continue;
      if (std::holds_alternative<provider_event::Text>(*event) ||
          std::holds_alternative<provider_event::Complete>(*event)) {
        request->timing.provider_us = micros_since(dispatched);
        co_await relay(exchange, *request, provider, attempt, std::move(*event));
        co_return;
      }
      if (auto* failed = std::get_if<provider_event::Failed>(&*event)) {
        if (failed->code == "context_length_exceeded") {
          // The request itself is too long for the model: no other provider would do better.
          proto::ApiError rejected = proto::invalid_request(failed->message);
          rejected.code = failed->code;
          co_await exchange.respond_error(rejected);
          co_return;
        }
        excluded.insert(provider->id);
        last_error = proto::provider_error("The provider failed: " + failed->message);
        break;
      }
      if (auto* gone = std::get_if<provider_event::Gone>(&*event)) {
        excluded.insert(provider->id);
        last_error = proto::provider_error("The provider disconnected: " + gone->reason);
        break;
      }
      if (std::holds_alternative<provider_event::ClientGone>(*event)) {
        gateway_.abandon_attempt(provider, attempt->request_id, true);
        co_return;
      }
    }
    request->attempt.reset();
  }
  if (!request->client_gone) co_await exchange.respond_error(last_error);
}

awaitable<void> CompletionService::relay(http::Exchange& exchange, Request& request,
                                         std::shared_ptr<ProviderSession> provider, std::shared_ptr<Attempt> attempt,
                                         ProviderEvent first_event) {
  const proto::ChunkFormatter format(
      request.parsed.endpoint,
      (request.parsed.endpoint == proto::Endpoint::chat_completions ? "chatcmpl-" : "cmpl-") + request.public_id,
      request.parsed.model, request.created);
  const Headers headers = response_headers(request, *provider);
  auto cancel_at_provider = [&] { gateway_.abandon_attempt(provider, attempt->request_id, true); };
  std::optional<ProviderEvent> pending = std::move(first_event);
  auto next_event = [&]() -> awaitable<ProviderEvent> {
    if (pending) {
      ProviderEvent event = std::move(*pending);
      pending.reset();
      co_return event;
    }
    // An answer that falls silent for the inference timeout ends as a provider failure.
    auto event = co_await attempt->events->pop_until(Clock::now() + config_.inference_timeout);
    if (!event) {
      cancel_at_provider();
      co_return ProviderEvent{provider_event::Gone{"no output for too long"}};
    }
    co_return std::move(*event);
  };

  if (!request.parsed.stream) {
    std::string text;
    for (;;) {
      ProviderEvent event = co_await next_event();
      if (auto* chunk = std::get_if<provider_event::Text>(&event)) {
        text += chunk->text;
      } else if (auto* complete = std::get_if<provider_event::Complete>(&event)) {
        const proto::Usage usage{complete->prompt_tokens, complete->completion_tokens};
        settle(request, *provider, complete->prompt_tokens, complete->completion_tokens);
        Headers with_receipt = headers;
        if (!complete->response_hash.empty()) {
          // The receipt covers the content text and the completion token count of this answer.
          with_receipt.emplace_back("X-Response-Hash", complete->response_hash);
          with_receipt.emplace_back("X-Response-Signature", complete->receipt_signature);
          with_receipt.emplace_back("X-Receipt-Request-Id", complete->receipt_request_id);
        }
        co_await exchange.respond_json(200, format.complete_response(text, complete->finish_reason, usage),
                                       with_receipt);
        break;
      } else if (auto* failed = std::get_if<provider_event::Failed>(&event)) {
        // Not streaming: the client receives none of the text, so it pays nothing (the guard refunds).
        co_await exchange.respond_error(proto::provider_error("The provider failed: " + failed->message), headers);
        break;
      } else if (auto* gone = std::get_if<provider_event::Gone>(&event)) {
        co_await exchange.respond_error(proto::provider_error("The provider disconnected: " + gone->reason), headers);
        break;
      } else if (std::holds_alternative<provider_event::ClientGone>(event)) {
        cancel_at_provider();
        break;
      }
    }
    crypto::wipe_memory(text.data(), text.size());
    co_return;
  }

  if (!co_await exchange.start_events(headers)) {
    cancel_at_provider();
    co_return;
  }
  bool open = true;
  if (auto opening = format.opening_chunk()) open = co_await exchange.send_event(*opening);
  while (open) {
    ProviderEvent event = co_await next_event();
    if (auto* chunk = std::get_if<provider_event::Text>(&event)) {
      std::string data = format.content_chunk(chunk->text);
      open = co_await exchange.send_event(data);
      if (open) ++request.delivered_chunks;  // billed only once the client has it
      crypto::wipe_memory(data.data(), data.size());
      crypto::wipe_memory(chunk->text.data(), chunk->text.size());
    } else if (auto* complete = std::get_if<provider_event::Complete>(&event)) {
      settle(request, *provider, complete->prompt_tokens, complete->completion_tokens);
      co_await exchange.send_event(format.finish_chunk(complete->finish_reason));
      if (request.parsed.include_usage) {
        co_await exchange.send_event(format.usage_chunk({complete->prompt_tokens, complete->completion_tokens}));
      }
      if (!complete->response_hash.empty()) {
        co_await exchange.send_event(receipt_event(format, *complete, *provider));
      }
      co_await exchange.send_event("[DONE]");
      co_await exchange.end_events();
      co_return;
    } else if (auto* failed = std::get_if<provider_event::Failed>(&event)) {
      settle(request, *provider, 0, request.delivered_chunks);
      // After the stream started, errors go in-band, then the one [DONE].
      co_await exchange.send_event(
          proto::stream_error_event(proto::provider_error("The provider failed: " + failed->message)));
      co_await exchange.send_event("[DONE]");
      co_await exchange.end_events();
      co_return;
    } else if (auto* gone = std::get_if<provider_event::Gone>(&event)) {
      settle(request, *provider, 0, request.delivered_chunks);
      co_await exchange.send_event(
          proto::stream_error_event(proto::provider_error("The provider disconnected: " + gone->reason)));
      co_await exchange.send_event("[DONE]");
      co_await exchange.end_events();
      co_return;
    } else if (std::holds_alternative<provider_event::ClientGone>(event)) {
      open = false;
    }
  }
  // The client left: it pays for what it was sent.
  settle(request, *provider, 0, request.delivered_chunks);
  cancel_at_provider();
}

void CompletionService::settle(Request& request, const ProviderSession& provider, int64_t prompt_tokens,
                               int64_t completion_tokens) {
  if (!request.reservation) return;
  // Usage is the provider's word; it is never billed beyond the reservation.
  (void)ledger_.settle(*request.reservation, prompt_tokens, completion_tokens, provider.account_id);
  request.reservation.reset();
}

}  // namespace darkbloom::coordinator
