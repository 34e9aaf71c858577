// Attention over the paged KV cache for one layer of a forward pass (see forward.h): a step's
// tokens are split into runs, and each run is attended to one KV head at a time.
//
// A run is up to kRunTokens consecutive positions of one sequence in the step (a prompt chunk; a
// decoding row is a run of one). A run's query tokens share each cached block: its keys are
// scored against every query of the run that sees the block, and its values are read once for
// all of them. Each token still gets exactly the numbers it gets alone: its scores come from the
// same per-query dot products, and its output sums the same rows in the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/kernels/kernel_set.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_config.h"

namespace darkbloom::engine {

struct BatchToken;

inline constexpr int kRunTokens = 8;

// Batch rows [first, first + count) of one sequence, at consecutive positions.
struct AttentionRun {
  int first = 0, count = 0;
};

// The batch's runs, in batch order.
void find_attention_runs(std::span<const BatchToken> batch, std::vector<AttentionRun>* runs);

// Per-thread buffers, grown to the largest run seen.
struct AttentionScratch {
  std::vector<float> scores, queries, expanded;
  std::vector<uint8_t> quantized;
};

// What every task of one layer's attention reads: the queries (rows of q_width) and where the
// outputs go (rows of the same width).
struct AttentionLayer {
  const ModelConfig& config;
  const kernels::KernelSet& kernels;
  const KvCache& cache;
  int layer;
  const float* queries;
  float* out;
};

// One run's attention for one KV head: the outputs of the run's tokens for that head's query
// heads.
void attend_run(const AttentionLayer& layer, std::span<const BatchToken> batch, AttentionRun run, int kv_head,
                AttentionScratch& scratch);

}  // namespace darkbloom::engine
