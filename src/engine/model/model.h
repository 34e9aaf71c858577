// A loaded model: its configuration and views of its weights inside the mapped GGUF file. Large
// matrices stay in the mapping (zero-copy); small vectors (norms, biases) are converted to float
// once. Loading checks every tensor's presence, shape and type.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/gguf/gguf_file.h"
#include "engine/kernels/matmul.h"
#include "engine/model/model_config.h"

namespace darkbloom::engine {

struct LayerWeights {
  std::vector<float> attn_norm;
  kernels::WeightMatrix wq, wk, wv, wo;
  kernels::WeightMatrix wqkv;                        // phi3: q, k and v rows in one matrix (then wq, wk, wv are empty)
  std::vector<float> post_attn_norm, post_ffn_norm;  // gemma
  std::vector<float> q_bias, k_bias, v_bias;         // qwen2
  std::vector<float> q_norm, k_norm;                 // qwen3, per head
  std::vector<float> ffn_norm;
  kernels::WeightMatrix w_gate, w_up, w_down;  // dense FFN; phi3: w_up holds gate then up rows
  // Mixture of experts: the router (n_expert rows of n_embd), each expert's matrices (views into
  // the file's three-dimensional tensors, one per expert), and the shared expert with the vector
  // of its sigmoid gate (qwen2moe).
  kernels::WeightMatrix router;
  std::vector<kernels::WeightMatrix> expert_gate, expert_up, expert_down;
  kernels::WeightMatrix shared_gate, shared_up, shared_down;
  std::vector<float> shared_gate_input;
};

class Model {
 public:
  // Maps and validates a GGUF model file.
  static Result<std::unique_ptr<Model>> load(const std::string& path);
  static Result<std::unique_ptr<Model>> from_file(GgufFile file);

  const ModelConfig& config() const { return config_; }
  const GgufFile& file() const { return file_; }

  const kernels::WeightMatrix& token_embedding() const { return token_embedding_; }
  const kernels::WeightMatrix& output() const { return output_; }  // token_embedding when tied
  bool tied_output() const { return tied_output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Per-frequency divisors of RoPE (rope_freqs.weight); empty when absent.
  const std::vector<float>& rope_freq_factors() const { return rope_freq_factors_; }

  // Bytes of weights one decode step reads (every matrix once, plus one embedding row; of a
  // mixture of experts, the router, the shared expert and n_expert_used experts).
  uint64_t weight_bytes_per_token() const;
  uint64_t parameter_count() const;

 private:
  explicit Model(GgufFile file) : file_(std::move(file)) {}

  GgufFile file_;
  ModelConfig config_;
  kernels::WeightMatrix token_embedding_;
  kernels::WeightMatrix output_;
  bool tied_output_ = false;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<float> rope_freq_factors_;
};

}  // namespace darkbloom::engine
