// The coordinator's moving parts wired as in production, minus the network: a ManualClock, a
// seeded random source, a SQLite file, and providers that are FakeLinks the test talks through.
// Everything runs on one io_context the test polls, so a timeout is a clock.advance() away.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "attest/attestation_document.h"
#include "base/encoding.h"
#include "coordinator/api/request_dispatcher.h"
#include "coordinator/auth/api_keys.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/registry/provider_registry.h"
#include "coordinator/routing/router.h"
#include "coordinator/store/store.h"
#include "crypto/p256.h"
#include "crypto/sealed_box.h"
#include "net/clock.h"
#include "support/temp_dir.h"

namespace darkbloom::testing {

// A provider's connection as the gateway sees it: every frame it was sent, decoded.
class FakeLink final : public coordinator::ProviderLink {
 public:
  void send(std::string frame) override { frames.push_back(std::move(frame)); }
  void close(std::string reason) override {
    open = false;
    close_reason = std::move(reason);
  }
  bool is_open() const override { return open; }
  std::string remote() const override { return "fake"; }

  // The frames of type T the coordinator sent, in order.
  template <class T>
  std::vector<T> sent() const {
    std::vector<T> out;
    for (const auto& frame : frames) {
      auto message = proto::decode_coordinator_message(frame);
      if (message && std::holds_alternative<T>(*message)) out.push_back(std::get<T>(*message));
    }
    return out;
  }

  std::vector<std::string> frames;
  bool open = true;
  std::string close_reason;
};

// A provider on a FakeLink, with the X25519 key it registered and, when it attested, its
// identity key and the document it signed.
struct FakeProvider {
  std::shared_ptr<FakeLink> link;
  std::shared_ptr<coordinator::ProviderSession> session;
  crypto::KeyPair keys = crypto::KeyPair::generate();
  std::shared_ptr<crypto::P256Key> identity;
  attest::AttestationDocument document;

  // A signed answer to the most recent challenge, as an honest provider's agent would give.
  proto::AttestationResponse answer_last_challenge() const {
    const auto challenges = link->sent<proto::AttestationChallenge>();
    const proto::AttestationChallenge& challenge = challenges.back();
    attest::StatusDocument status;
    status.nonce = challenge.nonce;
    status.timestamp = challenge.timestamp;
    status.binary_hash = document.binary_hash;
    status.posture = document.posture;
    proto::AttestationResponse response;
    response.nonce = challenge.nonce;
    response.timestamp = challenge.timestamp;
    response.signature = sign(challenge.nonce + challenge.timestamp);
    response.status = attest::canonical_json(status);
    response.status_signature = sign(response.status);
    return response;
  }

  std::string sign(std::string_view text) const { return base64_encode(identity->sign(as_bytes(text))); }
};

class CoordinatorHarness {
 public:
  CoordinatorHarness() : CoordinatorHarness(default_config()) {}
  explicit CoordinatorHarness(coordinator::CoordinatorConfig config)
      : config_(std::move(config)),
        store_(open_store()),
        keys(*store_, clock, random),
        registry(clock, random),
        router(io.get_executor(), clock, random, registry,
               coordinator::RoutingOptions{config_.min_trust, config_.queue_depth, config_.queue_wait}),
        gateway({io.get_executor(), config_, clock, random, registry, router, *store_, keys, releases}),
        dispatcher({io.get_executor(), config_, clock, random, router, gateway}) {}

  // Open mode, short timeouts in round numbers.
  static coordinator::CoordinatorConfig default_config() {
    coordinator::CoordinatorConfig config;
    config.min_trust = coordinator::TrustLevel::none;
    config.first_chunk_timeout = std::chrono::seconds(10);
    config.queue_wait = std::chrono::seconds(60);
    config.queue_depth = 2;
    config.heartbeat_timeout = std::chrono::seconds(90);
    return config;
  }

  // Runs every handler that is ready, without waiting for time to pass.
  void run() {
    io.restart();
    io.poll();
  }
  void advance(std::chrono::milliseconds by) {
    clock.advance(by);
    run();
  }

