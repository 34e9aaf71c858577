// Every message between a provider and the coordinator (one JSON object per WebSocket text
// frame, with a "type"), and their encoding and strict decoding. Field names live here and
// nowhere else. docs/protocol.md describes each message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "proto/openai.h"

namespace darkbloom::proto {

inline constexpr int kProtocolVersion = 1;
// Where providers dial the coordinator's WebSocket.
inline constexpr std::string_view kProviderSocketPath = "/ws/provider";
// The frame that carries a body of `body_bytes` to a provider: the body is re-encoded inside a
// SealedRequest, sealed (+40 bytes) and base64-encoded (4/3), plus the inference_request around it.
constexpr size_t frame_bytes_for_body(size_t body_bytes) {
  return (body_bytes * 4 + 2) / 3 + (64u << 10);
}
// The largest frame either side of this protocol decodes: it carries the largest default body.
inline constexpr size_t kMaxFrameBytes = frame_bytes_for_body(kDefaultMaxBodyBytes);
// What a provider that announces no `max_frame_bytes` is taken to accept (the limit before it
// was announced).
inline constexpr size_t kLegacyFrameBytes = 10u << 20;
inline constexpr size_t kMinFrameBytes = 64u << 10;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr size_t kMaxModelIdBytes = 256;
inline constexpr size_t kMaxModelsPerProvider = 64;

// Bytes sealed with crypto_box: the sender's X25519 public key and nonce ‖ MAC + ciphertext.
// On the wire both are standard base64.
struct SealedPayload {
  std::vector<uint8_t> sender_public_key;  // 32 bytes; wire name "ephemeral_public_key"
  std::vector<uint8_t> ciphertext;         // nonce (24) ‖ MAC (16) ‖ box
};

struct HardwareInfo {
  std::string cpu;
  int cores = 0;
  double memory_gb = 0;
  std::string gpu;                  // empty when none
  double memory_bandwidth_gbs = 0;  // measured; 0 when unknown
};

struct ModelInfo {
  std::string id;
  uint64_t size_bytes = 0;
  std::string quantization;  // "q4_k_m", "q8_0", ...
  std::string weight_hash;   // hex SHA-256 of the model file
  // Optional: hex Merkle root of the file's 1 MiB chunks (crypto/merkle.h). Model challenges are
  // checked against it, or against the catalogue's root when the model is catalogued.
  std::string merkle_root;
};

// Model challenges: a challenge names chunks of a model's file, and the answer carries each
// chunk's bytes and its Merkle path, so only a provider that holds the file can answer.
inline constexpr size_t kMaxChallengeChunks = 4;
// What a provider proves at most: a burst of chunks, then one chunk per 10 s (so a coordinator
// cannot copy a private model out at the link's speed). Coordinators ask within it.
inline constexpr double kProofChunkBurst = 16;
inline constexpr double kProofChunksPerSecond = 0.1;
struct ModelChunkRequest {
  std::string model;
  uint64_t index = 0;
};
struct ModelChunkProof {
  std::string model;
  uint64_t index = 0;
  std::vector<uint8_t> chunk;     // the chunk's bytes (base64 on the wire), at most 1 MiB
  std::vector<std::string> path;  // hex sibling hashes, leaf to root (MerkleTree::path)
};

// ---- provider → coordinator ----

// The signed attestation a provider registers with: the canonical document as the exact string
// that was signed, and, after a key rotation, the old key's statement vouching for the new one.
struct AttestationBundle {
  std::string document;            // canonical JSON, verified byte for byte
  std::string signature;           // base64 DER ECDSA over `document`
  std::string rotation_statement;  // optional canonical JSON
  std::string rotation_signature;  // base64, by the old key
  // Optional, from a TPM-held key (the `hardware` level): the TPM's RSA EK certificate (DER) and
  // the key's marshalled TPMT_PUBLIC. Not signed: they prove themselves (a chain, and a credential
  // only that TPM can activate).
  std::vector<uint8_t> ek_certificate;
  std::vector<uint8_t> key_public;
};
inline constexpr size_t kMaxEkCertificateBytes = 4096;
inline constexpr size_t kMaxKeyPublicBytes = 1024;

struct Register {
  int protocol_version = kProtocolVersion;
  std::string provider_version;
  std::string backend;  // "darkbloom-cpu"
  HardwareInfo hardware;
  std::vector<ModelInfo> models;
  std::vector<uint8_t> encryption_key;  // X25519 public key, 32 bytes
  std::optional<AttestationBundle> attestation;
  double prefill_tps = 0;
  double decode_tps = 0;
  int max_concurrency = 1;
  // An API key of the operator's account: payouts for this provider's work go there. Sent at
  // registration only; the coordinator keeps the account id, not the key.
  std::string account_token;
  // The largest WebSocket message this provider reads; the coordinator sends nothing larger.
  size_t max_frame_bytes = kLegacyFrameBytes;
  // What this provider can do beyond plain text (kFeature* names); requests that need more are
  // not routed to it. Providers from before a feature existed announce nothing.
  std::vector<std::string> features;
};

// Features a provider may announce, and as bits for routing.
inline constexpr std::string_view kFeatureResponseFormat = "response_format";  // json_object, json_schema
inline constexpr std::string_view kFeatureLogprobs = "logprobs";
inline constexpr std::string_view kFeatureChoices = "n";  // several choices per request
inline constexpr uint32_t kFeatureBitResponseFormat = 1;
inline constexpr uint32_t kFeatureBitLogprobs = 2;
inline constexpr uint32_t kFeatureBitChoices = 4;
inline constexpr std::string_view kFeatureTools = "tools";  // tools, tool_choice, tool-call history
inline constexpr uint32_t kFeatureBitTools = 8;
// Coordinator-blind requests: the body is sealed by the consumer's proxy, the answer sealed back
// to it, and the usage signed in clear for billing (BlindTerms, BlindUsage).
inline constexpr std::string_view kFeatureBlind = "blind";
inline constexpr uint32_t kFeatureBitBlind = 16;
// The bits of the features named (unknown names are ignored), and back ("response_format, n").
uint32_t feature_bits(const std::vector<std::string>& features);
std::string feature_names(uint32_t bits);
// The names of features this build of the provider has.
std::vector<std::string> provider_features();

struct Heartbeat {
  std::string status;  // "idle" | "serving"
  std::string active_model;
  uint64_t requests_served = 0;
  uint64_t tokens_generated = 0;
  int running = 0;
  int waiting = 0;
  int64_t kv_tokens_used = 0;
  int64_t kv_tokens_free = 0;
  double memory_pressure = 0;  // 0..1
  double cpu_usage = 0;        // 0..1
};

struct InferenceAccepted {
  std::string request_id;
};

struct InferenceChunk {
  std::string request_id;
  SealedPayload sealed;  // opens to ChunkContent
};

// What a blind request's answer costs, in clear for the coordinator, which cannot open the
// answer: signed by the provider's identity key over attest::usage_text(request_id, ...).
struct BlindUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  uint64_t chunks = 0;    // inference_chunk frames sent for the request (the sealed `seq`)
  std::string signature;  // base64 DER ECDSA
};

