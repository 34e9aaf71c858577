// A provider's identity as the coordinator checks it: an in-memory P-256 key, the attestation
// document it signs (a well-formed one: tests change one field at a time), and honest answers to
// challenges. Shared by the trust checks' tests and the coordinator harness.
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include "attest/attestation_document.h"
#include "base/encoding.h"
#include "crypto/p256.h"
#include "proto/provider_messages.h"

namespace darkbloom::testing {

struct FakeAttester {
  crypto::P256Key key;
  attest::AttestationDocument document;

  // `identity` is a fresh key unless one is given (fuzzers sign with a fixed one).
  FakeAttester(std::span<const uint8_t> encryption_key, std::chrono::system_clock::time_point now,
               crypto::P256Key identity = crypto::P256Key::generate())
      : key(std::move(identity)) {
    document.public_key = base64_encode(key.public_key());
    document.key_backend = "ephemeral";
    document.encryption_key = base64_encode(encryption_key);
    document.binary_hash = std::string(64, 'c');
    document.version = "0.1.0";
    document.hardware_cpu = "cpu";
    document.hardware_memory_gb = 8;
    document.os = "Linux";
    document.posture.core_dumps_disabled = true;
    document.posture.not_traced = true;
    document.posture.env_clean = true;
    document.timestamp = attest::rfc3339(now);
  }

  std::string sign(std::string_view text) const { return base64_encode(key.sign(as_bytes(text))); }

  proto::AttestationBundle bundle() const {
    proto::AttestationBundle bundle;
    bundle.document = attest::canonical_json(document);
    bundle.signature = sign(bundle.document);
    return bundle;
  }

  // The answer to the challenge (nonce, timestamp), reporting `posture`.
  proto::AttestationResponse answer(const std::string& nonce, const std::string& timestamp,
                                    const attest::Posture& posture) const {
    attest::StatusDocument status;
    status.nonce = nonce;
    status.timestamp = timestamp;
    status.binary_hash = document.binary_hash;
    status.posture = posture;
    proto::AttestationResponse response;
    response.nonce = nonce;
    response.timestamp = timestamp;
    response.signature = sign(nonce + timestamp);
    response.status = attest::canonical_json(status);
    response.status_signature = sign(response.status);
    return response;
  }
};

}  // namespace darkbloom::testing
