#include "coordinator/gateway/provider_gateway.h"

#include <fmt/format.h>

#include "base/log.h"
#include "base/time.h"
#include "coordinator/api/http_replies.h"
#include "coordinator/gateway/provider_text.h"
#include "http/websocket.h"

namespace darkbloom::coordinator {

using net::awaitable;

ProviderGateway::ProviderGateway(Dependencies d)
    : executor_(std::move(d.executor)),
      config_(d.config),
      clock_(d.clock),
      random_(d.random),
      registry_(d.registry),
      router_(d.router),
      store_(d.store),
      store_worker_(d.store_worker),
      keys_(d.keys),
      releases_(d.releases),
      catalog_(d.catalog),
      hardware_(d.hardware) {}

void ProviderGateway::start() {
  net::asio::co_spawn(executor_, eviction_loop(), net::asio::detached);
}

void ProviderGateway::stop() {
  running_.set(false);
  for (auto& session : registry_.all()) drop(*session, "coordinator shutting down");
}

awaitable<void> ProviderGateway::handle(http::Exchange& exchange) {
  if (!exchange.is_websocket_upgrade()) {
    co_await exchange.respond_error(proto::invalid_request("This endpoint takes WebSocket upgrades from providers"));
    co_return;
  }
  const std::string remote = exchange.remote_address();
  if (auto refusal = admission_refusal(remote)) {
    co_await exchange.respond_error(*refusal, retry_after(30));
    co_return;
  }
  // Counted from here: upgrades in parallel must not all pass the caps before any is a session.
  const PendingUpgrade pending(pending_upgrades_, http::address_key(remote));
  auto socket = co_await exchange.accept_websocket();
  if (!socket) {
    log::warn("provider handshake failed: {}", socket.error().message);
    co_return;
  }
  (*socket)->start();
  auto session = connect(websocket_link(*socket));
  net::asio::co_spawn(executor_, serve(*socket, session), net::asio::detached);
}

std::optional<proto::ApiError> ProviderGateway::admission_refusal(std::string_view remote) const {
  const size_t pending = pending_upgrades_.total();
  if (registry_.size() + pending >= config_.max_providers) {
    return proto::rate_limited("This coordinator has as many providers as it takes");
  }
  if (registry_.idle_count(config_.min_trust) + pending >= config_.max_untrusted_providers) {
    return proto::rate_limited("This coordinator has as many providers waiting to be trusted as it takes");
  }
  const std::string address = http::address_key(remote);
  if (registry_.count_from(address) + pending_upgrades_.from(address) >= config_.max_providers_per_address) {
    return proto::rate_limited("This coordinator has as many providers from this address as it takes");
  }
  return std::nullopt;
}

std::shared_ptr<ProviderSession> ProviderGateway::connect(std::shared_ptr<ProviderLink> link) {
  auto session = registry_.add(std::move(link));
  log::info("provider {} connected from {}", session->id(), session->remote());
  session->register_timer_ = std::make_shared<net::Timer>(clock_, executor_);
  net::asio::co_spawn(executor_, register_deadline(session, session->register_timer_), net::asio::detached);
  return session;
}

awaitable<void> ProviderGateway::register_deadline(std::weak_ptr<ProviderSession> weak,
                                                   std::shared_ptr<net::Timer> timer) {
  auto running = running_;
  if (auto session = weak.lock()) timer->expires_at(session->connected_at() + config_.register_timeout);
  // Cancelled when the provider registers or is dropped; the session is not kept alive meanwhile.
  if (!co_await timer->wait() || !running) co_return;
  auto session = weak.lock();
  if (session && !session->registered_) {
    drop(*session, fmt::format("no valid register within {} ms", config_.register_timeout.count()));
  }
}

awaitable<void> ProviderGateway::serve(std::shared_ptr<http::WebSocket> socket,
                                       std::shared_ptr<ProviderSession> session) {
  auto running = running_;
  for (;;) {
    auto frame = co_await socket->read();
    if (!running) co_return;
    if (!frame) {
      drop(*session, frame.error().message);
      break;
    }
    receive(*session, *frame);
    if (session->dropped()) break;
  }
}

void ProviderGateway::receive(ProviderSession& session, std::string_view frame) {
  if (session.dropped_) return;
  session.last_seen_ = clock_.now();
  auto message = proto::decode_provider_message(frame);
  if (!message) {
    drop(session, "malformed frame: " + message.error().message);
    return;
  }
  on_message(session, std::move(*message));
}

void ProviderGateway::on_message(ProviderSession& session, proto::ProviderMessage message) {
  if (session.registering_) {
    // The provider waits for `registered` before it sends anything else.
    drop(session, "a message before registration finished");
    return;
  }
  if (auto* hello = std::get_if<proto::Register>(&message)) {
    if (session.registered_) {
      drop(session, "register sent twice");
      return;
    }
    on_register(session, std::move(*hello));
    return;
  }
  if (!session.registered_) {
    drop(session, "the first message must be register");
    return;
  }
  if (auto* heartbeat = std::get_if<proto::Heartbeat>(&message)) {
    session.heartbeat_ = std::move(*heartbeat);
  } else if (std::holds_alternative<proto::Draining>(message)) {
    if (!session.draining_) {
      session.draining_ = true;
      session.draining_since_ = clock_.now();
      log::info("provider {} is draining: nothing new goes to it", session.id_);
    }
  } else if (auto* answer = std::get_if<proto::AttestationResponse>(&message)) {
    on_challenge_answer(session, *answer);
  } else if (auto* credential = std::get_if<proto::CredentialResponse>(&message)) {
    on_credential_response(session, *credential);
  } else if (auto* status = std::get_if<proto::LoadModelStatus>(&message)) {
    uint64_t suppressed = 0;
    if (session.may_log(clock_.now(), &suppressed)) {
      log::info("provider {}: load_model {} {}{}{}", session.id_, printable(status->model), printable(status->status),
                status->message.empty() ? "" : ": " + printable(status->message), suppressed_note(suppressed));
    }
  } else if (auto* unknown = std::get_if<proto::UnknownMessage>(&message)) {
    uint64_t suppressed = 0;
    if (session.may_log(clock_.now(), &suppressed)) {
      log::info("provider {}: ignoring message of unknown type '{}'{}", session.id_, printable(unknown->type),
                suppressed_note(suppressed));
    }
  } else {
    on_inference_message(session, message);
  }
}

void ProviderGateway::reserve_attempt(ProviderSession& session, std::shared_ptr<Attempt> attempt) {
  session.in_flight_[attempt->request_id] = std::move(attempt);
}

bool ProviderGateway::send_attempt(ProviderSession& session, const Attempt& attempt, std::string frame) {
  const auto it = session.in_flight_.find(attempt.request_id);
  if (it == session.in_flight_.end() || it->second.get() != &attempt) return false;  // dropped meanwhile
  // Sealing a large body takes a while: the provider may have lost its trust since it was picked.
  const bool routable = !session.dropped_ && session.routable(config_.min_trust, clock_.now());
  const bool fits = frame.size() <= session.max_frame_bytes();
  if (!routable || !fits) {
    if (!fits) {
      log::error("request {}: a {}-byte frame is larger than provider {} reads ({} bytes); not sent",
                 attempt.request_id, frame.size(), session.id_, session.max_frame_bytes());
    }
    session.in_flight_.erase(it);
    router_.capacity_changed(attempt.model);
    return false;
  }
  session.link_->send(std::move(frame));
  return true;
}

void ProviderGateway::finish_attempt(ProviderSession& session, const std::string& request_id, ProviderEvent event) {
  const auto it = session.in_flight_.find(request_id);
  if (it == session.in_flight_.end()) return;
  auto attempt = it->second;
  session.in_flight_.erase(it);
  attempt->events->push_here(std::move(event));
  router_.capacity_changed(attempt->model);
}

void ProviderGateway::abandon_attempt(ProviderSession& session, const std::string& request_id, bool send_cancel) {
  const auto it = session.in_flight_.find(request_id);
  if (it == session.in_flight_.end()) return;
  const std::string model = it->second->model;
  session.in_flight_.erase(it);
  if (send_cancel && session.link_->is_open()) session.link_->send(proto::encode(proto::Cancel{request_id}));
  router_.capacity_changed(model);
}

void ProviderGateway::drop(ProviderSession& session, const std::string& reason) {
  if (session.dropped_) return;
  session.dropped_ = true;
  log::warn("provider {} dropped: {}", session.id_, printable(reason));
  if (session.register_timer_) session.register_timer_->cancel();
  if (session.trust_state_.challenge_timer) session.trust_state_.challenge_timer->cancel();
  session.link_->close(reason);
  auto in_flight = std::move(session.in_flight_);
  session.in_flight_.clear();
  for (auto& [request_id, attempt] : in_flight) attempt->events->push_here(provider_event::Gone{reason});
  // A routable provider's models count as served recently: requests for them are told to retry.
  registry_.remove(session.id_, session.registered_ && session.routable(config_.min_trust, clock_.now()));
  // Waiters for its models re-check: some may have no provider left to wait for.
  if (session.registered_) {
    for (const auto& model : session.info_.models) router_.wake_all(model.id);
  }
}

awaitable<void> ProviderGateway::expire_keys() {
  const auto now = clock_.now();
  if (keys_expired_at_ && now - *keys_expired_at_ < std::chrono::hours(1)) co_return;
  keys_expired_at_ = now;
  auto expire = [this, cutoff = unix_seconds(clock_.wall_now() - config_.provider_key_expiry)] {
    return store_.expire_provider_keys(cutoff);
  };
  if (const Status expired = co_await store_worker_.run(expire); !expired) {
    log::warn("cannot expire unused provider keys: {}", expired.error().message);
  }
}

void ProviderGateway::tell_earned(const ProviderSession& session, const std::string& request_id, int64_t payout) {
  if (!session.dropped_) session.link_->send(proto::encode(proto::Earned{request_id, payout}));
}

void ProviderGateway::evict_silent() {
  const auto now = clock_.now();
  for (auto& session : registry_.all()) {
    if (now - session->last_seen_ > config_.heartbeat_timeout) {
      drop(*session, fmt::format("silent for more than {} s", config_.heartbeat_timeout.count() / 1000));
      continue;
    }
    // Outside open mode a provider nobody can route to only holds a place: after a while it is
    // closed, and reconnecting gets it judged afresh.
    if (session->draining_ && now - session->draining_since_ > ProviderSession::kMaxDrain) {
      drop(*session, "draining for more than an hour");
      continue;
    }
    if (!session->registered_ || config_.min_trust == TrustLevel::none) continue;
    if (session->draining_ || session->routable(config_.min_trust, now)) {
      session->last_routable_ = now;
    } else if (now - session->last_routable_ > config_.unroutable_timeout) {
      drop(*session, fmt::format("not trusted enough to serve for more than {} s ({})",
                                 config_.unroutable_timeout.count() / 1000, session->trust_state_.reason));
    }
  }
}

awaitable<void> ProviderGateway::eviction_loop() {
  auto running = running_;
  net::Timer timer(clock_, executor_);
  while (running) {
    timer.expires_after(config_.eviction_interval());
    co_await timer.wait();
    if (!running) co_return;
    evict_silent();
    // Detached: a database that stopped answering must not stop the evictions.
    net::asio::co_spawn(executor_, expire_keys(), net::asio::detached);
  }
}

}  // namespace darkbloom::coordinator
