// The signed attestation a provider registers with, as the coordinator checks it: the document,
// its signature, the key rotation statement, timestamps. The mode byte decides what the fuzzer
// signs with its own key (whose public half the corpus documents name), so the checks behind the
// signature are reached too: bit 0 signs the document, bit 1 adds a rotation statement (the rest
// of the input is "document \0 statement"), bit 2 signs the statement, bit 3 configures a binary
// allow-list. Parsed documents must survive canonical_json unchanged.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "attest/attestation_document.h"
#include "attest/attestation_verifier.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace darkbloom;

// The encryption key the fuzzed documents are checked against (base64 "AQEB...AQE=").
constexpr std::array<uint8_t, 32> kRegisteredEncryptionKey = [] {
  std::array<uint8_t, 32> key{};
  key.fill(1);
  return key;
}();

// parse → canonical → parse → canonical gives the same bytes both times.
template <typename Parse>
void check_canonical(std::string_view text, Parse parse, const char* what) {
  auto parsed = parse(text);
  if (!parsed) return;
  const std::string canonical = attest::canonical_json(*parsed);
  auto again = parse(canonical);
  if (!again) fuzz::invariant_failed(what, again.error().message);
  if (attest::canonical_json(*again) != canonical) fuzz::invariant_failed(what, "not canonical after a round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t mode = fuzz::take_mode(data, size);
  std::string_view input(reinterpret_cast<const char*>(data), size);

  proto::AttestationBundle bundle;
  bundle.document = std::string(input);
  if ((mode & 2) != 0) {
    const size_t split = input.find('\0');
    bundle.document = std::string(input.substr(0, split));
    if (split != std::string_view::npos) bundle.rotation_statement = std::string(input.substr(split + 1));
    bundle.rotation_signature = (mode & 4) != 0 ? fuzz::fuzz_sign(bundle.rotation_statement) : "MEUCIQ==";
  }
  bundle.signature = (mode & 1) != 0 ? fuzz::fuzz_sign(bundle.document) : "MEUCIQDx";

  check_canonical(bundle.document, attest::parse_attestation_document, "attestation document");
  check_canonical(bundle.document, attest::parse_status_document, "status document");
  check_canonical(bundle.rotation_statement, attest::parse_rotation_statement, "rotation statement");
  if (auto time = attest::parse_rfc3339(bundle.document)) {
    if (attest::rfc3339(*time) != bundle.document) fuzz::invariant_failed("rfc3339 round trip", bundle.document);
  }

  attest::VerificationPolicy policy;
  policy.now = fuzz::fuzz_now();
  if ((mode & 8) != 0) policy.allowed_binaries = {std::string(64, 'c')};
  auto verified = attest::verify_attestation(bundle, kRegisteredEncryptionKey, policy);
  if (verified && (mode & 1) == 0) fuzz::invariant_failed("a document passed without a valid signature");
  if (verified && verified->rotation && (mode & 4) == 0) {
    fuzz::invariant_failed("a rotation passed without the old key's signature");
  }
  return 0;
}
