// POST /v1/blind/completions: a request the coordinator routes, bills and relays without reading
// it (docs/trust.md, "Requests the coordinator cannot read"). The consumer's proxy sealed the body
// once for each candidate provider; the coordinator reserves for the terms in clear, forwards the
// copy of the provider it picks (a retry forwards the next provider's copy), relays the sealed
// chunks as server-sent events, and settles on the usage the provider signed.
#include <fmt/format.h>

#include "base/log.h"
#include "base/time.h"
#include "coordinator/api/completion_handler.h"

namespace darkbloom::coordinator {
namespace {

using net::awaitable;

// The parts of a decoded blind request the rest of the path reads: what `parsed` holds for a
// plain request. Outside the coroutine: GCC 12 mishandles brace-initialised temporaries in them.
void adopt_blind(PendingRequest& request, proto::BlindRequest blind) {
  request.parsed.model = blind.model;
  request.parsed.max_tokens = blind.max_tokens;
  request.parsed.n = blind.n;
  request.parsed.stream = true;
  request.parsed.ignore_eos = blind.ignore_eos;
  request.max_tokens = blind.max_tokens * blind.n;
  // The largest plaintext any copy can hold bounds the prompt tokens billed.
  size_t largest = 0;
  for (const proto::BlindCopy& copy : blind.copies) {
    request.candidates.insert(copy.provider_id);
    largest = std::max(largest, copy.sealed_body.ciphertext.size() - crypto::kNonceBytes - crypto::kMacBytes);
  }
  request.body_bytes = static_cast<int64_t>(largest);
  request.blind = std::move(blind);
}

struct DecodedBlind {
  std::optional<proto::BlindRequest> request;
  proto::ApiError error;
};

DecodedBlind decode_blind(std::string_view body) {
  DecodedBlind out;
  out.request = proto::decode_blind_request(body, &out.error);
  return out;
}

std::string error_event(const ProviderEvent& event) {
  if (auto* failed = std::get_if<provider_event::Failed>(&event)) {
    return proto::provider_error("The provider failed: " + failed->message).to_json();
  }
  return proto::provider_error("The provider disconnected: " + std::get<provider_event::Gone>(event).reason).to_json();
}

}  // namespace

awaitable<void> CompletionHandler::handle_blind(http::Exchange& exchange) {
  RateLimiter::Ticket in_flight;
  const std::shared_ptr<PendingRequest> request = co_await begin(exchange, in_flight);
  if (!request) co_return;

  const auto started = context_.clock.now();
  const std::string_view body = exchange.request().body();
  std::optional<DecodedBlind> decoded;
  if (body.size() < kOffloadBodyBytes) {
    decoded = decode_blind(body);
  } else if (!co_await admit_large_body(exchange, request->account_id)) {
    co_return;
  } else {
    // Base64 of up to three sealed bodies: not decoded on the thread that serves everyone, and a
    // few at a time per account.
    const LargeBodyTicket ticket(large_bodies_, request->account_id);
    auto job = [body] { return decode_blind(body); };
    decoded = co_await context_.offload.run(job);
    if (!decoded) {
      co_await exchange.respond_error(proto::service_unavailable("The coordinator is busy; retry shortly"),
                                      retry_after(1));
      co_return;
    }
  }
  if (!decoded->request) {
    co_await exchange.respond_error(decoded->error);
    co_return;
  }
  adopt_blind(*request, std::move(*decoded->request));
  request->timing.parse_us = context_.clock.micros_since(started);

  co_await serve(exchange, request);
}

awaitable<void> CompletionHandler::relay_blind(http::Exchange& exchange, PendingRequest& request, FirstAnswer answer) {
  const ProviderSession& provider = *answer.provider;
  Headers headers = response_headers(request, provider);
  // The proxy opens the chunks with the key of this provider's copy and checks the receipt
  // against this attempt's id.
  headers.emplace_back("X-Attempt-Id", answer.attempt->request_id);
  if (!co_await exchange.start_events(headers)) {
    cancel_at_provider(answer);
    co_return;
  }
  bool open = true;
  while (open) {
    ProviderEvent event = co_await next_event(answer);
    if (auto* chunk = std::get_if<provider_event::Text>(&event)) {
      const std::string data = proto::encode_blind_chunk(chunk->sealed);
      open = co_await exchange.send_event("chunk", data);
      if (open) ++request.delivered_chunks;  // what a failure mid-stream costs
    } else if (auto* complete = std::get_if<provider_event::Complete>(&event)) {
      settle(request, provider, complete->prompt_tokens, complete->completion_tokens);
      proto::BlindCompletion done;
      if (complete->sealed) done.sealed = std::move(*complete->sealed);
      done.prompt_tokens = complete->prompt_tokens;
      done.completion_tokens = complete->completion_tokens;
      const std::string data = proto::encode(done);
      co_await exchange.send_event("complete", data);
      co_await exchange.end_events();
      co_return;
    } else if (std::holds_alternative<provider_event::ClientGone>(event)) {
      open = false;
    } else if (!std::holds_alternative<provider_event::Accepted>(event)) {
      // The chunks delivered (unseen, maybe empty), at most what the request could be billed.
      settle(request, provider, 0, std::min<int64_t>(request.delivered_chunks, request.max_tokens));
      const std::string data = error_event(event);
      co_await exchange.send_event("error", data);
      co_await exchange.end_events();
      co_return;
    }
  }
  settle(request, provider, 0, std::min<int64_t>(request.delivered_chunks, request.max_tokens));
  cancel_at_provider(answer);
}

}  // namespace darkbloom::coordinator
