#include "proto/provider_messages.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/encoding.h"

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

constexpr size_t kMaxTextBytes = 4096;              // free-text fields: versions, messages, names
constexpr size_t kMaxSealedBytes = kMaxFrameBytes;  // base64 of a sealed body within a frame
constexpr size_t kMaxFeatures = 32;                 // names in register.features

std::string dump(const bj::object& object) {
  return bj::serialize(object);
}

Result<bj::object> parse_object(std::string_view frame, std::string_view what, size_t max_depth = json::kMaxDepth) {
  if (frame.size() > kMaxFrameBytes)
    return make_error(Errc::out_of_range, fmt::format("{} is larger than {} bytes", what, kMaxFrameBytes));
  auto value = json::parse(frame, what, max_depth);
  if (!value) return value.error();
  if (!value->is_object()) return make_error(Errc::bad_format, std::string(what) + " is not a JSON object");
  return std::move(value->as_object());
}

std::string request_id(json::ObjectReader& r) {
  std::string id = r.string("request_id", kMaxRequestIdBytes);
  if (r.ok() && id.empty()) r.fail("request_id", "must not be empty");
  return id;
}

bool is_lower_hex(std::string_view text, size_t length) {
  return text.size() == length &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The entries of an optional array of objects (at most `max_items`), each read by `read`, which
// returns false after failing its reader; the first failure is recorded on `r`.
template <class T, class Read>
std::vector<T> object_list(json::ObjectReader& r, std::string_view key, size_t max_items, Read read) {
  std::vector<T> out;
  if (!r.has(key)) return out;
  const bj::array& items = r.array(key, max_items);
  for (size_t i = 0; r.ok() && i < items.size(); ++i) {
    if (!items[i].is_object()) {
      r.fail(key, "entries must be objects");
      break;
    }
    json::ObjectReader item(items[i].as_object(), fmt::format("{}[{}]", r.path(key), i));
    T value;
    read(item, value);
    if (!item.ok()) {
      r.fail(key, item.error().message);
      break;
    }
    out.push_back(std::move(value));
  }
  return out;
}

// An optional base64 field of at most `max_bytes` decoded bytes; empty when absent.
std::vector<uint8_t> optional_base64(json::ObjectReader& r, std::string_view key, size_t max_bytes) {
  const auto text = r.optional_string(key, (max_bytes + 2) / 3 * 4);
  if (!text || !r.ok()) return {};
  auto bytes = base64_decode(*text);
  if (!bytes || bytes->size() > max_bytes) {
    r.fail(key, fmt::format("must be base64 of at most {} bytes", max_bytes));
    return {};
  }
  return std::move(*bytes);
}

// A chunk index: below 2^44 (crypto::verify_merkle_path's bound).
uint64_t chunk_index(json::ObjectReader& r) {
  return static_cast<uint64_t>(r.integer("index", 0, (int64_t{1} << 44) - 1));
}

void read_chunk_request(json::ObjectReader& r, ModelChunkRequest& request) {
  request.model = r.string("model", kMaxModelIdBytes);
  request.index = chunk_index(r);
}

void read_chunk_proof(json::ObjectReader& r, ModelChunkProof& proof) {
  proof.model = r.string("model", kMaxModelIdBytes);
  proof.index = chunk_index(r);
  const std::string chunk = r.string("chunk", ((1u << 20) + 2) / 3 * 4);
  if (r.ok()) {
    auto bytes = base64_decode(chunk);
    if (!bytes) {
      r.fail("chunk", "must be base64");
    } else {
      proof.chunk = std::move(*bytes);
    }
  }
  // 44 levels at most (2^44 chunks).
  const bj::array& path = r.array("path", 44);
  for (size_t i = 0; r.ok() && i < path.size(); ++i) {
    if (!path[i].is_string() || !is_lower_hex(path[i].as_string(), 64)) {
      r.fail("path", "entries must be 64 lowercase hex digits");
      break;
    }
    proof.path.emplace_back(path[i].as_string());
  }
}

template <class T>
Result<ProviderMessage> finish(json::ObjectReader& r, T message) {
  if (!r.ok()) return r.error();
  return ProviderMessage{std::move(message)};
}

template <class T>
Result<CoordinatorMessage> finish_coordinator(json::ObjectReader& r, T message) {
  if (!r.ok()) return r.error();
  return CoordinatorMessage{std::move(message)};
}

Register decode_register(json::ObjectReader& r) {
  Register m;
  m.protocol_version = static_cast<int>(r.integer("protocol_version", 0, 1000000));
  if (r.ok() && m.protocol_version != kProtocolVersion) {
    r.fail("protocol_version",
           fmt::format("{} is not supported (this coordinator speaks {})", m.protocol_version, kProtocolVersion));
  }
  m.provider_version = r.string("provider_version", 64);
  m.backend = r.string("backend", 64);
  const bj::object& hardware = r.object("hardware");
  if (r.ok()) {
    json::ObjectReader h(hardware, "register.hardware");
    m.hardware.cpu = h.string("cpu", 256);
    m.hardware.cores = static_cast<int>(h.integer("cores", 1, 1 << 16));
    m.hardware.memory_gb = h.number("memory_gb", 0, 1 << 20);
    m.hardware.gpu = h.optional_string("gpu", 256).value_or("");
    m.hardware.memory_bandwidth_gbs = h.optional_number("memory_bandwidth_gbs", 0, 1e5).value_or(0);
    if (!h.ok()) r.fail("hardware", h.error().message);
  }
  const bj::array& models = r.array("models", kMaxModelsPerProvider);
  for (size_t i = 0; r.ok() && i < models.size(); ++i) {
    if (!models[i].is_object()) {
      r.fail("models", "entries must be objects");
      break;
    }
    json::ObjectReader mr(models[i].as_object(), fmt::format("register.models[{}]", i));
    ModelInfo model;
    model.id = mr.string("id", kMaxModelIdBytes);
    model.size_bytes = static_cast<uint64_t>(mr.integer("size_bytes", 0, int64_t{1} << 50));
    model.quantization = mr.string("quantization", 32);
    model.weight_hash = mr.string("weight_hash", 64);
    model.merkle_root = mr.optional_string("merkle_root", 64).value_or("");
    if (mr.ok() && model.id.empty()) mr.fail("id", "must not be empty");
    if (mr.ok() &&
        std::any_of(m.models.begin(), m.models.end(), [&](const ModelInfo& o) { return o.id == model.id; })) {
      mr.fail("id", "appears twice");
    }
    if (mr.ok() && !model.merkle_root.empty() && !is_lower_hex(model.merkle_root, 64)) {
      mr.fail("merkle_root", "must be 64 lowercase hex digits");
    }
    if (!mr.ok()) {
      r.fail("models", mr.error().message);
      break;
    }
    m.models.push_back(std::move(model));
  }
  if (r.ok() && m.models.empty()) r.fail("models", "must list at least one model");
  const std::string key = r.string("encryption_key", 64);
  if (r.ok()) {
    auto bytes = base64_decode(key);
    if (!bytes || bytes->size() != 32) {
      r.fail("encryption_key", "must be a 32-byte X25519 public key in base64");
    } else {
      m.encryption_key = std::move(*bytes);
    }
  }
  if (const bj::value* attestation = r.find("attestation")) {
    if (!attestation->is_object()) {
      r.fail("attestation", "must be an object");
    } else {
      json::ObjectReader a(attestation->as_object(), "register.attestation");
      AttestationBundle bundle;
      bundle.document = a.string("document", 64 * 1024);
      bundle.signature = a.string("signature", 256);
      bundle.rotation_statement = a.optional_string("rotation_statement", 4096).value_or("");
      bundle.rotation_signature = a.optional_string("rotation_signature", 256).value_or("");
      bundle.ek_certificate = optional_base64(a, "ek_certificate", kMaxEkCertificateBytes);
      bundle.key_public = optional_base64(a, "key_public", kMaxKeyPublicBytes);
      if (a.ok() && bundle.ek_certificate.empty() != bundle.key_public.empty()) {
        a.fail("ek_certificate", "comes with key_public, and the other way round");
      }
      if (!a.ok()) {
        r.fail("attestation", a.error().message);
      } else {
        m.attestation = std::move(bundle);
      }
    }
  }
  m.prefill_tps = r.number("prefill_tps", 0, 1e7);
  m.decode_tps = r.number("decode_tps", 0, 1e7);
  m.max_concurrency = static_cast<int>(r.integer("max_concurrency", 1, 4096));
  m.account_token = r.optional_string("account_token", 256).value_or("");
  // Larger announcements are taken as the largest frame this protocol decodes.
  m.max_frame_bytes = std::min(
      kMaxFrameBytes,
      static_cast<size_t>(
          r.optional_integer("max_frame_bytes", kMinFrameBytes, int64_t{1} << 30).value_or(kLegacyFrameBytes)));
  if (const bj::value* features = r.find("features")) {
    if (!features->is_array() || features->as_array().size() > kMaxFeatures) {
      r.fail("features", fmt::format("must be an array of at most {} names", kMaxFeatures));
    } else {
      for (const bj::value& name : features->as_array()) {
        if (!name.is_string() || name.as_string().empty() || name.as_string().size() > 64) {
          r.fail("features", "must hold names of 1 to 64 bytes");
          break;
        }
        m.features.emplace_back(name.as_string());
      }
    }
  }
  return m;
}

Heartbeat decode_heartbeat(json::ObjectReader& r) {
  Heartbeat m;
  m.status = r.string("status", 16);
  if (r.ok() && m.status != "idle" && m.status != "serving") r.fail("status", "must be idle or serving");
  m.active_model = r.optional_string("active_model", kMaxModelIdBytes).value_or("");
  m.requests_served = static_cast<uint64_t>(r.optional_integer("requests_served", 0, INT64_MAX).value_or(0));
  m.tokens_generated = static_cast<uint64_t>(r.optional_integer("tokens_generated", 0, INT64_MAX).value_or(0));
  m.running = static_cast<int>(r.optional_integer("running", 0, 1 << 20).value_or(0));
  m.waiting = static_cast<int>(r.optional_integer("waiting", 0, 1 << 20).value_or(0));
  m.kv_tokens_used = r.optional_integer("kv_tokens_used", 0, int64_t{1} << 40).value_or(0);
  m.kv_tokens_free = r.optional_integer("kv_tokens_free", 0, int64_t{1} << 40).value_or(0);
  m.memory_pressure = r.optional_number("memory_pressure", 0, 1).value_or(0);
  m.cpu_usage = r.optional_number("cpu_usage", 0, 1).value_or(0);
  return m;
}

}  // namespace

