#include "attest/attestation_document.h"

#include <fmt/format.h>
#include <sys/utsname.h>

#include <ctime>

#include "base/encoding.h"
#include "base/json.h"
#include "crypto/hash.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::attest {
namespace {

namespace bj = json::bj;

// Compact JSON with keys in byte order: std::map sorts them, Boost.JSON keeps insertion order.
std::string sorted_json(const std::map<std::string, bj::value>& fields) {
  bj::object object;
  for (const auto& [key, value] : fields) object[key] = value;
  return bj::serialize(object);
}

void put_posture(std::map<std::string, bj::value>* fields, const Posture& p) {
  (*fields)["secure_boot"] = p.secure_boot;
  (*fields)["kernel_lockdown"] = p.kernel_lockdown;
  (*fields)["ptrace_restricted"] = p.ptrace_restricted;
  (*fields)["core_dumps_disabled"] = p.core_dumps_disabled;
  (*fields)["not_traced"] = p.not_traced;
  (*fields)["env_clean"] = p.env_clean;
}

Posture read_posture(json::ObjectReader& r) {
  Posture p;
  p.secure_boot = r.boolean("secure_boot");
  p.kernel_lockdown = r.boolean("kernel_lockdown");
  p.ptrace_restricted = r.boolean("ptrace_restricted");
  p.core_dumps_disabled = r.boolean("core_dumps_disabled");
  p.not_traced = r.boolean("not_traced");
  p.env_clean = r.boolean("env_clean");
  return p;
}

Result<bj::object> parse_object(std::string_view text, std::string_view what) {
  auto value = json::parse(text, what);
  if (!value) return value.error();
  if (!value->is_object()) return make_error(Errc::bad_format, std::string(what) + " is not a JSON object");
  return std::move(value->as_object());
}

}  // namespace

std::string canonical_json(const AttestationDocument& d) {
  std::map<std::string, bj::value> fields;
  fields["public_key"] = d.public_key;
  fields["key_backend"] = d.key_backend;
  if (!d.degraded_reason.empty()) fields["degraded_reason"] = d.degraded_reason;
  fields["encryption_key"] = d.encryption_key;
  if (!d.binary_hash.empty()) fields["binary_hash"] = d.binary_hash;
  if (!d.account_binding.empty()) fields["account_binding"] = d.account_binding;
  fields["version"] = d.version;
  std::map<std::string, bj::value> hardware;
  hardware["cpu"] = d.hardware_cpu;
  hardware["memory_gb"] = d.hardware_memory_gb;
  if (!d.hardware_gpu.empty()) hardware["gpu"] = d.hardware_gpu;
  fields["hardware"] = bj::parse(sorted_json(hardware));
  fields["os"] = d.os;
  put_posture(&fields, d.posture);
  fields["timestamp"] = d.timestamp;
  return sorted_json(fields);
}

Result<AttestationDocument> parse_attestation_document(std::string_view json_text) {
  auto object = parse_object(json_text, "attestation document");
  if (!object) return object.error();
  json::ObjectReader r(*object, "attestation");
  AttestationDocument d;
  d.public_key = r.string("public_key", 128);
  d.key_backend = r.string("key_backend", 32);
  d.degraded_reason = r.optional_string("degraded_reason", 4096).value_or("");
  d.encryption_key = r.string("encryption_key", 64);
  d.binary_hash = r.optional_string("binary_hash", 64).value_or("");
  d.account_binding = r.optional_string("account_binding", 64).value_or("");
  d.version = r.string("version", 64);
  const bj::object& hardware = r.object("hardware");
  if (r.ok()) {
    json::ObjectReader h(hardware, "attestation.hardware");
    d.hardware_cpu = h.string("cpu", 256);
    d.hardware_memory_gb = h.integer("memory_gb", 0, 1 << 24);
    d.hardware_gpu = h.optional_string("gpu", 256).value_or("");
    if (!h.ok()) r.fail("hardware", h.error().message);
  }
  d.os = r.string("os", 256);
  d.posture = read_posture(r);
  d.timestamp = r.string("timestamp", 64);
  if (!r.ok()) return r.error();
  return d;
}

std::string canonical_json(const StatusDocument& d) {
  std::map<std::string, bj::value> fields;
  fields["nonce"] = d.nonce;
  fields["timestamp"] = d.timestamp;
  if (!d.binary_hash.empty()) fields["binary_hash"] = d.binary_hash;
  put_posture(&fields, d.posture);
  if (!d.model_hashes.empty()) {
    std::map<std::string, bj::value> models;
    for (const auto& [id, hash] : d.model_hashes) models[id] = hash;
    fields["model_hashes"] = bj::parse(sorted_json(models));
  }
  return sorted_json(fields);
}

