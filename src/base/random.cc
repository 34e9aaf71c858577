#include "base/random.h"

#include <cstring>

#include "base/encoding.h"

namespace darkbloom {

std::vector<uint8_t> RandomSource::bytes(size_t n) {
  std::vector<uint8_t> out(n);
  fill(out);
  return out;
}

uint64_t RandomSource::next_u64() {
  uint8_t raw[8];
  fill(raw);
  uint64_t value = 0;
  std::memcpy(&value, raw, sizeof value);
  return value;
}

uint64_t RandomSource::below(uint64_t bound) {
  // Rejection sampling: no bias toward small values when bound does not divide 2^64.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  for (;;) {
    const uint64_t value = next_u64();
    if (value < limit) return value % bound;
  }
}

std::string RandomSource::id(std::string_view prefix, size_t n) {
  return std::string(prefix) + hex_encode(bytes(n));
}

void SeededRandom::fill(std::span<uint8_t> out) {
  size_t i = 0;
  while (i < out.size()) {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int b = 0; b < 8 && i < out.size(); ++b, ++i) out[i] = static_cast<uint8_t>(z >> (8 * b));
  }
}

}  // namespace darkbloom
