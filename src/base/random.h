// Randomness as an injected dependency. Production code is handed crypto::SystemRandom (the
// operating system's CSPRNG through libsodium), which is fit for secrets; tests hand a seeded
// generator so ids and tie-breaks repeat from run to run.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace darkbloom {

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual void fill(std::span<uint8_t> out) = 0;

  std::vector<uint8_t> bytes(size_t n);
  uint64_t next_u64();
  // A uniform value in [0, bound); bound > 0.
  uint64_t below(uint64_t bound);
  // `prefix` followed by 2 * `bytes` lowercase hex digits ("req_" + 16 digits).
  std::string id(std::string_view prefix, size_t bytes);
};

// splitmix64: deterministic and fast; never for secrets.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  void fill(std::span<uint8_t> out) override;

 private:
  uint64_t state_;
};

}  // namespace darkbloom