bj::object sealed_to_json(const SealedPayload& sealed) {
  return {{"ephemeral_public_key", base64_encode(sealed.sender_public_key)},
          {"ciphertext", base64_encode(sealed.ciphertext)}};
}

SealedPayload sealed_from(json::ObjectReader& parent, std::string_view key) {
  SealedPayload sealed;
  const bj::object& object = parent.object(key);
  if (!parent.ok()) return sealed;
  json::ObjectReader r(object, parent.path(key));
  const std::string public_key = r.string("ephemeral_public_key", 64);
  const std::string ciphertext = r.string("ciphertext", kMaxSealedBytes);
  if (!r.ok()) {
    parent.fail(key, r.error().message);
    return sealed;
  }
  auto key_bytes = base64_decode(public_key);
  auto cipher_bytes = base64_decode(ciphertext);
  if (!key_bytes || key_bytes->size() != 32) {
    parent.fail(key, "ephemeral_public_key must be 32 bytes of base64");
  } else if (!cipher_bytes || cipher_bytes->size() < 40) {
    parent.fail(key, "ciphertext must be base64 of nonce, MAC and box (at least 40 bytes)");
  } else {
    sealed.sender_public_key = std::move(*key_bytes);
    sealed.ciphertext = std::move(*cipher_bytes);
  }
  return sealed;
}

