#include "coordinator/provider_gateway.h"

#include <fmt/format.h>

#include "base/log.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {

using http::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::pair<std::string, std::string>> retry_after_header(int seconds) {
  return {{"Retry-After", std::to_string(seconds)}};
}

}  // namespace

ProviderGateway::ProviderGateway(http::net::any_io_executor executor, const CoordinatorConfig& config,
                                 ProviderRegistry& registry, Router& router)
    : executor_(executor), config_(config), registry_(registry), router_(router) {}

void ProviderGateway::start() {
  http::net::co_spawn(executor_, eviction_loop(), http::net::detached);
}

void ProviderGateway::stop() {
  *running_ = false;
  for (auto& session : registry_.all()) drop(*session, "coordinator shutting down");
}

awaitable<void> ProviderGateway::handle(http::Exchange& exchange) {
  if (!exchange.is_websocket_upgrade()) {
    co_await exchange.respond_error(proto::invalid_request("This endpoint takes WebSocket upgrades from providers"));
    co_return;
  }
  if (registry_.size() >= config_.max_providers) {
    co_await exchange.respond_error(proto::rate_limited("This coordinator has as many providers as it takes"),
                                    retry_after_header(30));
    co_return;
  }
  auto socket = co_await exchange.accept_websocket();
  if (!socket) {
    log::warn("provider handshake failed: {}", socket.error().message);
    co_return;
  }
  http::net::co_spawn(executor_, serve(*socket), http::net::detached);
}

awaitable<void> ProviderGateway::serve(std::shared_ptr<http::WebSocket> socket) {
  auto running = running_;
  socket->start();
  auto session = registry_.add(socket);
  log::info("provider {} connected from {}", session->id, socket->remote());
  for (;;) {
    auto frame = co_await socket->read();
    if (!*running) co_return;
    if (!frame) {
      if (!session->dropped) drop(*session, frame.error().message);
      break;
    }
    session->last_seen = Clock::now();
    auto message = proto::decode_provider_message(*frame);
    if (!message) {
      drop(*session, "malformed frame: " + message.error().message);
      break;
    }
    on_message(*session, std::move(*message));
    if (session->dropped) break;
  }
}

