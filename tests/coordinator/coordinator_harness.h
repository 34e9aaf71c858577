// The coordinator's moving parts wired as in production, minus the network: a ManualClock, a
// seeded random source, a SQLite file, and providers that are FakeLinks the test talks through.
// Everything runs on one io_context the test polls, so a timeout is a clock.advance() away.
#pragma once

#include <gtest/gtest.h>

#include <functional>
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
#include "coordinator/store/store_worker.h"
#include "crypto/sealed_box.h"
#include "net/clock.h"
#include "support/fake_attester.h"
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
  std::string remote() const override { return remote_address; }

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
  std::string remote_address = "10.0.0.1:4000";
  bool open = true;
  std::string close_reason;
};

// A provider on a FakeLink, with the X25519 key it registered and, when it attested, its
// identity.
struct FakeProvider {
  std::shared_ptr<FakeLink> link;
  std::shared_ptr<coordinator::ProviderSession> session;
  crypto::KeyPair keys = crypto::KeyPair::generate();
  std::shared_ptr<FakeAttester> identity;

  // The challenges the coordinator sent it, in order.
  std::vector<proto::AttestationChallenge> challenges() const { return link->sent<proto::AttestationChallenge>(); }
  // What `attester` would answer to the most recent challenge (an honest agent: its own identity).
  proto::AttestationResponse answer_last_challenge(const FakeAttester& attester) const {
    const proto::AttestationChallenge challenge = challenges().back();
    return attester.answer(challenge.nonce, challenge.timestamp, attester.document.posture);
  }
  proto::AttestationResponse answer_last_challenge() const { return answer_last_challenge(*identity); }

  // The provider's side of an attempt: `content` sealed under the attempt's session key.
  proto::SealedPayload seal_for(const proto::InferenceRequest& request, const std::string& content) const {
    crypto::PublicKey session_key{};
    std::copy(request.sealed_body.sender_public_key.begin(), request.sealed_body.sender_public_key.end(),
              session_key.begin());
    proto::SealedPayload sealed;
    sealed.sender_public_key.assign(keys.public_key().begin(), keys.public_key().end());
    sealed.ciphertext = crypto::seal(as_bytes(content), session_key, keys);
    return sealed;
  }
  std::string chunk_frame(const proto::InferenceRequest& request, uint64_t seq, std::string text) const {
    return proto::encode(
        proto::InferenceChunk{request.request_id, seal_for(request, proto::encode(proto::ChunkContent{seq, text}))});
  }
  // The completion after `seq` chunks whose text was `text`, reporting the given usage; an attested
  // provider signs its receipt over `text`.
  std::string complete_frame(const proto::InferenceRequest& request, uint64_t seq, int prompt_tokens,
                             int completion_tokens, const std::string& text) const {
    proto::CompletionContent content;
    content.seq = seq;
    content.prompt_tokens = prompt_tokens;
    content.completion_tokens = completion_tokens;
    content.finish_reason = "stop";
    if (identity) {
      content.response_hash = attest::response_hash(request.request_id, completion_tokens, text);
      content.receipt_signature = identity->sign(content.response_hash);
    }
    return proto::encode(proto::InferenceComplete{request.request_id, seal_for(request, proto::encode(content))});
  }
};

// Where a dispatch's outcome lands once the dispatcher is done.
using Outcome = std::shared_ptr<std::optional<coordinator::DispatchOutcome>>;
inline Outcome new_outcome() {
  return std::make_shared<std::optional<coordinator::DispatchOutcome>>();
}

class CoordinatorHarness {
 public:
  CoordinatorHarness() : CoordinatorHarness(default_config()) {}
  explicit CoordinatorHarness(coordinator::CoordinatorConfig config)
      : config_(std::move(config)),
        store_(open_store()),
        store_worker(clock, coordinator::StoreWorkerOptions{0, 256, std::chrono::milliseconds(3000)}),
        keys(*store_, clock, random),
        registry(clock, random),
        router(io.get_executor(), clock, random, registry,
               coordinator::RoutingOptions{config_.min_trust, config_.queue_depth, config_.queue_wait}),
        gateway({io.get_executor(), config_, clock, random, registry, router, *store_, store_worker, keys, releases,
                 catalog, hardware}),
        dispatcher({io.get_executor(), config_, clock, random, router, gateway, offload}) {}

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
    provider.identity = std::make_shared<FakeAttester>(provider.keys.public_key(), clock.wall_now());
    register_provider(provider, model, 1, 50, provider.identity->bundle());
    return provider;
  }

  // A provider registered for `model` whose register message `adjust` changed first.
  FakeProvider connect_with(const std::string& model, const std::function<void(proto::Register&)>& adjust) {
    FakeProvider provider;
    register_provider(provider, model, 1, 50, std::nullopt, adjust);
    return provider;
  }

  void register_provider(FakeProvider& provider, const std::string& model, int max_concurrency, double decode_tps,
                         std::optional<proto::AttestationBundle> attestation = std::nullopt,
                         const std::function<void(proto::Register&)>& adjust = {}) {
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
    if (adjust) adjust(hello);
    gateway.receive(*provider.session, proto::encode(hello));
    run();
  }

  // Runs a coroutine to its end on the harness's io_context (it must not wait for time to pass).
  template <class T>
  T finish(net::awaitable<T> work) {
    std::optional<T> result;
    net::asio::co_spawn(
        io.get_executor(), [&]() -> net::awaitable<void> { result.emplace(co_await std::move(work)); },
        net::asio::detached);
    run();
    if (!result) throw std::runtime_error("the coroutine did not finish");
    return std::move(*result);
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
  coordinator::ModelCatalog catalog;
  std::optional<attest::HardwarePolicy> hardware;
  coordinator::StoreWorker store_worker;  // inline: store calls run in order, on the test's thread
  net::Offload offload{0, 16};            // inline too: large bodies are sealed on the test's thread
  coordinator::ApiKeys keys;
  coordinator::ProviderRegistry registry;
  coordinator::Router router;
  coordinator::ProviderGateway gateway;
  coordinator::RequestDispatcher dispatcher;
};

}  // namespace darkbloom::testing