uint32_t feature_bits(const std::vector<std::string>& features) {
  uint32_t bits = 0;
  for (const auto& feature : features) {
    if (feature == kFeatureResponseFormat) bits |= kFeatureBitResponseFormat;
    if (feature == kFeatureLogprobs) bits |= kFeatureBitLogprobs;
    if (feature == kFeatureChoices) bits |= kFeatureBitChoices;
    if (feature == kFeatureTools) bits |= kFeatureBitTools;
    if (feature == kFeatureBlind) bits |= kFeatureBitBlind;
  }
  return bits;
}

std::string feature_names(uint32_t bits) {
  std::string names;
  const std::pair<uint32_t, std::string_view> known[] = {{kFeatureBitResponseFormat, kFeatureResponseFormat},
                                                         {kFeatureBitLogprobs, kFeatureLogprobs},
                                                         {kFeatureBitChoices, kFeatureChoices},
                                                         {kFeatureBitTools, kFeatureTools},
                                                         {kFeatureBitBlind, kFeatureBlind}};
  for (const auto& [bit, name] : known) {
    if ((bits & bit) == 0) continue;
    if (!names.empty()) names += ", ";
    names += name;
  }
  return names;
}

std::vector<std::string> provider_features() {
  return {std::string(kFeatureResponseFormat), std::string(kFeatureLogprobs), std::string(kFeatureChoices),
          std::string(kFeatureTools), std::string(kFeatureBlind)};
}

