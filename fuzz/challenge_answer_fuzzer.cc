// A provider's answer to a challenge, from the WebSocket frame on: the decoder, then the checks
// of verify_challenge_answer against an open challenge and the document the provider registered
// with. The mode byte lets the fuzzer sign with the registered key (a provider that holds its key
// and lies in what it signs): bit 0 signs nonce + timestamp, bit 1 the status document. The rest
// of the input is the frame.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "attest/attestation_document.h"
#include "coordinator/trust/attestation_verifier.h"
#include "fuzz/fuzz_support.h"
#include "proto/provider_messages.h"

namespace {

using namespace darkbloom;

// The challenge that is open, and what the provider registered with (posture all good).
const coordinator::IssuedChallenge kIssued{"bm9uY2Utbm9uY2Utbm9uY2Utbm9uY2Utbm9uY2U=", "2026-12-01T00:00:00Z"};

attest::AttestationDocument registered_document() {
  attest::AttestationDocument document;
  document.public_key = base64_encode(fuzz::fuzz_key().public_key());
  document.key_backend = "ephemeral";
  document.encryption_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
  document.binary_hash = std::string(64, 'c');
  document.version = "0.1.0";
  document.hardware_cpu = "cpu";
  document.hardware_memory_gb = 8;
  document.os = "Linux";
  document.posture.core_dumps_disabled = true;
  document.posture.not_traced = true;
  document.posture.env_clean = true;
  document.timestamp = kIssued.timestamp;
  return document;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const attest::AttestationDocument registered = registered_document();
  const uint8_t mode = fuzz::take_mode(data, size);
  auto message = proto::decode_provider_message(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!message) return 0;
  auto* answer = std::get_if<proto::AttestationResponse>(&*message);
  if (answer == nullptr) return 0;
  if ((mode & 1) != 0) answer->signature = fuzz::fuzz_sign(answer->nonce + answer->timestamp);
  if ((mode & 2) != 0) answer->status_signature = fuzz::fuzz_sign(answer->status);

  coordinator::VerificationPolicy policy;
  policy.now = fuzz::fuzz_now();
  auto result =
      coordinator::verify_challenge_answer(*answer, kIssued, fuzz::fuzz_key().public_key(), registered, policy);
  if (!result) return 0;
  // What passed was signed by the key, answers the open challenge, and names the same binary.
  if ((mode & 3) != 3) fuzz::invariant_failed("an answer passed without both signatures");
  if (answer->nonce != kIssued.nonce || answer->timestamp != kIssued.timestamp ||
      result->status.nonce != kIssued.nonce || result->status.timestamp != kIssued.timestamp) {
    fuzz::invariant_failed("an answer to another challenge passed");
  }
  if (result->status.binary_hash != registered.binary_hash) {
    fuzz::invariant_failed("an answer from another binary passed");
  }
  return 0;
}
