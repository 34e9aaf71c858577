// Picks the next token from logits with per-request settings: penalties, temperature, top-k,
// top-p, min-p and a seeded generator, and reports what it sampled from (log-probabilities).
// Temperature 0 takes a pure argmax path.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "base/result.h"

namespace darkbloom::engine {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  float top_p = 1.0f;               // (0, 1]
  int top_k = 0;                    // 0 = off
  float min_p = 0.0f;               // [0, 1]
  std::optional<uint64_t> seed;     // unset = a fresh random seed
  float repetition_penalty = 1.0f;  // > 0; applies to prompt and output tokens in the window
  int repetition_window = 64;       // last N tokens the repetition penalty looks at
  float presence_penalty = 0.0f;    // [-2, 2]; applies to output tokens (OpenAI semantics)
  float frequency_penalty = 0.0f;   // [-2, 2]; applies to output tokens

  // Rejects values outside the ranges above, naming the field.
  Status validate() const;
};

inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

// A sampled token with its log-probability under the distribution it was drawn from: the
// log-softmax of the logits after penalties and the grammar's mask, before temperature and the
// top-k/top-p/min-p cuts (so it does not depend on those settings).
struct SampledToken {
  int32_t token = 0;
  float logprob = 0;
  std::vector<TokenLogprob> top;  // most likely first
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt);

  // Samples from `logits` (modified in place by penalties and filters). With `info`, also the
  // token's log-probability and the `top` most likely tokens' (see SampledToken).
  int32_t sample(std::span<float> logits, SampledToken* info = nullptr, int top = 0);
  // Records a token that became part of the output, for the penalties.
  void accept(int32_t token);

  uint64_t seed() const { return seed_; }

 private:
  void apply_penalties(std::span<float> logits) const;
  // The sampling chain after penalties: argmax, or top-k, temperature, top-p, min-p and a draw.
  int32_t choose(std::span<float> logits);
  double uniform();

  SamplingParams params_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<int32_t> recent_;                     // prompt + output, for the repetition window
  std::unordered_map<int32_t, int> output_counts_;  // output tokens, for presence/frequency
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace darkbloom::engine