std::string encode(const Register& m) {
  bj::array models;
  for (const auto& model : m.models) {
    bj::object entry{{"id", model.id},
                     {"size_bytes", model.size_bytes},
                     {"quantization", model.quantization},
                     {"weight_hash", model.weight_hash}};
    if (!model.merkle_root.empty()) entry["merkle_root"] = model.merkle_root;
    models.push_back(std::move(entry));
  }
  bj::object hardware{{"cpu", m.hardware.cpu}, {"cores", m.hardware.cores}, {"memory_gb", m.hardware.memory_gb}};
  if (!m.hardware.gpu.empty()) hardware["gpu"] = m.hardware.gpu;
  if (m.hardware.memory_bandwidth_gbs > 0) hardware["memory_bandwidth_gbs"] = m.hardware.memory_bandwidth_gbs;
  bj::object object{{"type", "register"},
                    {"protocol_version", m.protocol_version},
                    {"provider_version", m.provider_version},
                    {"backend", m.backend},
                    {"hardware", std::move(hardware)},
                    {"models", std::move(models)},
                    {"encryption_key", base64_encode(m.encryption_key)},
                    {"prefill_tps", m.prefill_tps},
                    {"decode_tps", m.decode_tps},
                    {"max_concurrency", m.max_concurrency},
                    {"max_frame_bytes", m.max_frame_bytes}};
  if (!m.features.empty()) {
    bj::array features;
    for (const auto& feature : m.features) features.push_back(bj::value(feature));
    object["features"] = std::move(features);
  }
  if (m.attestation) {
    bj::object attestation{{"document", m.attestation->document}, {"signature", m.attestation->signature}};
    if (!m.attestation->rotation_statement.empty()) {
      attestation["rotation_statement"] = m.attestation->rotation_statement;
      attestation["rotation_signature"] = m.attestation->rotation_signature;
    }
    if (!m.attestation->ek_certificate.empty()) {
      attestation["ek_certificate"] = base64_encode(m.attestation->ek_certificate);
      attestation["key_public"] = base64_encode(m.attestation->key_public);
    }
    object["attestation"] = std::move(attestation);
  }
  if (!m.account_token.empty()) object["account_token"] = m.account_token;
  return dump(object);
}

std::string encode(const Heartbeat& m) {
  bj::object object{{"type", "heartbeat"},
                    {"status", m.status},
                    {"requests_served", m.requests_served},
                    {"tokens_generated", m.tokens_generated},
                    {"running", m.running},
                    {"waiting", m.waiting},
                    {"kv_tokens_used", m.kv_tokens_used},
                    {"kv_tokens_free", m.kv_tokens_free},
                    {"memory_pressure", m.memory_pressure},
                    {"cpu_usage", m.cpu_usage}};
  if (!m.active_model.empty()) object["active_model"] = m.active_model;
  return dump(object);
}

std::string encode(const InferenceAccepted& m) {
  return dump({{"type", "inference_accepted"}, {"request_id", m.request_id}});
}

std::string encode(const InferenceChunk& m) {
  return dump({{"type", "inference_chunk"}, {"request_id", m.request_id}, {"sealed", sealed_to_json(m.sealed)}});
}

std::string encode(const InferenceComplete& m) {
  bj::object object{{"type", "inference_complete"}, {"request_id", m.request_id}, {"sealed", sealed_to_json(m.sealed)}};
  if (m.usage) {
    object["usage"] = bj::object{{"prompt_tokens", m.usage->prompt_tokens},
                                 {"completion_tokens", m.usage->completion_tokens},
                                 {"chunks", m.usage->chunks}};
    object["usage_signature"] = m.usage->signature;
  }
  return dump(object);
}

std::string encode(const InferenceError& m) {
  bj::object object{{"type", "inference_error"},
                    {"request_id", m.request_id},
                    {"status_code", m.status_code},
                    {"message", m.message}};
  if (!m.code.empty()) object["code"] = m.code;
  if (!m.param.empty()) object["param"] = m.param;
  return dump(object);
}

std::string encode(const LoadModelStatus& m) {
  bj::object object{{"type", "load_model_status"}, {"model", m.model}, {"status", m.status}};
  if (!m.message.empty()) object["message"] = m.message;
  return dump(object);
}