struct InferenceComplete {
  std::string request_id;
  SealedPayload sealed;             // opens to CompletionContent: usage is sealed so the wire cannot forge it
  std::optional<BlindUsage> usage;  // a blind request's only (wire: "usage", "usage_signature")
};

struct InferenceError {
  std::string request_id;
  int status_code = 500;  // 400 bad body, 499 cancelled, 500 engine error, 503 unsafe posture
  std::string message;
  std::string code;  // optional: "context_length_exceeded" marks a request no provider can serve
  // optional: the request field a 400 is about. Such a 400 is the request's own fault (a schema
  // the provider cannot compile, ...): it goes to the client as it is, with no other provider tried.
  std::string param;
};

// Answer to a challenge: `signature` covers nonce + timestamp; `status` is a canonical status
// document (fresh posture and hashes) with its own signature.
struct AttestationResponse {
  std::string nonce;
  std::string timestamp;
  std::string signature;
  std::string status;
  std::string status_signature;
  std::vector<ModelChunkProof> model_proofs;  // one per chunk the challenge named, in its order
};

// Answers credential_challenge: the credential ActivateCredential gave back, or why it failed.
struct CredentialResponse {
  std::vector<uint8_t> credential;  // at most 32 bytes
  std::string error;                // set instead when the TPM refused
};

struct LoadModelStatus {
  std::string model;
  std::string status;  // "started" | "succeeded" | "failed"
  std::string message;
};

// A message type this side does not know: ignored and logged, never an error.
struct UnknownMessage {
  std::string type;
};

// The provider is stopping: route nothing new to it; it finishes what it has. (A message of its
// own, not a heartbeat status, so that a coordinator that does not know it just ignores it.)
struct Draining {};

using ProviderMessage =
    std::variant<Register, Heartbeat, InferenceAccepted, InferenceChunk, InferenceComplete, InferenceError,
                 LoadModelStatus, AttestationResponse, CredentialResponse, Draining, UnknownMessage>;

// ---- coordinator → provider ----

// A model of a register the coordinator will not serve from this provider (its Merkle root
// differs from the catalogue's, ...), and why.
struct RefusedModel {
  std::string model;
  std::string reason;
};

struct Registered {
  std::string provider_id;
  int protocol_version = kProtocolVersion;
  int heartbeat_interval_ms = 5000;
  std::vector<RefusedModel> refused_models;  // optional; the others are registered
};

// The terms of a blind request, in clear: the coordinator reserved credit for them, so the
// provider refuses a sealed body that asks for more.
struct BlindTerms {
  int max_tokens = 0;  // per choice, as OpenAI's max_tokens
  int n = 1;
  // Generation goes on past end-of-sequence tokens, which render as no text: the coordinator
  // then bills them without calling the provider a liar (docs/billing.md).
  bool ignore_eos = false;
};

