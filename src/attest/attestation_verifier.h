// The checks behind every trust decision about a provider, as pure functions: its signed
// attestation at registration, its answers to challenges, key rotations, and the receipts on its
// answers. Each failure names what was wrong. The coordinator's gateway drops or distrusts
// accordingly; anyone else holding the public listing (a client-side proxy) can run them too.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "attest/attestation_document.h"
#include "base/random.h"
#include "base/result.h"
#include "proto/provider_messages.h"

namespace darkbloom::attest {

struct VerificationPolicy {
  // Allowed hex SHA-256 hashes of provider binaries; empty means no list is configured. With a
  // list, a document without a hash fails (the reference fails open here; we fail closed).
  std::set<std::string> allowed_binaries;
  std::chrono::seconds max_clock_skew{300};
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

struct VerifiedAttestation {
  AttestationDocument document;
  std::vector<uint8_t> public_key;            // P-256 X ‖ Y, the provider's identity
  std::optional<RotationStatement> rotation;  // verified: the old key vouched for this one
};

// Verifies the bundle from `register`: the signature over exactly the received document bytes,
// the document's X25519 key against the one registered, the binary allow-list, the timestamp
// window, and a rotation statement when one came along.
Result<VerifiedAttestation> verify_attestation(const proto::AttestationBundle& bundle,
                                               std::span<const uint8_t> registered_encryption_key,
                                               const VerificationPolicy& policy);

struct IssuedChallenge {
  std::string nonce;
  std::string timestamp;
};

struct ChallengeResult {
  StatusDocument status;
  // Posture flags that were true at registration and are false now ("not_traced, env_clean");
  // empty when none regressed. A regression distrusts the provider at once.
  std::string regressions;
};

// Verifies an answer to `issued`: same nonce and timestamp (a replayed or stale answer fails),
// the signature over nonce + timestamp, the separately signed status document echoing them,
// and its binary hash against the registered one and the allow-list. Errors are
// `invalid_argument` for an answer to the wrong (or no) challenge, which may be a slow network,
// and `permission_denied` for a bad signature or a changed binary, which is not.
Result<ChallengeResult> verify_challenge_answer(const proto::AttestationResponse& answer, const IssuedChallenge& issued,
                                                std::span<const uint8_t> public_key,
                                                const AttestationDocument& registered,
                                                const VerificationPolicy& policy);

// Verifies a receipt: the hash recomputed from what was relayed, and its signature.
Status verify_receipt(std::string_view request_id, int completion_tokens, std::string_view text,
                      std::string_view response_hash, std::string_view signature_base64,
                      std::span<const uint8_t> public_key);

// Verifies the usage a provider signed for a blind request (usage_text) under `request_id`.
Status verify_usage(const proto::BlindUsage& usage, std::string_view request_id, std::span<const uint8_t> public_key);

// "2026-11-27T23:48:45Z" now, and a fresh challenge nonce (base64 of 32 bytes of `random`, which
// must be a CSPRNG outside tests: a predictable nonce lets a provider answer ahead of time).
IssuedChallenge new_challenge(std::chrono::system_clock::time_point now, RandomSource& random);
// The same with the operating system's CSPRNG.
IssuedChallenge new_challenge(std::chrono::system_clock::time_point now);

}  // namespace darkbloom::attest