std::string encode(const Registered& m) {
  bj::object object{{"type", "registered"},
                    {"provider_id", m.provider_id},
                    {"protocol_version", m.protocol_version},
                    {"heartbeat_interval_ms", m.heartbeat_interval_ms}};
  if (!m.refused_models.empty()) {
    bj::array refused;
    for (const auto& model : m.refused_models)
      refused.push_back(bj::object{{"model", model.model}, {"reason", model.reason}});
    object["refused_models"] = std::move(refused);
  }
  return dump(object);
}

std::string encode(const InferenceRequest& m) {
  bj::object object{{"type", "inference_request"},
                    {"request_id", m.request_id},
                    {"model", m.model},
                    {"sealed_body", sealed_to_json(m.sealed_body)}};
  if (m.blind) {
    bj::object terms{{"max_tokens", m.blind->max_tokens}, {"n", m.blind->n}};
    if (m.blind->ignore_eos) terms["ignore_eos"] = true;
    object["blind"] = std::move(terms);
  }
  return dump(object);
}

std::string encode(const Cancel& m) {
  return dump({{"type", "cancel"}, {"request_id", m.request_id}});
}
std::string encode(const LoadModel& m) {
  return dump({{"type", "load_model"}, {"model", m.model}});
}

std::string encode(const TrustStatus& m) {
  bj::object object{{"type", "trust_status"}, {"trust_level", m.trust_level}};
  if (!m.reason.empty()) object["reason"] = m.reason;
  return dump(object);
}

std::string encode(const Draining&) {
  return dump({{"type", "draining"}});
}

std::string encode(const Earned& m) {
  return dump({{"type", "earned"}, {"request_id", m.request_id}, {"payout_micro_usd", m.payout_micro_usd}});
}

std::string encode(const AttestationResponse& m) {
  bj::object object{{"type", "attestation_response"}, {"nonce", m.nonce},   {"timestamp", m.timestamp},
                    {"signature", m.signature},       {"status", m.status}, {"status_signature", m.status_signature}};
  if (!m.model_proofs.empty()) {
    bj::array proofs;
    for (const auto& proof : m.model_proofs) {
      bj::array path;
      for (const auto& hash : proof.path) path.push_back(bj::value(hash));
      proofs.push_back(bj::object{{"model", proof.model},
                                  {"index", proof.index},
                                  {"chunk", base64_encode(proof.chunk)},
                                  {"path", std::move(path)}});
    }
    object["model_proofs"] = std::move(proofs);
  }
  return dump(object);
}

std::string encode(const CredentialChallenge& m) {
  return dump({{"type", "credential_challenge"},
               {"credential_blob", base64_encode(m.credential_blob)},
               {"encrypted_secret", base64_encode(m.encrypted_secret)}});
}

std::string encode(const CredentialResponse& m) {
  bj::object object{{"type", "credential_response"}};
  if (m.error.empty()) {
    object["credential"] = base64_encode(m.credential);
  } else {
    object["error"] = m.error;
  }
  return dump(object);
}

std::string encode(const AttestationChallenge& m) {
  bj::object object{{"type", "attestation_challenge"}, {"nonce", m.nonce}, {"timestamp", m.timestamp}};
  if (!m.model_chunks.empty()) {
    bj::array chunks;
    for (const auto& chunk : m.model_chunks)
      chunks.push_back(bj::object{{"model", chunk.model}, {"index", chunk.index}});
    object["model_chunks"] = std::move(chunks);
  }
  return dump(object);
}

std::string encode(const SealedRequest& m) {
  return dump({{"endpoint", m.endpoint}, {"body", m.body}});
}
std::string encode(const ChunkContent& m) {
  bj::object object{{"seq", m.seq}, {"text", m.text}};
  if (m.index != 0) object["index"] = m.index;
  if (!m.logprobs.is_null()) object["logprobs"] = m.logprobs;
  if (!m.tool_calls.empty()) {
    bj::array calls;
    for (const ToolCallDelta& delta : m.tool_calls) {
      bj::object call{{"index", delta.index}, {"arguments", delta.arguments}};
      if (!delta.id.empty()) call["id"] = delta.id;
      if (!delta.name.empty()) call["name"] = delta.name;
      calls.push_back(std::move(call));
    }
    object["tool_calls"] = std::move(calls);
  }
  return dump(object);
}

