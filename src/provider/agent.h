// The provider agent behind `darkbloom start`: dials the coordinator's WebSocket (it opens no
// port), registers its model with an X25519 key made for this process, heartbeats, reconnects
// with jittered exponential backoff, opens sealed requests in-process, runs them on the engine
// and streams sealed chunks back; honours cancel and load_model; unloads an idle model.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "attest/signer.h"
#include "base/metrics.h"
#include "crypto/merkle.h"
#include "crypto/sealed_box.h"
#include "engine/engine.h"
#include "http/websocket.h"
#include "net/async_queue.h"
#include "net/blocking.h"
#include "net/token_bucket.h"
#include "proto/provider_messages.h"
#include "provider/openai_bridge.h"

namespace darkbloom::provider {

struct AgentOptions {
  static http::WebSocketOptions default_websocket_options() {
    http::WebSocketOptions options;
    options.max_message_bytes = proto::kMaxFrameBytes;
    return options;
  }

  std::string coordinator_host;
  uint16_t coordinator_port = 0;
  std::string coordinator_path = std::string(proto::kProviderSocketPath);
  http::ClientTls tls;  // wss:// when enabled
  engine::EngineOptions engine;
  std::string model_id;
  int max_concurrency = 8;
  std::string account_token;  // API key of the operator's account, for payouts (empty: none)
  std::chrono::milliseconds heartbeat_interval{5000};
  std::chrono::milliseconds idle_unload_after{std::chrono::minutes(60)};  // 0 = never
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds healthy_session{30000};  // a session this long resets the backoff
  // Reads frames up to the one that carries the largest body a coordinator takes by default,
  // and says so in `register`.
  http::WebSocketOptions websocket = default_websocket_options();
  std::string version = "0.1.0";
  // A key-rotation statement from `darkbloom keys rotate`, sent once with the next registration.
  std::string rotation_file;
};

// Facts measured once at start and announced in `register`.
struct ModelFacts {
  proto::ModelInfo info;
  double prefill_tps = 0;
  double decode_tps = 0;
  // The file and its Merkle tree, for model challenges (chunks are read from the file when asked).
  std::string path;
  std::shared_ptr<const crypto::MerkleTree> merkle;
};

// Hashes the file (SHA-256 and the Merkle tree, in one pass), reads its quantization and
// measures speed with a short run.
Result<ModelFacts> measure_model(engine::Engine& engine, const std::string& model_path, const std::string& model_id);

// What `darkbloom status` shows of a running agent.
struct AgentStatus {
  std::string state;  // connecting | registered | disconnected | draining
  std::string provider_id;
  std::string trust_level;
  std::string trust_reason;
  std::string last_error;
  uint64_t requests_served = 0;
  uint64_t tokens_generated = 0;
  size_t in_flight = 0;
  int64_t earned_micro_usd = 0;  // this run's payouts, as the coordinator reported them
};

class ProviderAgent : public std::enable_shared_from_this<ProviderAgent> {
 public:
  ProviderAgent(net::asio::any_io_executor executor, AgentOptions options, std::unique_ptr<engine::Engine> engine,
                ModelFacts facts, std::shared_ptr<attest::AttestationSigner> signer);

  // Runs until stop(): connect, register, serve, and reconnect after every disconnection.
  net::awaitable<void> run();
  void stop();
  // Takes no new requests (they are refused, so the coordinator sends them elsewhere), waits up to
  // `timeout` for the ones in flight, then stops.
  net::awaitable<void> drain(std::chrono::milliseconds timeout);
  AgentStatus status() const;
  // A session with the coordinator is open (its close, after stop(), ends run()).
  bool connected() const { return current_ != nullptr; }
  // The engine's counters, or nullopt while the model is unloaded.
  std::optional<engine::EngineStats> engine_stats() const {
    return engine_ ? std::optional<engine::EngineStats>(engine_->stats()) : std::nullopt;
  }
  // Requests by outcome (completed, cancelled, refused, failed), for /metrics.
  const metrics::CounterFamily& outcomes() const { return outcomes_; }
  // Stops and frees the engine (finishing its requests); call after the io_context stopped.
  void release_engine() { engine_.reset(); }

  const crypto::PublicKey& encryption_key() const { return keys_.public_key(); }