struct InferenceRequest {
  std::string request_id;  // new for every attempt
  std::string model;
  SealedPayload sealed_body;  // opens to SealedRequest
  // Set for a blind request: the body was sealed by the consumer's proxy, the answer is sealed
  // back to that key (sealed_body's ephemeral key, as always), and the completion carries BlindUsage.
  std::optional<BlindTerms> blind;
};

struct Cancel {
  std::string request_id;
};

struct AttestationChallenge {
  std::string nonce;                            // base64 of 32 random bytes, single use
  std::string timestamp;                        // RFC 3339 UTC
  std::vector<ModelChunkRequest> model_chunks;  // optional: chunks to prove, at most kMaxChallengeChunks
};

struct LoadModel {
  std::string model;
};

// Credential activation (the `hardware` level): MakeCredential's outputs for the provider's EK
// and key, marshalled as TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET.
struct CredentialChallenge {
  std::vector<uint8_t> credential_blob;
  std::vector<uint8_t> encrypted_secret;
};

struct TrustStatus {
  std::string trust_level;  // "none" | "self_signed" | "hardware"
  std::string reason;
};

// What one of the provider's answers earned its payout account, once the request was settled.
struct Earned {
  std::string request_id;
  int64_t payout_micro_usd = 0;
};

using CoordinatorMessage = std::variant<Registered, InferenceRequest, Cancel, LoadModel, TrustStatus,
                                        AttestationChallenge, CredentialChallenge, Earned, UnknownMessage>;

// ---- sealed contents ----

// What an inference_request's sealed_body opens to: which endpoint and the OpenAI body.
struct SealedRequest {
  std::string endpoint;  // "chat.completions" | "completions"
  json::bj::object body;
};

// What an inference_chunk opens to. `seq` counts the attempt's chunks from 0, so a chunk that is
// replayed, reordered or dropped on the way is detected.
struct ChunkContent {
  uint64_t seq = 0;
  std::string text;
  int index = 0;                          // the choice (request with n > 1), 0 to kMaxChoices - 1
  json::bj::value logprobs;               // null, or the OpenAI choice's logprobs object for this text's tokens
  std::vector<ToolCallDelta> tool_calls;  // pieces of the choice's tool calls (chat with tools)
};

// What an inference_complete opens to; `seq` is the number of chunks sent before it. The
// receipt is the attestation key's signature over response_hash (see attest::response_hash).
struct CompletionContent {
  uint64_t seq = 0;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::string finish_reason;                // "stop" | "length" | "tool_calls" (of the first choice)
  std::vector<std::string> finish_reasons;  // with n > 1: one per choice, in index order
  std::string response_hash;                // optional: hex SHA-256 of "<request_id>:<completion_tokens>:<text>"
  std::string receipt_signature;            // optional: base64 DER ECDSA over response_hash
};

std::string encode(const Register& message);
std::string encode(const Heartbeat& message);
std::string encode(const InferenceAccepted& message);
std::string encode(const InferenceChunk& message);
std::string encode(const InferenceComplete& message);
std::string encode(const InferenceError& message);
std::string encode(const LoadModelStatus& message);
std::string encode(const AttestationResponse& message);
std::string encode(const Registered& message);
std::string encode(const InferenceRequest& message);
std::string encode(const Cancel& message);
std::string encode(const LoadModel& message);
std::string encode(const TrustStatus& message);
std::string encode(const Earned& message);
std::string encode(const Draining& message);
std::string encode(const AttestationChallenge& message);
std::string encode(const CredentialChallenge& message);
std::string encode(const CredentialResponse& message);
std::string encode(const SealedRequest& content);
std::string encode(const ChunkContent& content);
std::string encode(const CompletionContent& content);

// Strict decoding: malformed JSON, a missing or mistyped required field, a value out of range or
// an unsupported protocol version is an error naming the field. Unknown fields are ignored.
// A sealed payload as JSON ({"ephemeral_public_key", "ciphertext"}, both base64), and read back
// from `parent[key]` (a 32-byte key and at least nonce and MAC; a problem fails `parent`).
json::bj::object sealed_to_json(const SealedPayload& sealed);
SealedPayload sealed_from(json::ObjectReader& parent, std::string_view key);

Result<ProviderMessage> decode_provider_message(std::string_view frame);
Result<CoordinatorMessage> decode_coordinator_message(std::string_view frame);
Result<SealedRequest> decode_sealed_request(std::string_view plaintext);
Result<ChunkContent> decode_chunk_content(std::string_view plaintext);
Result<CompletionContent> decode_completion_content(std::string_view plaintext);

// The "type" of a message, for logs.
std::string_view message_type(const ProviderMessage& message);
std::string_view message_type(const CoordinatorMessage& message);

}  // namespace darkbloom::proto
