// Text encodings of bytes: standard base64 with padding (RFC 4648 §4) and lowercase hex.
// Decoders are strict: wrong characters, wrong padding or wrong lengths are errors.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace darkbloom {

std::string base64_encode(std::span<const uint8_t> bytes);
Result<std::vector<uint8_t>> base64_decode(std::string_view text);

std::string hex_encode(std::span<const uint8_t> bytes);
Result<std::vector<uint8_t>> hex_decode(std::string_view text);

inline std::span<const uint8_t> as_bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace darkbloom