std::string encode(const CompletionContent& m) {
  bj::object object{{"seq", m.seq},
                    {"prompt_tokens", m.prompt_tokens},
                    {"completion_tokens", m.completion_tokens},
                    {"finish_reason", m.finish_reason}};
  if (!m.finish_reasons.empty()) {
    bj::array reasons;
    for (const auto& reason : m.finish_reasons) reasons.push_back(bj::value(reason));
    object["finish_reasons"] = std::move(reasons);
  }
  if (!m.response_hash.empty()) {
    object["response_hash"] = m.response_hash;
    object["receipt_signature"] = m.receipt_signature;
  }
  return dump(object);
}

Result<ProviderMessage> decode_provider_message(std::string_view frame) {
  auto object = parse_object(frame, "provider message");
  if (!object) return object.error();
  json::ObjectReader top(*object, "");
  const std::string type = top.string("type", 64);
  if (!top.ok()) return top.error();
  json::ObjectReader r(*object, type);
  if (type == "register") return finish(r, decode_register(r));
  if (type == "heartbeat") return finish(r, decode_heartbeat(r));
  if (type == "draining") return finish(r, Draining{});
  if (type == "inference_accepted") return finish(r, InferenceAccepted{request_id(r)});
  if (type == "inference_chunk") {
    InferenceChunk m;
    m.request_id = request_id(r);
    m.sealed = sealed_from(r, "sealed");
    return finish(r, std::move(m));
  }
  if (type == "inference_complete") {
    InferenceComplete m;
    m.request_id = request_id(r);
    m.sealed = sealed_from(r, "sealed");
    if (r.has("usage") && r.ok()) {
      const bj::object& usage = r.object("usage");
      json::ObjectReader u(usage, r.path("usage"));
      BlindUsage blind;
      blind.prompt_tokens = u.integer("prompt_tokens", 0, int64_t{1} << 40);
      blind.completion_tokens = u.integer("completion_tokens", 0, int64_t{1} << 40);
      blind.chunks = static_cast<uint64_t>(u.integer("chunks", 0, int64_t{1} << 40));
      if (!u.ok()) r.fail("usage", u.error().message);
      blind.signature = r.string("usage_signature", 256);
      m.usage = std::move(blind);
    }
    return finish(r, std::move(m));
  }
  if (type == "inference_error") {
    InferenceError m;
    m.request_id = request_id(r);
    m.status_code = static_cast<int>(r.integer("status_code", 400, 599));
    m.message = r.string("message", kMaxTextBytes);
    m.code = r.optional_string("code", 64).value_or("");
    m.param = r.optional_string("param", 128).value_or("");
    return finish(r, std::move(m));
  }
  if (type == "load_model_status") {
    LoadModelStatus m;
    m.model = r.string("model", kMaxModelIdBytes);
    m.status = r.string("status", 16);
    if (r.ok() && m.status != "started" && m.status != "succeeded" && m.status != "failed") {
      r.fail("status", "must be started, succeeded or failed");
    }
    m.message = r.optional_string("message", kMaxTextBytes).value_or("");
    return finish(r, std::move(m));
  }
  if (type == "credential_response") {
    CredentialResponse m;
    m.credential = optional_base64(r, "credential", 32);
    m.error = r.optional_string("error", kMaxTextBytes).value_or("");
    if (r.ok() && m.credential.empty() == m.error.empty()) r.fail("credential", "exactly one of credential and error");
    return finish(r, std::move(m));
  }
  if (type == "attestation_response") {
    AttestationResponse m;
    m.nonce = r.string("nonce", 128);
    m.timestamp = r.string("timestamp", 64);
    m.signature = r.string("signature", 256);
    m.status = r.string("status", 64 * 1024);
    m.status_signature = r.string("status_signature", 256);
    m.model_proofs = object_list<ModelChunkProof>(r, "model_proofs", kMaxChallengeChunks, read_chunk_proof);
    return finish(r, std::move(m));
  }
  return ProviderMessage{UnknownMessage{type}};
}