Result<StatusDocument> parse_status_document(std::string_view json_text) {
  auto object = parse_object(json_text, "status document");
  if (!object) return object.error();
  json::ObjectReader r(*object, "status");
  StatusDocument d;
  d.nonce = r.string("nonce", 128);
  d.timestamp = r.string("timestamp", 64);
  d.binary_hash = r.optional_string("binary_hash", 64).value_or("");
  d.posture = read_posture(r);
  if (const bj::value* models = r.find("model_hashes")) {
    if (!models->is_object()) {
      r.fail("model_hashes", "must be an object");
    } else {
      for (const auto& entry : models->as_object()) {
        if (!entry.value().is_string()) {
          r.fail("model_hashes", "values must be strings");
          break;
        }
        d.model_hashes[std::string(entry.key())] = std::string(entry.value().as_string());
      }
    }
  }
  if (!r.ok()) return r.error();
  return d;
}

std::string canonical_json(const RotationStatement& s) {
  std::map<std::string, bj::value> fields;
  fields["new_public_key"] = s.new_public_key;
  fields["old_public_key"] = s.old_public_key;
  fields["timestamp"] = s.timestamp;
  return sorted_json(fields);
}

Result<RotationStatement> parse_rotation_statement(std::string_view json_text) {
  auto object = parse_object(json_text, "rotation statement");
  if (!object) return object.error();
  json::ObjectReader r(*object, "rotation");
  RotationStatement s;
  s.new_public_key = r.string("new_public_key", 128);
  s.old_public_key = r.string("old_public_key", 128);
  s.timestamp = r.string("timestamp", 64);
  if (!r.ok()) return r.error();
  return s;
}

std::string account_binding(std::string_view public_key, std::string_view account_token) {
  std::string message("darkbloom-account-v1");
  message.push_back('\0');
  message.append(public_key);
  message.push_back('\0');
  message.append(account_token);
  std::string binding = crypto::sha256_hex(as_bytes(message));
  crypto::wipe_memory(message.data(), message.size());
  return binding;
}

std::string response_hash(std::string_view request_id, int completion_tokens, std::string_view text) {
  const std::string message = fmt::format("{}:{}:{}", request_id, completion_tokens, text);
  return crypto::sha256_hex(as_bytes(message));
}

std::string usage_text(std::string_view request_id, int64_t prompt_tokens, int64_t completion_tokens, uint64_t chunks) {
  return fmt::format("darkbloom blind usage v1\n{}:{}:{}:{}", request_id, prompt_tokens, completion_tokens, chunks);
}

std::string receipt_text(const std::vector<std::string>& choices) {
  if (choices.size() == 1) return choices[0];
  std::string text;
  for (const std::string& choice : choices) text += std::to_string(choice.size()) + ":" + choice;
  return text;
}

std::string rfc3339(std::chrono::system_clock::time_point time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

Result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text) {
  auto invalid = [text] {
    return make_error(Errc::bad_format,
                      fmt::format("'{}' is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)", text.substr(0, 64)));
  };
  // Exactly the form rfc3339() writes: strptime alone also takes unpadded fields, leading
  // spaces, a 60th second or 31 February (which timegm then moves to another time).
  if (text.size() != 20) return invalid();
  std::tm utc{};
  const std::string copy(text);
  const char* end = strptime(copy.c_str(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  if (end == nullptr || *end != '\0') return invalid();
  // The clock counts nanoseconds in 64 bits, about 292 years either side of 1970: a year outside
  // 1970-2200 would overflow on the way in or in the difference to now (found by fuzzing).
  if (utc.tm_year + 1900 < 1970 || utc.tm_year + 1900 > 2200) return invalid();
  const auto time = std::chrono::system_clock::from_time_t(timegm(&utc));
  if (rfc3339(time) != text) return invalid();
  return time;
}

Result<std::string> self_binary_hash() {
  auto hash = crypto::sha256_file("/proc/self/exe");
  if (!hash) return hash.error();
  return hex_encode(*hash);
}

std::string kernel_release() {
  utsname name{};
  if (uname(&name) != 0) return "unknown";
  return std::string(name.sysname) + " " + name.release;
}

}  // namespace darkbloom::attest
