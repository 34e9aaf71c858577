// `model synth`: writes a valid GGUF model with random weights for any supported architecture,
// shape and weight type, with a real vocabulary (from a tokenizer.json) or a synthetic one.
// Tests and benchmarks use it so that nothing is downloaded.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/result.h"
#include "engine/gguf/ggml_type.h"

namespace darkbloom::engine {

struct SynthOptions {
  std::string architecture = "llama";  // llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3
  std::string name = "darkbloom-synthetic";
  int n_layer = 2;
  int n_embd = 256;
  int n_head = 4;
  int n_head_kv = 2;
  int head_dim = 0;  // 0 = n_embd / n_head
  int n_ff = 512;
  // Mixture of experts (qwen2moe, qwen3moe): experts per layer, experts per token, each expert's
  // FFN width and the shared expert's (qwen2moe); widths of 0 mean n_ff.
  int n_expert = 4;
  int n_expert_used = 2;
  int n_ff_expert = 0;
  int n_ff_shared = 0;
  int rope_dims = 0;  // RoPE's dimensions per head (0 = all; phi3 and others rotate part)
  // gemma2, gemma3, phi3: the sliding window (-1 = the architecture's published default, 0 = none)
  // and gemma2's soft-caps (0 = its defaults, 50 and 30).
  int sliding_window = -1;
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;
  int n_vocab = 0;  // 0 = the tokenizer's size, or 512 for the synthetic vocabulary
  int context_length = 4096;
  float rope_theta = 10000.0f;
  float rms_epsilon = 1e-6f;
  // One tensor type for every matrix (rows that do not fill its blocks fall back to Q8_0 or F16)...
  std::string weight_type = "q8_0";
  // ...or, when set, a quantization recipe ("Q4_K_M"; see quant_recipe.h), which gives each matrix
  // the type the published quantizer would.
  std::string recipe;
  bool tied_output = false;
  uint64_t seed = 1;
  std::string tokenizer_json;    // empty = synthetic byte-level vocabulary
  std::string tokenizer_config;  // optional tokenizer_config.json (BOS/EOS, chat template)
};

// Checks the options and writes the model. `progress` gets (tensors written, total).
Status synthesize_model(const SynthOptions& options, const std::string& out_path,
                        const std::function<void(size_t, size_t)>& progress = {});

}  // namespace darkbloom::engine
