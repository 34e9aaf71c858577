// A provider's answer to a challenge, from the WebSocket frame on: the decoder, then the checks
// of attest::verify_challenge_answer against an open challenge and the document the provider registered
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
#include "attest/attestation_verifier.h"
#include "fuzz/fuzz_support.h"
#include "proto/provider_messages.h"
#include "tests/support/fake_attester.h"

namespace {

using namespace darkbloom;

// The challenge that is open.
const attest::IssuedChallenge kIssued{"bm9uY2Utbm9uY2Utbm9uY2Utbm9uY2Utbm9uY2U=", "2026-12-01T00:00:00Z"};

// What FakeAttester registers (posture all good), for the fuzz key, stamped at the challenge.
attest::AttestationDocument registered_document() {
  const std::array<uint8_t, 32> encryption_key = [] {
    std::array<uint8_t, 32> key{};
    key.fill(1);
    return key;
  }();
  return testing::FakeAttester(encryption_key, fuzz::fuzz_now(), *crypto::P256Key::from_pem(fuzz::kFuzzKeyPem))
      .document;
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

  attest::VerificationPolicy policy;
  policy.now = fuzz::fuzz_now();
  auto result = attest::verify_challenge_answer(*answer, kIssued, fuzz::fuzz_key().public_key(), registered, policy);
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
