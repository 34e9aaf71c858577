// The hyperparameters of a transformer as a GGUF file's metadata states them, read and checked
// once so the forward pass can trust them.
#pragma once

#include <string>

#include "base/result.h"
#include "engine/gguf/gguf_file.h"

namespace darkbloom::engine {

enum class Architecture { llama, qwen2, qwen3 };

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

  bool has_qkv_bias = false;  // qwen2
  bool has_qk_norm = false;   // qwen3

  int q_width() const { return n_head * head_dim; }
  int kv_width() const { return n_head_kv * head_dim; }
  int v_width() const { return n_head_kv * value_dim; }
};

// Reads the hyperparameters; an unknown architecture, a missing key or an inconsistent shape is
// an error naming the key.
Result<ModelConfig> read_model_config(const GgufFile& file);

const char* architecture_name(Architecture architecture);

}  // namespace darkbloom::engine