void ProviderGateway::on_message(ProviderSession& session, proto::ProviderMessage message) {
  if (auto* hello = std::get_if<proto::Register>(&message)) {
    if (session.registered) {
      drop(session, "register sent twice");
      return;
    }
    auto key = crypto::public_key_from(hello->encryption_key);
    if (!key || !crypto::usable_public_key(*key)) {
      drop(session, "encryption key is not a usable X25519 public key");
      return;
    }
    session.info = std::move(*hello);
    session.encryption_key = *key;
    session.registered = true;
    // Attestation is verified by the trust work; until then every provider is untrusted.
    session.trust = TrustLevel::none;
    // Several heartbeats fit in the eviction window, never more often than 10 per second.
    const int heartbeat_ms = static_cast<int>(std::max<int64_t>(100, config_.heartbeat_timeout.count() / 18));
    session.socket->send(proto::encode(proto::Registered{session.id, proto::kProtocolVersion, heartbeat_ms}));
    session.socket->send(proto::encode(proto::TrustStatus{trust_level_name(session.trust), "no attestation verified"}));
    std::string models;
    for (const auto& model : session.info.models) models += (models.empty() ? "" : ", ") + model.id;
    log::info("provider {} registered: {} (decode {:.1f} tok/s, concurrency {})", session.id, models,
              session.info.decode_tps, session.info.max_concurrency);
    for (const auto& model : session.info.models) router_.capacity_changed(model.id, session.info.max_concurrency);
    return;
  }
  if (!session.registered) {
    drop(session, "the first message must be register");
    return;
  }
  if (auto* heartbeat = std::get_if<proto::Heartbeat>(&message)) {
    session.heartbeat = std::move(*heartbeat);
    return;
  }
  // Frames for an unknown or abandoned request id are dropped: this is what keeps a retried
  // request from being answered (or billed) twice.
  auto attempt_of = [&](const std::string& request_id) -> std::shared_ptr<Attempt> {
    const auto it = session.in_flight.find(request_id);
    return it == session.in_flight.end() ? nullptr : it->second;
  };
  if (auto* accepted = std::get_if<proto::InferenceAccepted>(&message)) {
    if (auto attempt = attempt_of(accepted->request_id)) attempt->events->push_here(provider_event::Accepted{});
    return;
  }
  if (auto* chunk = std::get_if<proto::InferenceChunk>(&message)) {
    auto attempt = attempt_of(chunk->request_id);
    if (!attempt) return;
    // Chunks must come from the registered key, open under this attempt's session key and carry
    // the next sequence number; anything else is a provider that cannot be trusted with traffic.
    if (!std::equal(chunk->sealed.sender_public_key.begin(), chunk->sealed.sender_public_key.end(),
                    session.encryption_key.begin(), session.encryption_key.end())) {
      drop(session, "chunk sealed by a key other than the registered one");
      return;
    }
    auto plaintext = attempt->channel->open(chunk->sealed.ciphertext);
    if (!plaintext) {
      drop(session, "chunk does not open under the session key");
      return;
    }
    auto content = proto::decode_chunk_content(plaintext->view());
    if (!content) {
      drop(session, "sealed chunk is malformed: " + content.error().message);
      return;
    }
    if (content->seq != attempt->next_seq) {
      drop(session, fmt::format("chunk {} arrived where {} was due (replayed, reordered or lost)", content->seq,
                                attempt->next_seq));
      return;
    }
    attempt->next_seq += 1;
    attempt->bytes_received += content->text.size();
    if (attempt->bytes_received > kMaxAttemptBytes) {
      drop(session, "answer larger than any request allows");
      return;
    }
    if (attempt->next_seq == 1) attempt->first_chunk_at = Clock::now();
    attempt->events->push_here(provider_event::Text{std::move(content->text)});
    return;
  }
  if (auto* complete = std::get_if<proto::InferenceComplete>(&message)) {
    auto attempt = attempt_of(complete->request_id);
    if (!attempt) return;
    if (!std::equal(complete->sealed.sender_public_key.begin(), complete->sealed.sender_public_key.end(),
                    session.encryption_key.begin(), session.encryption_key.end())) {
      drop(session, "completion sealed by a key other than the registered one");
      return;
    }
    auto plaintext = attempt->channel->open(complete->sealed.ciphertext);
    auto content = plaintext ? proto::decode_completion_content(plaintext->view())
                             : Result<proto::CompletionContent>(plaintext.error());
    if (!content) {
      drop(session, "completion does not open or is malformed: " + content.error().message);
      return;
    }
    if (content->seq != attempt->next_seq) {
      drop(session, fmt::format("completion after {} chunks, {} were received", content->seq, attempt->next_seq));
      return;
    }
    // The provider's speed as observed on its own answers replaces its claim for routing.
    if (content->completion_tokens > 1 && attempt->next_seq > 0) {
      const double seconds = std::chrono::duration<double>(Clock::now() - attempt->first_chunk_at).count();
      if (seconds > 0) {
        const double rate = (content->completion_tokens - 1) / seconds;
        session.observed_decode_tps =
            session.observed_decode_tps > 0 ? 0.8 * session.observed_decode_tps + 0.2 * rate : rate;
      }
    }
    finish_attempt(
        session, complete->request_id,
        provider_event::Complete{content->prompt_tokens, content->completion_tokens, content->finish_reason});
    return;
  }
  if (auto* error = std::get_if<proto::InferenceError>(&message)) {
    finish_attempt(session, error->request_id, provider_event::Failed{error->status_code, error->message, error->code});
    return;
  }
  if (auto* status = std::get_if<proto::LoadModelStatus>(&message)) {
    log::info("provider {}: load_model {} {}{}", session.id, status->model, status->status,
              status->message.empty() ? "" : ": " + status->message);
    return;
  }
  if (auto* unknown = std::get_if<proto::UnknownMessage>(&message)) {
    log::info("provider {}: ignoring message of unknown type '{}'", session.id, unknown->type);
  }
}

void ProviderGateway::finish_attempt(ProviderSession& session, const std::string& request_id, ProviderEvent event) {
  const auto it = session.in_flight.find(request_id);
  if (it == session.in_flight.end()) return;
  auto attempt = it->second;
  session.in_flight.erase(it);
  attempt->events->push_here(std::move(event));
  router_.capacity_changed(attempt->model);
}

void ProviderGateway::abandon_attempt(const std::shared_ptr<ProviderSession>& session, const std::string& request_id,
                                      bool send_cancel) {
  const auto it = session->in_flight.find(request_id);
  if (it == session->in_flight.end()) return;
  const std::string model = it->second->model;
  session->in_flight.erase(it);
  if (send_cancel && session->socket->is_open()) session->socket->send(proto::encode(proto::Cancel{request_id}));
  router_.capacity_changed(model);
}

void ProviderGateway::drop(ProviderSession& session, const std::string& reason) {
  if (session.dropped) return;
  session.dropped = true;
  log::warn("provider {} dropped: {}", session.id, reason);
  session.socket->close(reason);
  auto in_flight = std::move(session.in_flight);
  session.in_flight.clear();
  for (auto& [request_id, attempt] : in_flight) attempt->events->push_here(provider_event::Gone{reason});
  registry_.remove(session.id);
  // Waiters for its models re-check: some may have no provider left to wait for.
  if (session.registered) {
    for (const auto& model : session.info.models) router_.wake_all(model.id);
  }
}

awaitable<void> ProviderGateway::eviction_loop() {
  auto running = running_;
  http::net::steady_timer timer(executor_);
  while (*running) {
    timer.expires_after(config_.eviction_interval);
    co_await timer.async_wait(http::as_tuple_awaitable);
    if (!*running) co_return;
    const auto now = Clock::now();
    for (auto& session : registry_.all()) {
      if (now - session->last_seen > config_.heartbeat_timeout) {
        drop(*session, fmt::format("silent for more than {} s", config_.heartbeat_timeout.count() / 1000));
      }
    }
  }
}

}  // namespace darkbloom::coordinator