Result<CoordinatorMessage> decode_coordinator_message(std::string_view frame) {
  auto object = parse_object(frame, "coordinator message");
  if (!object) return object.error();
  json::ObjectReader top(*object, "");
  const std::string type = top.string("type", 64);
  if (!top.ok()) return top.error();
  json::ObjectReader r(*object, type);
  if (type == "registered") {
    Registered m;
    m.provider_id = r.string("provider_id", 128);
    m.protocol_version = static_cast<int>(r.integer("protocol_version", 0, 1000000));
    m.heartbeat_interval_ms =
        static_cast<int>(r.optional_integer("heartbeat_interval_ms", 100, 3600000).value_or(5000));
    m.refused_models = object_list<RefusedModel>(r, "refused_models", kMaxModelsPerProvider,
                                                 [](json::ObjectReader& item, RefusedModel& refused) {
                                                   refused.model = item.string("model", kMaxModelIdBytes);
                                                   refused.reason = item.string("reason", kMaxTextBytes);
                                                 });
    return finish_coordinator(r, std::move(m));
  }
  if (type == "inference_request") {
    InferenceRequest m;
    m.request_id = request_id(r);
    m.model = r.string("model", kMaxModelIdBytes);
    m.sealed_body = sealed_from(r, "sealed_body");
    if (r.has("blind") && r.ok()) {
      const bj::object& terms = r.object("blind");
      json::ObjectReader t(terms, r.path("blind"));
      BlindTerms blind;
      blind.max_tokens = static_cast<int>(t.integer("max_tokens", 1, 1 << 24));
      blind.n = static_cast<int>(t.integer("n", 1, kMaxChoices));
      blind.ignore_eos = t.optional_boolean("ignore_eos").value_or(false);
      if (!t.ok()) r.fail("blind", t.error().message);
      m.blind = blind;
    }
    return finish_coordinator(r, std::move(m));
  }
  if (type == "cancel") return finish_coordinator(r, Cancel{request_id(r)});
  if (type == "credential_challenge") {
    CredentialChallenge m;
    // TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET: a few hundred bytes for RSA 2048.
    m.credential_blob = optional_base64(r, "credential_blob", 1024);
    m.encrypted_secret = optional_base64(r, "encrypted_secret", 1024);
    if (r.ok() && (m.credential_blob.empty() || m.encrypted_secret.empty())) {
      r.fail("credential_blob", "credential_blob and encrypted_secret are required");
    }
    return finish_coordinator(r, std::move(m));
  }
  if (type == "attestation_challenge") {
    AttestationChallenge m;
    m.nonce = r.string("nonce", 128);
    m.timestamp = r.string("timestamp", 64);
    m.model_chunks = object_list<ModelChunkRequest>(r, "model_chunks", kMaxChallengeChunks, read_chunk_request);
    return finish_coordinator(r, std::move(m));
  }
  if (type == "load_model") return finish_coordinator(r, LoadModel{r.string("model", kMaxModelIdBytes)});
  if (type == "earned") {
    Earned m;
    m.request_id = request_id(r);
    m.payout_micro_usd = r.integer("payout_micro_usd", 0, int64_t{1} << 53);
    return finish_coordinator(r, std::move(m));
  }
  if (type == "trust_status") {
    TrustStatus m;
    m.trust_level = r.string("trust_level", 16);
    m.reason = r.optional_string("reason", kMaxTextBytes).value_or("");
    return finish_coordinator(r, std::move(m));
  }
  return CoordinatorMessage{UnknownMessage{type}};
}

Result<SealedRequest> decode_sealed_request(std::string_view plaintext) {
  // The body inside may nest as deeply as a consumer's body may (the coordinator held it to
  // kMaxDepth); the envelope around it adds one level.
  auto object = parse_object(plaintext, "sealed request", json::kMaxDepth + 1);
  if (!object) return object.error();
  json::ObjectReader r(*object, "sealed request");
  SealedRequest m;
  m.endpoint = r.string("endpoint", 32);
  if (r.ok() && m.endpoint != "chat.completions" && m.endpoint != "completions") {
    r.fail("endpoint", "must be chat.completions or completions");
  }
  m.body = r.object("body");
  if (!r.ok()) return r.error();
  return m;
}

Result<ChunkContent> decode_chunk_content(std::string_view plaintext) {
  auto object = parse_object(plaintext, "chunk");
  if (!object) return object.error();
  json::ObjectReader r(*object, "chunk");
  ChunkContent m;
  m.seq = static_cast<uint64_t>(r.integer("seq", 0, int64_t{1} << 40));
  m.text = r.string("text", kMaxFrameBytes);
  m.index = static_cast<int>(r.optional_integer("index", 0, kMaxChoices - 1).value_or(0));
  if (const bj::value* logprobs = r.find("logprobs"); logprobs != nullptr && !logprobs->is_null()) {
    if (logprobs->is_object()) {
      m.logprobs = *logprobs;
    } else {
      r.fail("logprobs", "must be an object");
    }
  }
  if (const bj::value* calls = r.find("tool_calls"); calls != nullptr && r.ok()) {
    if (!calls->is_array() || calls->as_array().size() > kMaxToolCalls) {
      r.fail("tool_calls", fmt::format("must be an array of at most {} pieces", kMaxToolCalls));
    }
    for (size_t i = 0; r.ok() && i < calls->as_array().size(); ++i) {
      const bj::value& item = calls->as_array()[i];
      if (!item.is_object()) {
        r.fail("tool_calls", "must hold objects");
        break;
      }
      json::ObjectReader c(item.as_object(), fmt::format("chunk.tool_calls[{}]", i));
      ToolCallDelta delta;
      delta.index = static_cast<int>(c.integer("index", 0, static_cast<int64_t>(kMaxToolCalls) - 1));
      delta.id = c.optional_string("id", kMaxToolCallIdBytes).value_or("");
      delta.name = c.optional_string("name", kMaxToolNameBytes).value_or("");
      delta.arguments = c.string("arguments", kMaxFrameBytes);
      if (!c.ok()) return c.error();
      m.tool_calls.push_back(std::move(delta));
    }
  }
  if (!r.ok()) return r.error();
  return m;
}

