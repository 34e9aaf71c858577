#include "provider/agent.h"

#include <fmt/format.h>

#include <cctype>
#include <filesystem>
#include <random>
#include <thread>

#include "attest/attestation_document.h"
#include "attest/posture.h"
#include "base/cpu_features.h"
#include "base/encoding.h"
#include "base/file.h"
#include "base/json.h"
#include "base/log.h"
#include "base/system_info.h"
#include "base/thread_pool.h"
#include "crypto/hash.h"
#include "engine/evaluation/engine_bench.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/quant_recipe.h"
#include "provider/openai_bridge.h"

namespace darkbloom::provider {
namespace {

using net::awaitable;
using Clock = std::chrono::steady_clock;

// The file's quantization as users name it: its recipe ("q4_k_m") when `general.file_type`
// records one, else the weight type that holds most of its parameters ("q8_0").
std::string quantization_of(const std::string& path) {
  auto file = engine::GgufFile::open(path);
  if (!file) return "unknown";
  const engine::GgufValue* file_type = file->find("general.file_type");
  const auto number = file_type != nullptr ? file_type->as_uint() : std::nullopt;
  if (const auto recipe = number ? engine::quant_recipe_from_file_type(*number) : std::nullopt) {
    std::string name(engine::quant_recipe_name(*recipe));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return name;
  }
  std::unordered_map<std::string, uint64_t> elements;
  for (const auto& tensor : file->tensors())
    elements[std::string(engine::ggml_type_name(tensor.type))] += tensor.n_elements;
  std::string best = "unknown";
  uint64_t most = 0;
  for (const auto& [type, count] : elements) {
    if (count > most) {
      most = count;
      best = type;
    }
  }
  return best;
}

// Waits on a timer without throwing when the wait is cancelled.
awaitable<void> sleep_for(std::chrono::milliseconds duration) {
  net::asio::steady_timer timer(co_await net::asio::this_coro::executor, duration);
  co_await timer.async_wait(net::as_tuple_awaitable);
}

}  // namespace

Result<ModelFacts> measure_model(engine::Engine& engine, const std::string& model_path, const std::string& model_id) {
  ModelFacts facts;
  facts.info.id = model_id;
  crypto::Sha256 file_hash;
  auto tree = crypto::merkle_tree_of_file(model_path, {}, &file_hash);
  if (!tree) return tree.error();
  facts.info.size_bytes = tree->size();
  facts.info.weight_hash = hex_encode(file_hash);
  facts.info.merkle_root = hex_encode(tree->root());
  facts.path = model_path;
  facts.merkle = std::make_shared<const crypto::MerkleTree>(std::move(*tree));
  facts.info.quantization = quantization_of(model_path);
  engine::EngineBenchOptions bench;
  bench.prompt_tokens = std::min(64, engine.context() / 2);
  bench.gen_tokens = std::min(16, engine.context() / 4);
  bench.repetitions = 1;
  auto speed = engine::run_engine_bench(engine, bench);
  if (!speed) return speed.error();
  facts.prefill_tps = speed->front().prefill_tokens_per_second;
  facts.decode_tps = speed->front().decode_tokens_per_second;
  return facts;
}

ProviderAgent::ProviderAgent(net::asio::any_io_executor executor, AgentOptions options,
                             std::unique_ptr<engine::Engine> engine, ModelFacts facts,
                             std::shared_ptr<attest::AttestationSigner> signer)
    : executor_(executor),
      options_(std::move(options)),
      engine_(std::move(engine)),
      facts_(std::move(facts)),
      keys_(crypto::KeyPair::generate()),
      signer_(std::move(signer)),
      last_activity_(Clock::now()) {
  auto hash = attest::self_binary_hash();
  if (hash) {
    binary_hash_ = std::move(*hash);
  } else {
    // Without a hash a coordinator with a release allow-list refuses us: say why here.
    log::warn("provider: cannot hash the running binary: {}", hash.error().message);
  }
}

void ProviderAgent::stop() {
  stopping_ = true;
  if (current_) current_->close("provider shutting down");
}

awaitable<void> ProviderAgent::drain(std::chrono::milliseconds timeout) {
  auto self = shared_from_this();
  // Told at once (once registered: before, nothing is routed here anyway).
  if (current_ && status_.state == "registered") current_->send(proto::encode(proto::Draining{}));
  draining_ = true;
  status_.state = "draining";
  const auto deadline = Clock::now() + timeout;
  while (!in_flight_.empty() && Clock::now() < deadline) co_await sleep_for(std::chrono::milliseconds(50));
  if (!in_flight_.empty()) log::warn("provider: {} requests still running after the drain timeout", in_flight_.size());
  // The last answers' frames may still be queued: closing drops the queue, so let it drain first.
  while (current_ && current_->queued_bytes() > 0 && Clock::now() < deadline) {
    co_await sleep_for(std::chrono::milliseconds(20));
  }
  stop();
}

AgentStatus ProviderAgent::status() const {
  AgentStatus status = status_;
  status.requests_served = requests_served_;
  status.tokens_generated = tokens_generated_;
  status.in_flight = in_flight_.size();
  return status;
}

awaitable<Result<std::string>> ProviderAgent::sign(std::string message) {
  // A named function object: GCC 12 destroys a lambda temporary inside a co_await operand twice.
  auto work = [signer = signer_, message = std::move(message)] { return signer->sign(as_bytes(message)); };
  auto signature = co_await net::run_blocking(signing_pool_, std::move(work));
  if (!signature) co_return signature.error();
  co_return base64_encode(*signature);
}

awaitable<std::optional<std::string>> ProviderAgent::sign_answer(std::shared_ptr<http::WebSocket> socket,
                                                                 const std::string& request_id, std::string message,
                                                                 std::string what) {
  auto signature = co_await sign(std::move(message));
  if (signature) co_return *signature;
  log::error("provider: cannot sign the {} of {}: {}", what, request_id, signature.error().message);
  outcomes_.at({{"outcome", "failed"}}).add();
  socket->send(proto::encode(
      proto::InferenceError{request_id, 500, fmt::format("cannot sign the {}: {}", what, signature.error().message)}));
  co_return std::nullopt;
}

awaitable<Result<proto::Register>> ProviderAgent::make_register() {
  proto::Register message;
  message.provider_version = options_.version;
  message.backend = "darkbloom-cpu";
  const CpuFeatures& cpu = cpu_features();
  message.hardware.cpu = cpu.brand.empty() ? "unknown" : cpu.brand;
  message.hardware.cores = ThreadPool::hardware_threads();
  message.hardware.memory_gb = static_cast<double>(physical_memory_bytes()) / (1ull << 30);
  message.models = {facts_.info};
  message.encryption_key.assign(keys_.public_key().begin(), keys_.public_key().end());
  message.prefill_tps = facts_.prefill_tps;
  message.decode_tps = facts_.decode_tps;
  message.max_concurrency = options_.max_concurrency;
  message.account_token = options_.account_token;
  message.max_frame_bytes = options_.websocket.max_message_bytes;
  message.features = proto::provider_features();

  // The attestation document binds the identity key to this process's X25519 key, binary and
  // posture at this moment; it is signed over exactly the bytes sent.
  const attest::SignerInfo info = signer_->info();
  attest::AttestationDocument document;
  document.public_key = base64_encode(signer_->public_key());
  document.key_backend = info.backend;
  document.degraded_reason = info.degraded_reason;
  document.encryption_key = base64_encode(keys_.public_key());
  document.binary_hash = binary_hash_;
  // The payout account, bound to this key: a token swapped or dropped on the way no longer matches.
  if (!options_.account_token.empty()) {
    document.account_binding = attest::account_binding(document.public_key, options_.account_token);
  }
  document.version = options_.version;
  document.hardware_cpu = message.hardware.cpu;
  document.hardware_memory_gb = static_cast<int64_t>(message.hardware.memory_gb + 0.5);
  document.os = attest::kernel_release();
  document.posture = attest::probe_posture();
  document.timestamp = attest::rfc3339(std::chrono::system_clock::now());
  proto::AttestationBundle bundle;
  bundle.document = attest::canonical_json(document);
  auto signature = co_await sign(bundle.document);
  if (!signature) co_return signature.error();
  bundle.signature = *signature;
  if (!options_.rotation_file.empty()) {
    // Sent until the coordinator has seen it; it only vouches for the key we now hold.
    auto rotation = read_file(options_.rotation_file);
    if (rotation) {
      auto parsed = json::parse(*rotation, options_.rotation_file);
      const auto* object = parsed && parsed->is_object() ? &parsed->as_object() : nullptr;
      const auto* statement = object ? object->if_contains("statement") : nullptr;
      const auto* statement_signature = object ? object->if_contains("signature") : nullptr;
      if (statement && statement->is_string() && statement_signature && statement_signature->is_string()) {
        auto parsed_statement = attest::parse_rotation_statement(statement->as_string());
        if (parsed_statement && parsed_statement->new_public_key == document.public_key) {
          bundle.rotation_statement = std::string(statement->as_string());
          bundle.rotation_signature = std::string(statement_signature->as_string());
        }
      }
    }
  }
  if (info.backend == "tpm2") {
    // The hardware level: the TPM's EK certificate and the key's public area (read from the TPM
    // at the first registration). Without them the key stays self_signed.
    auto read = [signer = signer_] { return signer->tpm_evidence(); };
    auto evidence = co_await net::run_blocking(signing_pool_, std::move(read));
    if (evidence) {
      bundle.ek_certificate = std::move(evidence->ek_certificate);
      bundle.key_public = std::move(evidence->key_public);
    } else {
      log::warn("provider: no TPM evidence for the hardware level: {}", evidence.error().message);
    }
  }
  message.attestation = std::move(bundle);
  co_return message;
}

awaitable<void> ProviderAgent::answer_challenge(std::shared_ptr<http::WebSocket> socket,
                                                proto::AttestationChallenge challenge) {
  auto self = shared_from_this();
  // Only what a challenge looks like gets signed: 32 random bytes and a current time. Anything
  // else could be a receipt hash or a document someone wants our key on.
  auto nonce = base64_decode(challenge.nonce);
  auto issued = attest::parse_rfc3339(challenge.timestamp);
  const auto skew = issued ? std::chrono::abs(std::chrono::system_clock::now() - *issued) : std::chrono::hours(1);
  if (!nonce || nonce->size() != 32 || !issued || skew > std::chrono::minutes(5)) {
    log::warn("provider: refusing to sign a malformed or stale challenge (nonce '{}', timestamp '{}')", challenge.nonce,
              challenge.timestamp);
    co_return;
  }
  attest::StatusDocument status;
  status.nonce = challenge.nonce;
  status.timestamp = challenge.timestamp;
  // Fresh posture. The binary hash is the one taken at start: the executable of a running process
  // cannot be rewritten (ETXTBSY), so hashing it again would only cost ~10 ms per challenge.
  status.binary_hash = binary_hash_;
  status.posture = attest::probe_posture();
  status.model_hashes[facts_.info.id] = facts_.info.weight_hash;
  proto::AttestationResponse response;
  response.nonce = challenge.nonce;
  response.timestamp = challenge.timestamp;
  response.status = attest::canonical_json(status);
  auto signature = co_await sign(challenge.nonce + challenge.timestamp);
  auto status_signature = co_await sign(response.status);
  if (!signature || !status_signature) {
    log::error("provider: cannot sign a challenge answer: {}",
               signature ? status_signature.error().message : signature.error().message);
    co_return;
  }
  response.signature = *signature;
  response.status_signature = *status_signature;
  // All of a challenge's chunks or none: a part would fail the challenge and still cost the budget.
  const auto now = Clock::now();
  if (!challenge.model_chunks.empty() &&
      proof_budget_.level(now) < static_cast<double>(challenge.model_chunks.size())) {
    log::warn("provider: the coordinator asks for model chunks faster than {} per minute; proving none of {}",
              proto::kProofChunksPerSecond * 60, challenge.model_chunks.size());
    challenge.model_chunks.clear();
  }
  for (size_t i = 0; i < challenge.model_chunks.size(); ++i) proof_budget_.take(now);
  if (!challenge.model_chunks.empty()) {
    // Named, not a temporary in the co_await operand: GCC 12 destroys such temporaries twice.
    auto prove = [this, chunks = std::move(challenge.model_chunks)] { return prove_model_chunks(chunks); };
    auto proofs = co_await net::run_blocking(signing_pool_, std::move(prove));
    if (proofs) response.model_proofs = std::move(*proofs);
  }
  socket->send(proto::encode(response));
}

Result<std::vector<proto::ModelChunkProof>> ProviderAgent::prove_model_chunks(
    const std::vector<proto::ModelChunkRequest>& chunks) const {
  // The chunks are read from the file as it is now: a file changed since it was hashed at start
  // no longer proves the root this provider announced, and the coordinator will say so.
  std::vector<proto::ModelChunkProof> proofs;
  for (const auto& request : chunks) {
    if (request.model != facts_.info.id || !facts_.merkle || request.index >= facts_.merkle->chunk_count()) {
      log::warn("provider: a challenge names chunk {} of '{}', which this provider does not serve", request.index,
                request.model);
      continue;
    }
    auto chunk = crypto::read_merkle_chunk(facts_.path, facts_.merkle->size(), request.index);
    if (!chunk) {
      log::error("provider: cannot read the model for a challenge: {}", chunk.error().message);
      continue;
    }
    if (crypto::merkle_leaf(*chunk) != facts_.merkle->leaf(request.index)) {
      log::error("provider: chunk {} of {} changed since it was hashed at start; challenges will fail until restart",
                 request.index, facts_.path);
    }
    proto::ModelChunkProof proof;
    proof.model = request.model;
    proof.index = request.index;
    proof.chunk = std::move(*chunk);
    for (const auto& hash : facts_.merkle->path(request.index)) proof.path.push_back(hex_encode(hash));
    proofs.push_back(std::move(proof));
  }
  return proofs;
}

awaitable<void> ProviderAgent::activate_credential(std::shared_ptr<http::WebSocket> socket,
                                                   proto::CredentialChallenge challenge) {
  auto self = shared_from_this();
  // One at a time per session: a coordinator sending more cannot keep the TPM from signing
  // challenges. (A new session's activation waits behind an old one's on the signing thread.)
  if (activating_for_ == socket.get()) {
    proto::CredentialResponse busy;
    busy.error = "an activation is already running";
    socket->send(proto::encode(busy));
    co_return;
  }
  activating_for_ = socket.get();
  // What comes back is only what the TPM decrypts for this key's Name with its EK: a secret the
  // coordinator made, worthless to anyone else. Nothing here is signed.
  auto activate = [signer = signer_, challenge = std::move(challenge)] {
    return signer->activate_credential(challenge.credential_blob, challenge.encrypted_secret);
  };
  auto credential = co_await net::run_blocking(signing_pool_, std::move(activate));
  if (activating_for_ == socket.get()) activating_for_ = nullptr;
  proto::CredentialResponse response;
  if (credential) {
    response.credential = std::move(*credential);
    log::info("provider: credential activated for the hardware level");
  } else {
    response.error = credential.error().message;
    log::warn("provider: cannot activate the coordinator's credential: {}", response.error);
  }
  socket->send(proto::encode(response));
}

proto::Heartbeat ProviderAgent::make_heartbeat() const {
  proto::Heartbeat message;
  message.status = in_flight_.empty() ? "idle" : "serving";
  message.requests_served = requests_served_;
  message.tokens_generated = tokens_generated_;
  if (engine_) {
    const engine::EngineStats stats = engine_->stats();
    message.active_model = facts_.info.id;
    message.running = stats.running;
    message.waiting = stats.waiting;
    message.kv_tokens_used = stats.kv_tokens_used;
    message.kv_tokens_free = std::max<int64_t>(0, stats.kv_tokens_total - stats.kv_tokens_used);
  }
  return message;
}

awaitable<void> ProviderAgent::run() {
  auto self = shared_from_this();
  if (options_.idle_unload_after.count() > 0) net::asio::co_spawn(executor_, idle_loop(), net::asio::detached);
  std::mt19937_64 rng(std::random_device{}());
  auto backoff = options_.backoff_initial;
  while (!stopping_) {
    if (!draining_) status_.state = "connecting";
    auto socket = co_await http::WebSocket::connect(options_.coordinator_host, options_.coordinator_port,
                                                    options_.coordinator_path, options_.websocket, options_.tls);
    bool healthy = false;
    if (!socket) {
      log::warn("provider: {}", socket.error().message);
      status_.last_error = socket.error().message;
    } else {
      healthy = co_await serve_session(*socket);
    }
    // Draining, a lost link is the end: its requests are gone, and no new ones should come.
    if (stopping_ || draining_) break;
    status_.state = "disconnected";
    if (healthy) backoff = options_.backoff_initial;
    // Full jitter: a random wait up to the current backoff, so restarts do not reconnect in a herd.
    const auto wait = std::chrono::milliseconds(static_cast<int64_t>(
        std::uniform_real_distribution<double>(0.5, 1.0)(rng) * static_cast<double>(backoff.count())));
    log::info("provider: reconnecting in {} ms", wait.count());
    co_await sleep_for(wait);
    backoff = std::min(options_.backoff_max, backoff * 2);
  }
}

awaitable<bool> ProviderAgent::serve_session(std::shared_ptr<http::WebSocket> socket) {
  current_ = socket;
  socket->start();
  auto hello = co_await make_register();
  if (!hello) {
    log::error("provider: cannot build the registration: {}", hello.error().message);
    socket->close("cannot attest");
    current_.reset();
    co_return false;
  }
  socket->send(proto::encode(*hello));
  Clock::time_point registered_at{};
  bool registered = false;
  for (;;) {
    auto frame = co_await socket->read();
    if (!frame) {
      log::warn("provider: connection to the coordinator ended: {}", frame.error().message);
      status_.last_error = "connection ended: " + frame.error().message;
      break;
    }
    auto message = proto::decode_coordinator_message(*frame);
    if (!message) {
      log::warn("provider: malformed message from the coordinator: {}", message.error().message);
      socket->close("malformed message");
      break;
    }
    if (auto* welcome = std::get_if<proto::Registered>(&*message)) {
      registered = true;
      registered_at = Clock::now();
      if (!draining_) status_.state = "registered";
      status_.provider_id = welcome->provider_id;
      log::info("provider: registered as {} serving '{}'", welcome->provider_id, facts_.info.id);
      for (const auto& refused : welcome->refused_models) {
        log::warn("provider: the coordinator refused model '{}': {}", refused.model, refused.reason);
        std::fprintf(stderr, "model '%s' refused: %s\n", refused.model.c_str(), refused.reason.c_str());
      }
      std::fprintf(stderr, "provider registered as %s\n", welcome->provider_id.c_str());
      // The coordinator says how often it wants to hear from us; our own setting caps it.
      heartbeat_interval_ =
          std::min(options_.heartbeat_interval, std::chrono::milliseconds(welcome->heartbeat_interval_ms));
      net::asio::co_spawn(executor_, heartbeat_loop(socket), net::asio::detached);
    } else if (auto* request = std::get_if<proto::InferenceRequest>(&*message)) {
      net::asio::co_spawn(executor_, handle_request(socket, std::move(*request)), net::asio::detached);
    } else if (auto* cancel = std::get_if<proto::Cancel>(&*message)) {
      auto it = in_flight_.find(cancel->request_id);
      if (it != in_flight_.end() && !it->second.cancelled) {
        it->second.cancelled = true;
        if (it->second.run) it->second.run->cancel();
      }
    } else if (auto* load = std::get_if<proto::LoadModel>(&*message)) {
      // Loading can take long; the session keeps reading (cancels, pings) meanwhile.
      net::asio::co_spawn(executor_, handle_load_model(socket, load->model), net::asio::detached);
    } else if (auto* challenge = std::get_if<proto::AttestationChallenge>(&*message)) {
      net::asio::co_spawn(executor_, answer_challenge(socket, std::move(*challenge)), net::asio::detached);
    } else if (auto* credential = std::get_if<proto::CredentialChallenge>(&*message)) {
      net::asio::co_spawn(executor_, activate_credential(socket, std::move(*credential)), net::asio::detached);
    } else if (auto* earned = std::get_if<proto::Earned>(&*message)) {
      status_.earned_micro_usd += earned->payout_micro_usd;  // bounded per message by the parser
    } else if (auto* trust = std::get_if<proto::TrustStatus>(&*message)) {
      status_.trust_level = trust->trust_level;
      status_.trust_reason = trust->reason;
      log::info("provider: trust level {}{}", trust->trust_level,
                trust->reason.empty() ? "" : " (" + trust->reason + ")");
    } else if (auto* unknown = std::get_if<proto::UnknownMessage>(&*message)) {
      log::info("provider: ignoring message of unknown type '{}'", unknown->type);
    }
  }
  // The coordinator forgets this session's requests; stop them here too.
  for (auto& [request_id, entry] : in_flight_) {
    if (!entry.cancelled && entry.run) entry.run->cancel();
    entry.cancelled = true;
  }
  socket->close("");
  current_.reset();
  co_return registered&& Clock::now() - registered_at >= options_.healthy_session;
}

awaitable<void> ProviderAgent::heartbeat_loop(std::shared_ptr<http::WebSocket> socket) {
  auto self = shared_from_this();
  while (socket->is_open()) {
    co_await sleep_for(heartbeat_interval_);
    if (!socket->is_open()) break;
    socket->send(proto::encode(make_heartbeat()));
  }
}

awaitable<void> ProviderAgent::idle_loop() {
  auto self = shared_from_this();
  const auto check_every = std::max(std::chrono::milliseconds(100),
                                    std::min(std::chrono::milliseconds(60000), options_.idle_unload_after / 4));
  while (!stopping_) {
    co_await sleep_for(check_every);
    if (engine_ && in_flight_.empty() && Clock::now() - last_activity_ >= options_.idle_unload_after) {
      log::info("provider: unloading '{}' after {} s idle", facts_.info.id,
                std::chrono::duration_cast<std::chrono::seconds>(options_.idle_unload_after).count());
      engine_.reset();
      std::fprintf(stderr, "provider unloaded idle model %s\n", facts_.info.id.c_str());
    }
  }
}

awaitable<void> ProviderAgent::handle_load_model(std::shared_ptr<http::WebSocket> socket, std::string model) {
  auto self = shared_from_this();
  socket->send(proto::encode(proto::LoadModelStatus{model, "started", ""}));
  if (model != facts_.info.id) {
    socket->send(proto::encode(proto::LoadModelStatus{model, "failed", "this provider serves only " + facts_.info.id}));
    co_return;
  }
  auto loaded = co_await ensure_engine();
  socket->send(proto::encode(
      proto::LoadModelStatus{model, loaded ? "succeeded" : "failed", loaded ? "" : loaded.error().message}));
}

awaitable<Result<engine::Engine*>> ProviderAgent::ensure_engine() {
  last_activity_ = Clock::now();
  if (engine_) co_return engine_.get();
  // One load at a time: later callers wait for the load in progress instead of starting their own.
  auto waiter = std::make_shared<net::AsyncQueue<Status>>(executor_);
  load_waiters_.push_back(waiter);
  if (load_waiters_.size() == 1) {
    // Loading maps the file and allocates the cache; do it off the network thread.
    auto done = std::make_shared<net::AsyncQueue<Result<std::unique_ptr<engine::Engine>>>>(executor_);
    std::thread([done, options = options_.engine] { done->push(engine::Engine::load(options)); }).detach();
    auto loaded = co_await done->pop();
    Status status;
    if (loaded) {
      engine_ = std::move(*loaded);
      log::info("provider: loaded '{}'", facts_.info.id);
    } else {
      status = loaded.error();
    }
    for (auto& other : load_waiters_) other->push_here(status);
    load_waiters_.clear();
  }
  const Status status = co_await waiter->pop();
  if (!status) co_return status.error();
  if (!engine_) co_return make_error(Errc::unavailable, "the model was unloaded again");
  co_return engine_.get();
}

awaitable<void> ProviderAgent::handle_request(std::shared_ptr<http::WebSocket> socket,
                                              proto::InferenceRequest message) {
  auto self = shared_from_this();
  const std::string request_id = message.request_id;
  auto fail = [&](int status, const std::string& text) {
    const char* outcome = status == 499 ? "cancelled" : status >= 500 ? "failed" : "refused";
    outcomes_.at({{"outcome", outcome}}).add();
    socket->send(proto::encode(proto::InferenceError{request_id, status, text}));
  };
  if (in_flight_.count(request_id) != 0) co_return;  // a duplicate id: the first one stands
  if (draining_) {
    fail(503, "provider is shutting down");
    co_return;
  }
  // A debugger attached: refuse to open plaintext while it watches.
  const attest::Posture posture = attest::probe_posture();
  if (!posture.not_traced) {
    fail(503, "unsafe posture: " + attest::describe(posture));
    co_return;
  }
  auto session_key = crypto::public_key_from(message.sealed_body.sender_public_key);
  if (!session_key) {
    fail(400, "sealed_body has no valid session key");
    co_return;
  }
  // Decrypted bytes live in SecureBytes and are wiped when this frame of the coroutine ends.
  auto plaintext = crypto::open(message.sealed_body.ciphertext, *session_key, keys_);
  if (!plaintext) {
    fail(400, "sealed_body does not open with this provider's key");
    co_return;
  }
  // What goes back in clear about the body: for a blind request the coordinator must not read
  // it, and error messages quote fields (a tool's name, a schema, the template's complaint).
  const auto about_body = [&](const std::string& text) {
    return message.blind ? std::string("the sealed request cannot be served as it is (details stay sealed)") : text;
  };
  auto sealed_request = proto::decode_sealed_request(plaintext->view());
  if (!sealed_request) {
    fail(400, about_body(sealed_request.error().message));
    co_return;
  }
  const proto::Endpoint endpoint =
      sealed_request->endpoint == "completions" ? proto::Endpoint::completions : proto::Endpoint::chat_completions;
  proto::ApiError api_error;
  auto request =
      proto::parse_completion_request(endpoint, json::bj::value(std::move(sealed_request->body)), &api_error);
  if (!request) {
    fail(400, about_body(api_error.message));
    co_return;
  }
  if (message.blind &&
      (request->model != message.model || !request->max_tokens || *request->max_tokens > message.blind->max_tokens ||
       request->n != message.blind->n || request->ignore_eos != message.blind->ignore_eos)) {
    // The coordinator reserved credit for the terms in clear: a body asking for more would be
    // work nobody pays for (or a proxy that lies to the coordinator).
    fail(400, fmt::format("the sealed body does not keep to the blind terms (model '{}', max_tokens {}, n {}{})",
                          message.model, message.blind->max_tokens, message.blind->n,
                          message.blind->ignore_eos ? ", ignore_eos" : ""));
    co_return;
  }
  if (message.blind && request->logprobs &&
      int64_t{*request->max_tokens} * request->n * (request->top_logprobs + 1) > proto::kMaxLogprobEntries) {
    // The limit the coordinator applies to a plain request it can read: an answer within it fits
    // what the coordinator relays for one request.
    fail(400,
         fmt::format("logprobs for n x max_tokens x (top_logprobs + 1) beyond {} entries", proto::kMaxLogprobEntries));
    co_return;
  }
  if (request->model != facts_.info.id) {
    fail(400, fmt::format("this provider serves '{}', not '{}'", facts_.info.id, request->model));
    co_return;
  }
  in_flight_[request_id] = InFlight{};
  auto engine = co_await ensure_engine();
  if (!engine) {
    in_flight_.erase(request_id);
    fail(500, "model could not be loaded: " + engine.error().message);
    co_return;
  }
  auto generation = to_generation_request(**engine, *request, &api_error);
  if (!generation) {
    in_flight_.erase(request_id);
    outcomes_.at({{"outcome", "refused"}}).add();
    socket->send(proto::encode(proto::InferenceError{request_id, api_error.status, about_body(api_error.message),
                                                     api_error.code, message.blind ? "" : api_error.param}));
    co_return;
  }
  auto run = std::make_shared<ChoiceRun>(**engine, executor_, endpoint, std::move(*generation), request->n,
                                         tool_call_parser(**engine, *request));
  if (auto started = run->start(); !started) {
    in_flight_.erase(request_id);
    fail(400, about_body(started.error().message));
    co_return;
  }
  InFlight& entry = in_flight_[request_id];
  entry.run = run;
  if (entry.cancelled) run->cancel();  // cancelled while the model was loading
  socket->send(proto::encode(proto::InferenceAccepted{request_id}));

  co_await relay_answer(socket, request_id, *session_key, *run, message.blind.has_value());
  in_flight_.erase(request_id);
  last_activity_ = Clock::now();
}

awaitable<void> ProviderAgent::relay_answer(std::shared_ptr<http::WebSocket> socket, const std::string& request_id,
                                            const crypto::PublicKey& session_key, ChoiceRun& run, bool blind) {
  auto fail = [&](int status, const std::string& text) {
    const char* outcome = status == 499 ? "cancelled" : status >= 500 ? "failed" : "refused";
    outcomes_.at({{"outcome", outcome}}).add();
    socket->send(proto::encode(proto::InferenceError{request_id, status, text}));
  };
  const crypto::Channel channel(session_key, keys_);
  uint64_t seq = 0;
  std::vector<std::string> answers(static_cast<size_t>(run.choices()));  // for the receipt; wiped below
  std::vector<std::vector<proto::ToolCall>> calls(answers.size());
  std::vector<engine::FinishEvent> finishes(answers.size());
  std::vector<std::string> reasons(answers.size());
  while (!run.finished()) {
    ChoiceRun::Event event = co_await run.next();
    if (!event.finish) {
      const auto index = static_cast<size_t>(event.index);
      answers[index] += event.text;
      for (const auto& delta : event.tool_calls) proto::append_tool_call(&calls[index], delta);
      proto::ChunkContent content_fields;
      content_fields.seq = seq++;
      content_fields.text = std::move(event.text);
      content_fields.index = event.index;
      content_fields.logprobs = std::move(event.logprobs);
      content_fields.tool_calls = std::move(event.tool_calls);
      std::string content = proto::encode(content_fields);
      proto::InferenceChunk chunk;
      chunk.request_id = request_id;
      chunk.sealed.sender_public_key.assign(keys_.public_key().begin(), keys_.public_key().end());
      chunk.sealed.ciphertext = channel.seal(as_bytes(content));
      crypto::wipe_memory(content.data(), content.size());
      crypto::wipe_memory(content_fields.text.data(), content_fields.text.size());
      for (auto& delta : content_fields.tool_calls) crypto::wipe_memory(delta.arguments.data(), delta.arguments.size());
      socket->send(proto::encode(chunk));
      continue;
    }
    finishes[static_cast<size_t>(event.index)] = *event.finish;
    reasons[static_cast<size_t>(event.index)] = event.finish_reason;
    // One choice that cannot finish ends them all: the answer would be incomplete.
    if (event.finish->reason == engine::FinishReason::cancelled ||
        event.finish->reason == engine::FinishReason::error) {
      run.cancel();
    }
  }
  int completion_tokens = 0;
  const engine::FinishEvent* failed = nullptr;
  for (const auto& finish : finishes) {
    completion_tokens += finish.completion_tokens;
    const bool ended_badly =
        finish.reason == engine::FinishReason::cancelled || finish.reason == engine::FinishReason::error;
    if (ended_badly && (failed == nullptr || finish.reason == engine::FinishReason::error)) failed = &finish;
  }
  log::info("provider: request {} finished {} after {} tokens", request_id,
            engine::finish_reason_name(failed ? failed->reason : finishes[0].reason), completion_tokens);
  requests_served_ += 1;
  tokens_generated_ += static_cast<uint64_t>(completion_tokens);
  if (failed != nullptr && failed->reason == engine::FinishReason::error) {
    // An engine's message may quote the request: a blind one's stays here.
    fail(500, blind ? std::string("engine error (details stay sealed)") : "engine error: " + failed->error);
  } else if (failed != nullptr) {
    fail(499, "cancelled");
  } else {
    for (size_t i = 0; i < answers.size(); ++i) {
      std::string covered = proto::receipt_choice_text(answers[i], calls[i], run.reads_calls());
      crypto::wipe_memory(answers[i].data(), answers[i].size());
      answers[i] = std::move(covered);
    }
    const Finishes ended{finishes, reasons};
    co_await send_completion(socket, request_id, channel, seq, ended, answers, blind);
  }
  for (std::string& answer : answers) crypto::wipe_memory(answer.data(), answer.size());
  for (auto& choice_calls : calls) {
    for (auto& call : choice_calls) crypto::wipe_memory(call.arguments.data(), call.arguments.size());
  }
}

awaitable<void> ProviderAgent::send_completion(std::shared_ptr<http::WebSocket> socket, const std::string& request_id,
                                               const crypto::Channel& channel, uint64_t seq, const Finishes& ended,
                                               const std::vector<std::string>& answers, bool blind) {
  const std::vector<engine::FinishEvent>& finishes = ended.events;
  // Usage travels sealed like the text: nobody on the way can change what will be billed. The
  // receipt lets anyone check later which key produced this answer.
  proto::CompletionContent completion;
  completion.seq = seq;
  completion.prompt_tokens = finishes[0].prompt_tokens;  // the prompt once, as OpenAI counts it
  for (const auto& finish : finishes) completion.completion_tokens += finish.completion_tokens;
  completion.finish_reason = ended.reasons[0];
  if (finishes.size() > 1) completion.finish_reasons = ended.reasons;
  std::string covered = attest::receipt_text(answers);
  completion.response_hash = attest::response_hash(request_id, completion.completion_tokens, covered);
  crypto::wipe_memory(covered.data(), covered.size());
  // An answer without its receipt is one the coordinator cannot vouch for: fail it instead.
  auto receipt = co_await sign_answer(socket, request_id, completion.response_hash, "receipt");
  if (!receipt) co_return;
  completion.receipt_signature = *receipt;
  std::optional<proto::BlindUsage> usage;
  if (blind) {
    // The coordinator cannot open the completion: it bills on these counts, signed in clear.
    usage.emplace();
    usage->prompt_tokens = completion.prompt_tokens;
    usage->completion_tokens = completion.completion_tokens;
    usage->chunks = seq;
    auto signature = co_await sign_answer(
        socket, request_id,
        attest::usage_text(request_id, usage->prompt_tokens, usage->completion_tokens, usage->chunks), "usage");
    if (!signature) co_return;
    usage->signature = *signature;
  }
  outcomes_.at({{"outcome", "completed"}}).add();
  std::string content = proto::encode(completion);
  proto::InferenceComplete complete;
  complete.request_id = request_id;
  complete.sealed.sender_public_key.assign(keys_.public_key().begin(), keys_.public_key().end());
  complete.sealed.ciphertext = channel.seal(as_bytes(content));
  crypto::wipe_memory(content.data(), content.size());
  complete.usage = std::move(usage);
  socket->send(proto::encode(complete));
}

}  // namespace darkbloom::provider
