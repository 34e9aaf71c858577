// What the fuzz targets share: a fixed identity key (so the corpora can hold answers and
// documents that pass the signature checks and reach the code behind them), a fixed clock, and a
// check that stops the run on a broken invariant the way a sanitizer report would.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/encoding.h"
#include "crypto/p256.h"

namespace darkbloom::fuzz {

// A key made for the fuzzers and nothing else; it signs nothing outside them.
inline constexpr std::string_view kFuzzKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgndb+wYMxgfj1lSKA\n"
    "RNOMPSTEAFGeSEyHxDLBA/XZbI2hRANCAAQhGfJ88OzYTOqfmaW1GkzpFcvrNUEY\n"
    "s/EksCPOqovL2v1KAsn6kNG2ILUDTS+I3pGtiaP4YjbVRq/D5kKJXl5h\n"
    "-----END PRIVATE KEY-----\n";

inline const crypto::P256Key& fuzz_key() {
  static const crypto::P256Key key = *crypto::P256Key::from_pem(kFuzzKeyPem);
  return key;
}

inline std::string fuzz_sign(std::string_view text) {
  return base64_encode(fuzz_key().sign(as_bytes(text)));
}

// The fuzzers' "now": documents in the corpora are stamped near it.
inline std::chrono::system_clock::time_point fuzz_now() {
  return std::chrono::system_clock::time_point(std::chrono::seconds(1796083200));  // 2026-12-01T00:00:00Z
}

// A broken invariant: report it and abort, so libFuzzer keeps the input as a finding.
[[noreturn]] inline void invariant_failed(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "invariant failed: %s %.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// Takes a mode byte off the front of the input (0 when the input is empty).
inline uint8_t take_mode(const uint8_t*& data, size_t& size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  return mode;
}

}  // namespace darkbloom::fuzz
