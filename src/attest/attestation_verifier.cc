#include "attest/attestation_verifier.h"

#include <fmt/format.h>

#include "base/encoding.h"
#include "crypto/hash.h"
#include "crypto/p256.h"
#include "crypto/system_random.h"

namespace darkbloom::attest {
namespace {

Result<std::vector<uint8_t>> decode_public_key(std::string_view base64, std::string_view what) {
  auto raw = base64_decode(base64);
  if (!raw || raw->size() != crypto::kP256PublicKeyBytes) {
    return make_error(Errc::bad_format, fmt::format("{} is not a base64 P-256 key (X ‖ Y, 64 bytes)", what));
  }
  return *raw;
}

// A DER ECDSA signature in base64 over `message` by `public_key`.
Status check_signature(std::span<const uint8_t> public_key, std::string_view message, std::string_view signature,
                       std::string_view what) {
  // A signature that does not even decode is as bad as one that does not verify.
  auto der = base64_decode(signature);
  if (!der || der->empty()) {
    return make_error(Errc::permission_denied, fmt::format("{}: the signature is not base64", what));
  }
  auto valid = crypto::p256_verify(public_key, as_bytes(message), *der);
  if (!valid) return make_error(Errc::permission_denied, std::string(what) + ": " + valid.error().message);
  if (!*valid) return make_error(Errc::permission_denied, fmt::format("{}: the signature does not verify", what));
  return {};
}

Status check_binary(const std::string& binary_hash, const VerificationPolicy& policy) {
  if (policy.allowed_binaries.empty()) return {};
  if (binary_hash.empty()) {
    return make_error(Errc::permission_denied, "the provider reports no binary hash and a release allow-list is set");
  }
  if (!policy.allowed_binaries.count(binary_hash)) {
    return make_error(Errc::permission_denied, fmt::format("binary {} is not an approved release", binary_hash));
  }
  return {};
}

}  // namespace

Result<VerifiedAttestation> verify_attestation(const proto::AttestationBundle& bundle,
                                               std::span<const uint8_t> registered_encryption_key,
                                               const VerificationPolicy& policy) {
  auto document = parse_attestation_document(bundle.document);
  if (!document) return document.error();
  auto public_key = decode_public_key(document->public_key, "public_key");
  if (!public_key) return public_key.error();
  // The bytes received are the bytes checked: no re-serialisation can hide a changed field.
  DARKBLOOM_RETURN_IF_ERROR(check_signature(*public_key, bundle.document, bundle.signature, "attestation"));
  if (document->key_backend != "tpm2" && document->key_backend != "pkcs11" && document->key_backend != "ephemeral") {
    return make_error(Errc::bad_format, fmt::format("unknown key_backend '{}'", document->key_backend));
  }
  auto encryption_key = base64_decode(document->encryption_key);
  if (!encryption_key || encryption_key->size() != registered_encryption_key.size() ||
      !std::equal(encryption_key->begin(), encryption_key->end(), registered_encryption_key.begin())) {
    return make_error(Errc::permission_denied,
                      "the attested encryption_key is not the one registered (the X25519 key is not bound)");
  }
  DARKBLOOM_RETURN_IF_ERROR(check_binary(document->binary_hash, policy));
  auto signed_at = parse_rfc3339(document->timestamp);
  if (!signed_at) return signed_at.error();
  const auto skew = *signed_at > policy.now ? *signed_at - policy.now : policy.now - *signed_at;
  if (skew > policy.max_clock_skew) {
    return make_error(
        Errc::permission_denied,
        fmt::format("attestation timestamp {} is {} s away from now (at most {} s allowed)", document->timestamp,
                    std::chrono::duration_cast<std::chrono::seconds>(skew).count(), policy.max_clock_skew.count()));
  }
  VerifiedAttestation verified;
  verified.public_key = std::move(*public_key);
  if (!bundle.rotation_statement.empty()) {
    auto statement = parse_rotation_statement(bundle.rotation_statement);
    if (!statement) return statement.error();
    if (statement->new_public_key != document->public_key) {
      return make_error(Errc::permission_denied, "the rotation statement vouches for a different key");
    }
    auto old_key = decode_public_key(statement->old_public_key, "rotation old_public_key");
    if (!old_key) return old_key.error();
    DARKBLOOM_RETURN_IF_ERROR(
        check_signature(*old_key, bundle.rotation_statement, bundle.rotation_signature, "rotation statement"));
    verified.rotation = std::move(*statement);
  }
  verified.document = std::move(*document);
  return verified;
}

Result<ChallengeResult> verify_challenge_answer(const proto::AttestationResponse& answer, const IssuedChallenge& issued,
                                                std::span<const uint8_t> public_key,
                                                const AttestationDocument& registered,
                                                const VerificationPolicy& policy) {
  if (issued.nonce.empty())
    return make_error(Errc::invalid_argument, "an answer when no challenge is open (replayed or late)");
  if (answer.nonce != issued.nonce) {
    return make_error(Errc::invalid_argument,
                      "the answer carries a nonce other than the open challenge's (replayed or stale)");
  }
  if (answer.timestamp != issued.timestamp) {
    return make_error(Errc::invalid_argument, "the answer carries a timestamp other than the challenge's");
  }
  DARKBLOOM_RETURN_IF_ERROR(
      check_signature(public_key, answer.nonce + answer.timestamp, answer.signature, "challenge"));
  DARKBLOOM_RETURN_IF_ERROR(check_signature(public_key, answer.status, answer.status_signature, "status document"));
  auto status = parse_status_document(answer.status);
  if (!status) return status.error();
  if (status->nonce != issued.nonce || status->timestamp != issued.timestamp) {
    return make_error(Errc::permission_denied, "the status document answers a different challenge");
  }
  if (status->binary_hash != registered.binary_hash) {
    return make_error(Errc::permission_denied,
                      fmt::format("the binary changed since registration ({} → {})", registered.binary_hash,
                                  status->binary_hash.empty() ? "none" : status->binary_hash));
  }
  DARKBLOOM_RETURN_IF_ERROR(check_binary(status->binary_hash, policy));
  ChallengeResult result;
  const Posture& before = registered.posture;
  const Posture& now = status->posture;
  auto regressed = [&](bool was, bool is, const char* name) {
    if (was && !is) result.regressions += std::string(result.regressions.empty() ? "" : ", ") + name;
  };
  regressed(before.secure_boot, now.secure_boot, "secure_boot");
  regressed(before.kernel_lockdown, now.kernel_lockdown, "kernel_lockdown");
  regressed(before.ptrace_restricted, now.ptrace_restricted, "ptrace_restricted");
  regressed(before.core_dumps_disabled, now.core_dumps_disabled, "core_dumps_disabled");
  regressed(before.not_traced, now.not_traced, "not_traced");
  regressed(before.env_clean, now.env_clean, "env_clean");
  result.status = std::move(*status);
  return result;
}

Status verify_receipt(std::string_view request_id, int completion_tokens, std::string_view text,
                      std::string_view response_hash, std::string_view signature_base64,
                      std::span<const uint8_t> public_key) {
  if (attest::response_hash(request_id, completion_tokens, text) != response_hash) {
    return make_error(Errc::permission_denied, "the receipt's hash does not match the answer relayed");
  }
  return check_signature(public_key, response_hash, signature_base64, "receipt");
}

Status verify_usage(const proto::BlindUsage& usage, std::string_view request_id, std::span<const uint8_t> public_key) {
  const std::string text = usage_text(request_id, usage.prompt_tokens, usage.completion_tokens, usage.chunks);
  return check_signature(public_key, text, usage.signature, "usage");
}

IssuedChallenge new_challenge(std::chrono::system_clock::time_point now, RandomSource& random) {
  return {base64_encode(random.bytes(32)), rfc3339(now)};
}

IssuedChallenge new_challenge(std::chrono::system_clock::time_point now) {
  crypto::SystemRandom random;
  return new_challenge(now, random);
}

}  // namespace darkbloom::attest
