// The transformer forward pass for llama-family models: one call runs every layer for a ragged
// batch of tokens (several positions of one or more sequences), writing their keys and values
// into the paged cache and producing logits where asked. Every token's numbers depend only on its
// own sequence: the same token gives the same logits alone or in any batch.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "base/thread_pool.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kernels/matmul.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/attention.h"
#include "engine/model/model.h"

namespace darkbloom::engine {

struct BatchToken {
  int32_t token = 0;
  int32_t position = 0;             // in its sequence; earlier positions must already be cached
  const int32_t* blocks = nullptr;  // its sequence's block table: position p is in blocks[p / kBlockTokens]
  int32_t n_blocks = 0;             // entries in the table
  bool want_logits = false;
};

class ForwardPass {
 public:
  ForwardPass(const Model& model, ThreadPool& pool, const kernels::KernelSet& kernels);

  // Runs the batch. Tokens of one slot appear in increasing position order. For each token with
  // want_logits, in batch order, n_vocab logits are written to `logits`. Token ids and positions
  // must be valid (callers check them; this throws std::out_of_range otherwise).
  void run(std::span<const BatchToken> batch, KvCache& cache, float* logits);

  const Model& model() const { return model_; }

 private:
  void rms_norm_rows(const float* in, const std::vector<float>& weight, float* out, int n_rows, int width);
  void apply_rope(float* rows, int n_rows, int row_width, int n_heads, bool sliding_layer);
  void store_kv(std::span<const BatchToken> batch, KvCache& cache, int layer);
  void attention(std::span<const BatchToken> batch, const KvCache& cache, int layer);
  void matmul(const kernels::WeightMatrix& w, const float* in, int n_rows, float* out);

  // The layers' matrices and the output projection as the kernels read them: packed copies
  // where the kernel set has a packed layout, else views of the model's.
  struct Matrices {
    kernels::WeightMatrix wq, wk, wv, wo, w_gate, w_up, w_down, wqkv;
    kernels::WeightMatrix router, shared_gate, shared_up, shared_down;
    std::vector<kernels::WeightMatrix> expert_gate, expert_up, expert_down;
  };
  // q_, k_, v_ from norm_'s n rows (separate or fused matrices, biases, per-head norms).
  void project_qkv(const LayerWeights& layer, const Matrices& m, int n);
  // The feed-forward block of norm_'s n rows into tmp_: dense, or a mixture of experts.
  void feed_forward(const LayerWeights& layer, const Matrices& m, int n);
  void mixture_of_experts(const LayerWeights& layer, const Matrices& m, int n);
  void route_tokens(const Matrices& m, int n);
  void run_routed_experts(const Matrices& m, int n);
  // act(gate) * up over n rows of `width`, into gate (SiLU, or GELU for gemma). Rows of gate and
  // up are `stride` apart (width unless they are halves of one fused row).
  void activate_times(float* gate, const float* up, int n, int width, int stride);

  const Model& model_;
  ThreadPool& pool_;
  const kernels::KernelSet& kernels_;
  kernels::PackedWeights packed_;
  std::vector<Matrices> matrices_;
  kernels::WeightMatrix output_;
  std::vector<float> inverse_frequencies_;

  // Scratch, grown to the largest batch seen.
  std::vector<float> x_, norm_, q_, k_, v_, attn_, tmp_, gate_, up_;
  // Mixture of experts: router logits, each expert's tokens (row, weight), and the rows of one
  // expert's tokens in and out.
  std::vector<float> router_;
  std::vector<std::vector<std::pair<int, float>>> expert_tokens_;
  std::vector<int> expert_order_;
  std::vector<float> expert_in_, expert_gate_, expert_up_, expert_out_;
  std::vector<kernels::MatmulJob> expert_jobs_;
  std::vector<float> rope_cos_, rope_sin_;  // [token][rope_dims / 2]
  // Sliding layers' RoPE when they have their own base (gemma3).
  std::vector<float> inverse_frequencies_sliding_, rope_cos_sliding_, rope_sin_sliding_;
  std::vector<float> fused_;  // phi3: the q|k|v or gate|up rows of one fused matrix
  // Attention (attention.h): the step's runs (found once per run() call), and per thread the
  // buffers of one run.
  std::vector<AttentionRun> runs_;
  std::vector<AttentionScratch> attention_scratch_;
  kernels::MatmulScratch matmul_scratch_;
};

}  // namespace darkbloom::engine