  // A provider registered for `model`, without an attestation.
  FakeProvider connect(const std::string& model, int max_concurrency = 1, double decode_tps = 50) {
    FakeProvider provider;
    register_provider(provider, model, max_concurrency, decode_tps);
    return provider;
  }

  // A provider registered for `model` with an attestation by an in-memory identity key.
  FakeProvider connect_attested(const std::string& model) {
    FakeProvider provider;
    provider.identity = std::make_shared<crypto::P256Key>(crypto::P256Key::generate());
    attest::AttestationDocument& document = provider.document;
    document.public_key = base64_encode(provider.identity->public_key());
    document.key_backend = "ephemeral";
    document.encryption_key = base64_encode(provider.keys.public_key());
    document.binary_hash = std::string(64, 'c');
    document.version = "0.1.0";
    document.hardware_cpu = "cpu";
    document.hardware_memory_gb = 16;
    document.os = "Linux";
    document.posture.core_dumps_disabled = true;
    document.posture.not_traced = true;
    document.posture.env_clean = true;
    document.timestamp = attest::rfc3339(clock.wall_now());
    proto::AttestationBundle bundle;
    bundle.document = attest::canonical_json(document);
    bundle.signature = provider.sign(bundle.document);
    register_provider(provider, model, 1, 50, std::move(bundle));
    return provider;
  }

  void register_provider(FakeProvider& provider, const std::string& model, int max_concurrency, double decode_tps,
                         std::optional<proto::AttestationBundle> attestation = std::nullopt) {
    provider.link = std::make_shared<FakeLink>();
    provider.session = gateway.connect(provider.link);
    proto::Register hello;
    hello.attestation = std::move(attestation);
    hello.models.push_back({model, 1000, "q8_0", ""});
    hello.encryption_key.assign(provider.keys.public_key().begin(), provider.keys.public_key().end());
    hello.decode_tps = decode_tps;
    hello.max_concurrency = max_concurrency;
    hello.hardware.cores = 4;
    hello.hardware.memory_gb = 16;
    gateway.receive(*provider.session, proto::encode(hello));
    run();
  }

  // A request for `model` as the completion handler hands it to the dispatcher.
  std::shared_ptr<coordinator::PendingRequest> request(const std::string& model, int max_tokens = 16) {
    auto request = std::make_shared<coordinator::PendingRequest>();
    request->public_id = random.id("req_", 8);
    request->parsed.model = model;
    request->max_tokens = max_tokens;
    request->plaintext = R"({"endpoint":"chat.completions","body":{}})";
    return request;
  }

  // Starts dispatching `request`; the outcome lands in `*outcome` once the dispatcher is done.
  void dispatch(std::shared_ptr<coordinator::PendingRequest> request,
                std::shared_ptr<std::optional<coordinator::DispatchOutcome>> outcome) {
    net::asio::co_spawn(
        io.get_executor(),
        [this, request, outcome]() -> net::awaitable<void> { *outcome = co_await dispatcher.dispatch(request); },
        net::asio::detached);
    run();
  }

  // Clock and io_context first: they outlive everything that holds timers on them.
  net::ManualClock clock;
  net::asio::io_context io;
  SeededRandom random{42};

 private:
  std::unique_ptr<coordinator::Store> open_store() {
    auto store = coordinator::open_sqlite_store((dir_.path() / "coordinator.db").string());
    if (!store) throw std::runtime_error(store.error().message);
    return std::move(*store);
  }

  TempDir dir_;
  coordinator::CoordinatorConfig config_;
  std::unique_ptr<coordinator::Store> store_;

 public:
  // Declared after the store they are built on (members are initialised in declaration order).
  const coordinator::CoordinatorConfig& config() const { return config_; }
  coordinator::Store& store() { return *store_; }

  std::set<std::string> releases;
  coordinator::ApiKeys keys;
  coordinator::ProviderRegistry registry;
  coordinator::Router router;
  coordinator::ProviderGateway gateway;
  coordinator::RequestDispatcher dispatcher;
};

}  // namespace darkbloom::testing
