// `bench engine`: prefill and decode speed through the engine's public face (submit, sink), with
// a synthetic prompt of fixed length and greedy decoding that ignores end-of-generation tokens,
// so every run does the same work. Reports medians over repetitions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/result.h"
#include "engine/engine.h"

namespace darkbloom::engine {

struct EngineBenchOptions {
  int prompt_tokens = 512;
  int gen_tokens = 128;
  int repetitions = 3;
  uint64_t seed = 7;
};

struct EngineBenchResult {
  int threads = 0;
  int prompt_tokens = 0;
  int gen_tokens = 0;
  double time_to_first_token_ms = 0;     // median; prompt processing ends with the first token's logits
  double prefill_tokens_per_second = 0;  // median
  double decode_tokens_per_second = 0;   // median, over the gen_tokens - 1 steps after the first token
  uint64_t weight_bytes_per_token = 0;
  double decode_weight_gigabytes_per_second = 0;  // bytes of weights streamed per second of decoding
};

// `progress` gets (repetition done, total).
Result<EngineBenchResult> run_engine_bench(Engine& engine, const EngineBenchOptions& options,
                                           const std::function<void(int, int)>& progress = {});

}  // namespace darkbloom::engine