Result<CompletionContent> decode_completion_content(std::string_view plaintext) {
  auto object = parse_object(plaintext, "completion");
  if (!object) return object.error();
  json::ObjectReader r(*object, "completion");
  CompletionContent m;
  m.seq = static_cast<uint64_t>(r.integer("seq", 0, int64_t{1} << 40));
  m.prompt_tokens = static_cast<int>(r.integer("prompt_tokens", 0, 1 << 30));
  m.completion_tokens = static_cast<int>(r.integer("completion_tokens", 0, 1 << 30));
  m.finish_reason = r.string("finish_reason", 16);
  auto known = [](std::string_view reason) { return reason == "stop" || reason == "length" || reason == "tool_calls"; };
  if (r.ok() && !known(m.finish_reason)) r.fail("finish_reason", "must be stop, length or tool_calls");
  if (const bj::value* reasons = r.find("finish_reasons")) {
    if (!reasons->is_array() || reasons->as_array().empty() ||
        reasons->as_array().size() > static_cast<size_t>(kMaxChoices)) {
      r.fail("finish_reasons", fmt::format("must be an array of 1 to {} reasons", kMaxChoices));
    } else {
      for (const bj::value& reason : reasons->as_array()) {
        if (!reason.is_string() || !known(reason.as_string())) {
          r.fail("finish_reasons", "must hold stop, length or tool_calls");
          break;
        }
        m.finish_reasons.emplace_back(reason.as_string());
      }
    }
  }
  m.response_hash = r.optional_string("response_hash", 64).value_or("");
  m.receipt_signature = r.optional_string("receipt_signature", 256).value_or("");
  if (!r.ok()) return r.error();
  return m;
}

std::string_view message_type(const ProviderMessage& message) {
  return std::visit(
      [](const auto& m) -> std::string_view {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Register>) return "register";
        if constexpr (std::is_same_v<T, Heartbeat>) return "heartbeat";
        if constexpr (std::is_same_v<T, InferenceAccepted>) return "inference_accepted";
        if constexpr (std::is_same_v<T, InferenceChunk>) return "inference_chunk";
        if constexpr (std::is_same_v<T, InferenceComplete>) return "inference_complete";
        if constexpr (std::is_same_v<T, InferenceError>) return "inference_error";
        if constexpr (std::is_same_v<T, LoadModelStatus>) return "load_model_status";
        if constexpr (std::is_same_v<T, Draining>) return "draining";
        if constexpr (std::is_same_v<T, AttestationResponse>) return "attestation_response";
        if constexpr (std::is_same_v<T, CredentialResponse>) return "credential_response";
        if constexpr (std::is_same_v<T, UnknownMessage>) return m.type;
      },
      message);
}

std::string_view message_type(const CoordinatorMessage& message) {
  return std::visit(
      [](const auto& m) -> std::string_view {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Registered>) return "registered";
        if constexpr (std::is_same_v<T, InferenceRequest>) return "inference_request";
        if constexpr (std::is_same_v<T, Cancel>) return "cancel";
        if constexpr (std::is_same_v<T, LoadModel>) return "load_model";
        if constexpr (std::is_same_v<T, TrustStatus>) return "trust_status";
        if constexpr (std::is_same_v<T, AttestationChallenge>) return "attestation_challenge";
        if constexpr (std::is_same_v<T, CredentialChallenge>) return "credential_challenge";
        if constexpr (std::is_same_v<T, Earned>) return "earned";
        if constexpr (std::is_same_v<T, UnknownMessage>) return m.type;
      },
      message);
}

}  // namespace darkbloom::proto
