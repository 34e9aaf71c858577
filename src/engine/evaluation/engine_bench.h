// `bench engine`: speed through the engine's public face (submit, sink) with synthetic prompts of
// fixed length (different for every request, so nothing comes from the prefix cache) and greedy
// decoding that ignores end-of-generation tokens, so every run does the same work.
//
// For a batch size B: B requests are submitted together. Time to first token and prefill are
// measured over them; decode per row is the median row's rate while all B decode together, and
// the aggregate is B times that. `busy_ttft_ms` is the time to first token of one more request
// that arrives while B - 1 others are decoding: what continuous batching must keep low.
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
  std::vector<int> batch_sizes = {1};
  uint64_t seed = 7;
};

struct EngineBenchResult {
  int threads = 0;
  int batch = 1;
  int prompt_tokens = 0;
  int gen_tokens = 0;
  double time_to_first_token_ms = 0;     // median over requests and repetitions
  double busy_ttft_ms = 0;               // median; one request joining batch - 1 decoding rows
  double prefill_tokens_per_second = 0;  // all prompts of the batch / time until the last first token
  double decode_tokens_per_second = 0;   // per row, while all rows of the batch decode
  double aggregate_decode_tokens_per_second = 0;
  uint64_t weight_bytes_per_token = 0;  // weights streamed per decode step
  double decode_weight_gigabytes_per_second = 0;
};

// `progress` gets (step done, total steps).
Result<std::vector<EngineBenchResult>> run_engine_bench(Engine& engine, const EngineBenchOptions& options,
                                                        const std::function<void(int, int)>& progress = {});

// Multiply-adds per token in the layers' matrices (the output projection runs once per
// sequence in prefill): with 2 flops each, the work a prompt token costs.
uint64_t matmul_parameters(const ModelConfig& config);

}  // namespace darkbloom::engine