 private:
  struct InFlight {
    std::shared_ptr<ChoiceRun> run;  // set once submitted to the engine
    bool cancelled = false;
  };

  net::awaitable<bool> serve_session(std::shared_ptr<http::WebSocket> socket);
  net::awaitable<void> heartbeat_loop(std::shared_ptr<http::WebSocket> socket);
  net::awaitable<void> idle_loop();
  net::awaitable<void> handle_request(std::shared_ptr<http::WebSocket> socket, proto::InferenceRequest request);
  // The engine's output for one accepted request, sealed chunk by chunk to the request's session
  // key, then the sealed completion with its signed receipt (or the error that ended it). A blind
  // request's completion also carries its usage, signed in clear for the coordinator.
  net::awaitable<void> relay_answer(std::shared_ptr<http::WebSocket> socket, const std::string& request_id,
                                    const crypto::PublicKey& session_key, ChoiceRun& run, bool blind);
  // How each choice ended: the engine's event and OpenAI's reason ("tool_calls" after calls).
  struct Finishes {
    std::vector<engine::FinishEvent> events;
    std::vector<std::string> reasons;
  };
  // The sealed completion with usage and the signed receipt (or the error when it cannot be
  // signed); `answers` are the choices' receipt texts.
  net::awaitable<void> send_completion(std::shared_ptr<http::WebSocket> socket, const std::string& request_id,
                                       const crypto::Channel& channel, uint64_t seq, const Finishes& ended,
                                       const std::vector<std::string>& answers, bool blind);
  // A signature over `message` (the answer's `what`: its receipt, its usage), or nullopt when the
  // key cannot sign: the request then fails with inference_error 500, as an unvouched answer must.
  net::awaitable<std::optional<std::string>> sign_answer(std::shared_ptr<http::WebSocket> socket,
                                                         const std::string& request_id, std::string message,
                                                         std::string what);
  net::awaitable<Result<proto::Register>> make_register();
  net::awaitable<void> answer_challenge(std::shared_ptr<http::WebSocket> socket, proto::AttestationChallenge challenge);
  // The hardware level: ActivateCredential in the TPM, off the network thread; the answer.
  net::awaitable<void> activate_credential(std::shared_ptr<http::WebSocket> socket,
                                           proto::CredentialChallenge challenge);
  // Each named chunk of the model file with its Merkle path (blocking file reads: run off the
  // network thread). Chunks this provider cannot prove are left out.
  Result<std::vector<proto::ModelChunkProof>> prove_model_chunks(
      const std::vector<proto::ModelChunkRequest>& chunks) const;
  // Signs on the signing thread (a TPM takes milliseconds); base64 DER.
  net::awaitable<Result<std::string>> sign(std::string message);
  proto::Heartbeat make_heartbeat() const;
  net::awaitable<Result<engine::Engine*>> ensure_engine();
  net::awaitable<void> handle_load_model(std::shared_ptr<http::WebSocket> socket, std::string model);

  net::asio::any_io_executor executor_;
  AgentOptions options_;
  std::unique_ptr<engine::Engine> engine_;  // null while unloaded
  ModelFacts facts_;
  crypto::KeyPair keys_;
  std::shared_ptr<attest::AttestationSigner> signer_;
  std::string binary_hash_;
  net::asio::thread_pool signing_pool_{1};
  // Model chunks answered to challenges: a coordinator asking faster than
  // proto::kProofChunksPerSecond (beyond a burst) gets no proofs.
  net::TokenBucket proof_budget_{proto::kProofChunkBurst, proto::kProofChunksPerSecond};
  const http::WebSocket* activating_for_ = nullptr;  // the session whose activation is running
  std::unordered_map<std::string, InFlight> in_flight_;
  std::chrono::steady_clock::time_point last_activity_;
  bool stopping_ = false;
  bool draining_ = false;
  AgentStatus status_;
  metrics::CounterFamily outcomes_;
  std::shared_ptr<http::WebSocket> current_;
  std::vector<std::shared_ptr<net::AsyncQueue<Status>>> load_waiters_;  // non-empty while loading
  std::chrono::milliseconds heartbeat_interval_{5000};
  uint64_t requests_served_ = 0;
  uint64_t tokens_generated_ = 0;
};

}  // namespace darkbloom::provider
