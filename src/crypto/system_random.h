// The operating system's CSPRNG (libsodium's randombytes) behind the RandomSource interface:
// what production code is handed for ids, nonces, keys and tie-breaks.
#pragma once

#include "base/random.h"

namespace darkbloom::crypto {

class SystemRandom final : public RandomSource {
 public:
  void fill(std::span<uint8_t> out) override;
};

// A process-wide SystemRandom, for code that is handed no other (it holds no state).
RandomSource& system_random();

}  // namespace darkbloom::crypto
