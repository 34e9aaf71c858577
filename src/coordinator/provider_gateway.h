// The coordinator's side of /ws/provider: accepts a provider's WebSocket, takes its register
// message, feeds heartbeats and inference events to the right attempts, and drops a provider
// that breaks the protocol (malformed frames, plaintext or foreign chunks) without disturbing
// the others. Also evicts providers that fell silent, and keeps their trust: verifies the
// attestation in `register`, challenges each attested provider right away and then
// periodically, and distrusts one that fails, regresses its posture or forges a receipt.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "coordinator/coordinator.h"

namespace darkbloom::coordinator {

class ProviderGateway {
 public:
  ProviderGateway(http::net::any_io_executor executor, const CoordinatorConfig& config, ProviderRegistry& registry,
                  Router& router, Store& store, const std::set<std::string>& releases);

  http::awaitable<void> handle(http::Exchange& exchange);
  // Starts the periodic eviction of silent providers.
  void start();
  void stop();

  // Stops an attempt on its provider: forgets it (late frames are dropped) and sends cancel.
  void abandon_attempt(const std::shared_ptr<ProviderSession>& session, const std::string& request_id,
                       bool send_cancel);

 private:
  http::awaitable<void> serve(std::shared_ptr<http::WebSocket> socket);
  void on_message(ProviderSession& session, proto::ProviderMessage message);
  void drop(ProviderSession& session, const std::string& reason);
  void on_register(ProviderSession& session, proto::Register hello);
  void on_challenge_answer(ProviderSession& session, const proto::AttestationResponse& answer);
  http::awaitable<void> challenge_loop(std::shared_ptr<ProviderSession> session);
  // A failed or unanswered challenge: the third in a row distrusts the provider.
  void challenge_failed(ProviderSession& session, const std::string& reason);
  // Down to `none` at once, for this whole session (it must reconnect to be trusted again).
  void distrust(ProviderSession& session, const std::string& reason);
  void send_trust_status(ProviderSession& session);
  VerificationPolicy verification_policy() const;
  void finish_attempt(ProviderSession& session, const std::string& request_id, ProviderEvent event);
  http::awaitable<void> eviction_loop();

  http::net::any_io_executor executor_;
  const CoordinatorConfig& config_;
  ProviderRegistry& registry_;
  Router& router_;
  Store& store_;
  const std::set<std::string>& releases_;
  std::shared_ptr<bool> running_ = std::make_shared<bool>(true);
};

}  // namespace darkbloom::coordinator
