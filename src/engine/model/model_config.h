// The hyperparameters of a transformer as a GGUF file's metadata states them, read and checked
// once so the forward pass can trust them.
#pragma once

#include <string>

#include "base/result.h"
#include "engine/gguf/gguf_file.h"

namespace darkbloom::engine {

enum class Architecture { llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3 };

enum class FfnActivation { silu, gelu };  // SwiGLU (llama, qwen, phi3) or GeGLU with tanh GELU (gemma)

// How RoPE pairs the dimensions of a head: `normal` rotates adjacent pairs (2i, 2i+1) (GGUF
// llama, whose Q/K weights the converter permutes for it); `neox` rotates (i, i + d/2) (qwen2,
// qwen3).
enum class RopeStyle { normal, neox };

struct ModelConfig {
  Architecture architecture = Architecture::llama;
  std::string architecture_name;  // "llama", "qwen2", "qwen3"
  std::string name;               // general.name, may be empty

  int n_vocab = 0;
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;   // per-head query/key width
  int value_dim = 0;  // per-head value width
  int n_ff = 0;
  int context_length = 0;  // the training context

  float rms_epsilon = 1e-5f;
  float rope_theta = 10000.0f;
  int rope_dims = 0;               // leading dims of each head that RoPE rotates
  float rope_linear_scale = 1.0f;  // positions are divided by this ("linear" scaling)
  RopeStyle rope_style = RopeStyle::normal;

  bool has_qkv_bias = false;  // qwen2, qwen2moe
  bool has_qk_norm = false;   // qwen3, qwen3moe

  // Mixture of experts (qwen2moe, qwen3moe): each layer's FFN is n_expert experts of width
  // n_ff_expert, of which a router picks n_expert_used per token (softmax over all, the top
  // n_expert_used kept, renormalised to sum 1 when normalize_expert_weights), plus, when
  // n_ff_shared > 0, a shared expert of that width whose output a sigmoid gate scales.
  int n_expert = 0;  // 0: a dense FFN of width n_ff
  int n_expert_used = 0;
  int n_ff_expert = 0;
  int n_ff_shared = 0;
  bool normalize_expert_weights = false;

  // Gemma: the token embedding is multiplied by sqrt(n_embd); the attention output and the FFN
  // output are each RMS-normalised again (post norms) before their residual add.
  bool scale_embedding = false;
  bool has_post_norms = false;
  FfnActivation ffn_activation = FfnActivation::silu;
  // phi3: one matrix projects q, k and v together (attn_qkv), and one gate and up (ffn_up, gate
  // rows first).
  bool fused_qkv = false;
  bool fused_gate_up = false;
  // Soft-capping (gemma2): value = cap * tanh(value / cap) for attention scores and for the final
  // logits; 0 = none.
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;
  // Attention scores are q.k times this (1 / sqrt(head_dim) unless the model says otherwise).
  float attention_scale = 0.0f;
  // Sliding-window attention: a sliding layer attends to the last sliding_window positions (its
  // own included). With sliding_period 0 every layer slides (phi3); else layer l slides when
  // l % sliding_period < sliding_period - 1 (gemma2: every other layer, gemma3: five of six).
  int sliding_window = 0;
  int sliding_period = 0;
  // Sliding layers' own RoPE base, without scaling (gemma3); 0 = the same RoPE as every layer.
  float rope_theta_sliding = 0.0f;

  int q_width() const { return n_head * head_dim; }
  int kv_width() const { return n_head_kv * head_dim; }
  int v_width() const { return n_head_kv * value_dim; }
  bool is_moe() const { return n_expert > 0; }
  bool is_sliding(int layer) const {
    return sliding_window > 0 && (sliding_period == 0 || layer % sliding_period < sliding_period - 1);
  }
};

// Reads the hyperparameters; an unknown architecture, a missing key or an inconsistent shape is
// an error naming the key.
Result<ModelConfig> read_model_config(const GgufFile& file);

const char* architecture_name(Architecture architecture);

}  // namespace darkbloom::engine
