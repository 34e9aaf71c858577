#include "crypto/system_random.h"

#include <sodium.h>

namespace darkbloom::crypto {

void SystemRandom::fill(std::span<uint8_t> out) {
  randombytes_buf(out.data(), out.size());
}

RandomSource& system_random() {
  static SystemRandom random;
  return random;
}

}  // namespace darkbloom::crypto
