#include "coordinator/provider_gateway.h"

#include <fmt/format.h>

#include "base/log.h"
#include "coordinator/auth/api_keys.h"
#include "crypto/hash.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::coordinator {

using http::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::pair<std::string, std::string>> retry_after_header(int seconds) {
  return {{"Retry-After", std::to_string(seconds)}};
}

}  // namespace

ProviderGateway::ProviderGateway(http::net::any_io_executor executor, const CoordinatorConfig& config,
                                 ProviderRegistry& registry, Router& router, Store& store,
                                 const std::set<std::string>& releases)
    : executor_(executor), config_(config), registry_(registry), router_(router), store_(store), releases_(releases) {}

VerificationPolicy ProviderGateway::verification_policy() const {
  VerificationPolicy policy;
  policy.allowed_binaries = releases_;
  policy.max_clock_skew = config_.attestation_max_skew;
  policy.now = std::chrono::system_clock::now();
  return policy;
}

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
    on_register(session, std::move(*hello));
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
  if (auto* answer = std::get_if<proto::AttestationResponse>(&message)) {
    on_challenge_answer(session, *answer);
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
    if (!session.trust_state.public_key.empty()) attempt->text += content->text;  // for the receipt
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
    provider_event::Complete done{
        content->prompt_tokens, content->completion_tokens, content->finish_reason, {}, {}, {}};
    if (content->response_hash.empty() && !session.trust_state.public_key.empty()) {
      // An attested provider signs every answer; one it will not vouch for is not vouched for here.
      distrust(session, "an answer came without its receipt");
    } else if (!session.trust_state.public_key.empty()) {
      auto receipt = verify_receipt(attempt->request_id, content->completion_tokens, attempt->text,
                                    content->response_hash, content->receipt_signature, session.trust_state.public_key);
      if (receipt) {
        done.receipt_request_id = attempt->request_id;
        done.response_hash = content->response_hash;
        done.receipt_signature = content->receipt_signature;
      } else {
        // The answer may still be right, but this provider signs what it did not send.
        distrust(session, "receipt rejected: " + receipt.error().message);
      }
    }
    crypto::wipe_memory(attempt->text.data(), attempt->text.size());
    attempt->text.clear();
    finish_attempt(session, complete->request_id, std::move(done));
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

void ProviderGateway::on_register(ProviderSession& session, proto::Register hello) {
  auto key = crypto::public_key_from(hello.encryption_key);
  if (!key || !crypto::usable_public_key(*key)) {
    drop(session, "encryption key is not a usable X25519 public key");
    return;
  }
  TrustState& trust = session.trust_state;
  session.trust = TrustLevel::none;
  trust.reason = "no attestation";
  if (hello.attestation) {
    // A provider whose attestation does not verify is dropped: it claims an identity it cannot show.
    auto verified = verify_attestation(*hello.attestation, hello.encryption_key, verification_policy());
    if (!verified) {
      drop(session, "attestation rejected: " + verified.error().message);
      return;
    }
    const std::string public_key = verified->document.public_key;
    // Without the key's history a retired key could pass: no store, no registration.
    auto known = store_.find_provider_key(public_key);
    if (!known) {
      log::error("provider {}: cannot read key history: {}", session.id, known.error().message);
      drop(session, "the coordinator cannot check this key now; try again later");
      return;
    }
    if (*known && !(*known)->replaced_by.empty()) {
      drop(session, "attestation rejected: this identity key was rotated out");
      return;
    }
    std::string replaces;
    if (verified->rotation) {
      auto old_key = store_.find_provider_key(verified->rotation->old_public_key);
      if (!old_key) {
        log::error("provider {}: cannot read key history: {}", session.id, old_key.error().message);
        drop(session, "the coordinator cannot check this key now; try again later");
        return;
      }
      if (*old_key && !(*old_key)->replaced_by.empty() && (*old_key)->replaced_by != public_key) {
        drop(session, "attestation rejected: the old key was already rotated to another key");
        return;
      }
      replaces = verified->rotation->old_public_key;
      log::info("provider {}: key rotation accepted ({} → {})", session.id, replaces.substr(0, 12),
                public_key.substr(0, 12));
    }
    if (auto recorded = store_.record_provider_key(public_key, verified->document.key_backend, replaces); !recorded) {
      log::error("provider {}: cannot record its key: {}", session.id, recorded.error().message);
      drop(session, "the coordinator cannot record this key now; try again later");
      return;
    }
    if (!replaces.empty()) {
      // The old key is retired everywhere at once, not only at its next registration.
      for (auto& other : registry_.all()) {
        if (other.get() != &session && other->trust_state.document.public_key == replaces) {
          distrust(*other, "its identity key was rotated out");
        }
      }
    }
    trust.public_key = std::move(verified->public_key);
    trust.document = std::move(verified->document);
    trust.document_bytes = hello.attestation->document;
    trust.signature = hello.attestation->signature;
    // Valid attestation: self_signed. `hardware` needs the TPM to certify the key (an EK chain to a
    // configured CA), which this coordinator does not verify yet; a claimed backend proves nothing.
    session.trust = TrustLevel::self_signed;
    trust.reason = "attestation verified (" + trust.document.key_backend +
                   (trust.document.degraded_reason.empty() ? "" : ", degraded: " + trust.document.degraded_reason) +
                   "); first challenge pending";
  }
  if (!hello.account_token.empty()) {
    auto account = ApiKeys(store_).authenticate("Bearer " + hello.account_token);
    crypto::wipe_memory(hello.account_token.data(), hello.account_token.size());
    hello.account_token.clear();
    if (!account) {
      log::error("provider {}: cannot check its account token: {}", session.id, account.error().message);
      drop(session, "the coordinator cannot check the account token now; try again later");
      return;
    }
    if (!*account) {
      drop(session, "unknown account token: payouts need an API key of the operator's account");
      return;
    }
    session.account_id = **account;
  }
  session.info = std::move(hello);
  session.encryption_key = *key;
  session.registered = true;
  // Several heartbeats fit in the eviction window, never more often than 10 per second.
  const int heartbeat_ms = static_cast<int>(std::max<int64_t>(100, config_.heartbeat_timeout.count() / 18));
  session.socket->send(proto::encode(proto::Registered{session.id, proto::kProtocolVersion, heartbeat_ms}));
  send_trust_status(session);
  std::string models;
  for (const auto& model : session.info.models) models += (models.empty() ? "" : ", ") + model.id;
  log::info("provider {} registered: {} (decode {:.1f} tok/s, concurrency {}, trust {})", session.id, models,
            session.info.decode_tps, session.info.max_concurrency, trust_level_name(session.trust));
  if (!trust.public_key.empty()) {
    // Routable above `none` only once the first challenge passes, moments from now.
    http::net::co_spawn(executor_, challenge_loop(registry_.find(session.id)), http::net::detached);
  }
  if (session.routable(config_.min_trust, Clock::now())) {
    for (const auto& model : session.info.models) router_.capacity_changed(model.id, session.info.max_concurrency);
  }
}

awaitable<void> ProviderGateway::challenge_loop(std::shared_ptr<ProviderSession> session) {
  auto running = running_;
  auto timer = std::make_shared<http::net::steady_timer>(executor_);
  session->trust_state.challenge_timer = timer;
  while (*running && !session->dropped && session->trust != TrustLevel::none) {
    const auto issued_at = Clock::now();
    const IssuedChallenge challenge = new_challenge(std::chrono::system_clock::now());
    session->trust_state.open = challenge;
    session->socket->send(proto::encode(proto::AttestationChallenge{challenge.nonce, challenge.timestamp}));
    // Woken early by the answer; the next challenge still waits for the interval.
    timer->expires_at(issued_at + config_.challenge_timeout);
    co_await timer->async_wait(http::as_tuple_awaitable);
    if (!*running || session->dropped) break;
    if (session->trust_state.open.nonce == challenge.nonce) {
      session->trust_state.open = {};
      challenge_failed(*session, fmt::format("no answer within {:.1f} s",
                                             std::chrono::duration<double>(config_.challenge_timeout).count()));
    }
    // The rest of the interval; a cancel here means the session was dropped or distrusted.
    timer->expires_at(issued_at + config_.challenge_interval);
    co_await timer->async_wait(http::as_tuple_awaitable);
  }
  session->trust_state.challenge_timer.reset();
}

void ProviderGateway::on_challenge_answer(ProviderSession& session, const proto::AttestationResponse& answer) {
  TrustState& trust = session.trust_state;
  if (trust.public_key.empty()) {
    drop(session, "a challenge answer from a provider that did not attest");
    return;
  }
  if (session.trust == TrustLevel::none) return;  // distrusted for this session; answers change nothing
  // Single use: whatever this answer is worth, the open nonce is spent.
  const IssuedChallenge issued = trust.open;
  trust.open = {};
  if (!issued.nonce.empty() && trust.challenge_timer) trust.challenge_timer->cancel();
  auto result = verify_challenge_answer(answer, issued, trust.public_key, trust.document, verification_policy());
  if (!result) {
    // A forged signature or a changed binary is not a flaky network: distrust at once.
    if (result.error().code == Errc::permission_denied) {
      distrust(session, "challenge answer rejected: " + result.error().message);
    } else {
      challenge_failed(session, result.error().message);
    }
    return;
  }
  if (!result->regressions.empty()) {
    distrust(session, "posture regressed since registration: " + result->regressions);
    return;
  }
  const bool was_routable = session.routable(config_.min_trust, Clock::now());
  trust.consecutive_failures = 0;
  trust.passed += 1;
  trust.last_pass_at = attest::rfc3339(std::chrono::system_clock::now());
  trust.fresh_until = Clock::now() + config_.challenge_interval + config_.challenge_grace;
  trust.reason = "challenge passed";
  send_trust_status(session);
  if (!was_routable && session.routable(config_.min_trust, Clock::now())) {
    for (const auto& model : session.info.models) router_.capacity_changed(model.id, session.info.max_concurrency);
  }
}

void ProviderGateway::challenge_failed(ProviderSession& session, const std::string& reason) {
  TrustState& trust = session.trust_state;
  trust.failed += 1;
  trust.consecutive_failures += 1;
  log::warn("provider {}: challenge failed ({} in a row): {}", session.id, trust.consecutive_failures, reason);
  if (trust.consecutive_failures >= 3) {
    distrust(session, "three challenges in a row failed; last: " + reason);
    return;
  }
  trust.reason = "challenge failed: " + reason;
  send_trust_status(session);
}

void ProviderGateway::distrust(ProviderSession& session, const std::string& reason) {
  if (session.trust == TrustLevel::none && session.trust_state.fresh_until == Clock::time_point{}) return;
  log::warn("provider {} untrusted: {}", session.id, reason);
  session.trust = TrustLevel::none;
  session.trust_state.fresh_until = {};
  session.trust_state.open = {};
  session.trust_state.reason = reason;
  if (session.trust_state.challenge_timer) session.trust_state.challenge_timer->cancel();
  send_trust_status(session);
}

void ProviderGateway::send_trust_status(ProviderSession& session) {
  if (session.socket->is_open()) {
    session.socket->send(
        proto::encode(proto::TrustStatus{trust_level_name(session.trust), session.trust_state.reason}));
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
  if (session.trust_state.challenge_timer) session.trust_state.challenge_timer->cancel();
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
