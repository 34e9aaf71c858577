#include "engine/model/model_config.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace darkbloom::engine {
namespace {

constexpr const char* kSupportedArchitectures = "llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3";

// Bounds far above any real model (the largest open models have width 16384, 128 heads of 256,
// FFN 53248, 126 layers); with them every width product fits comfortably in an int.
constexpr int kMaxWidth = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxFeedForward = 1 << 20;
constexpr int kMaxHeads = 1024;
constexpr int kMaxHeadDim = 4096;
constexpr int kMaxContext = 1 << 24;
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxExperts = 1024;

class MetadataReader {
 public:
  MetadataReader(const GgufFile& file, std::string prefix) : file_(file), prefix_(std::move(prefix)) {}

  // `key` is relative to the architecture prefix: "embedding_length" → "llama.embedding_length".
  // Every size is bounded (`max`) so products of sizes cannot overflow and a hostile file cannot
  // ask for absurd allocations.
  Result<int> positive_int(const std::string& key, int max) const {
    const std::string full = prefix_ + key;
    const GgufValue* value = file_.find(full);
    if (value == nullptr)
      return make_error(Errc::bad_format, fmt::format("{}: missing metadata '{}'", file_.name(), full));
    return to_positive_int(*value, full, max);
  }

  Result<int> positive_int_or(const std::string& key, int fallback, int max) const {
    const std::string full = prefix_ + key;
    const GgufValue* value = file_.find(full);
    if (value == nullptr) return fallback;
    return to_positive_int(*value, full, max);
  }

  Result<float> positive_float_or(const std::string& key, float fallback) const {
    const std::string full = prefix_ + key;
    const GgufValue* value = file_.find(full);
    if (value == nullptr) return fallback;
    const auto number = value->as_double();
    if (!number || !(*number > 0.0) || *number > 1e12) {
      return make_error(Errc::bad_format,
                        fmt::format("{}: metadata '{}' must be a positive number", file_.name(), full));
    }
    return static_cast<float>(*number);
  }

  const GgufValue* find(const std::string& key) const { return file_.find(prefix_ + key); }

 private:
  Result<int> to_positive_int(const GgufValue& value, const std::string& full, int max) const {
    if (value.as_array() != nullptr) {
      return make_error(Errc::unsupported,
                        fmt::format("{}: metadata '{}' varies per layer, which is not supported", file_.name(), full));
    }
    const auto number = value.as_int();
    if (!number || *number <= 0 || *number > max) {
      return make_error(Errc::bad_format,
                        fmt::format("{}: metadata '{}' must be a positive integer up to {}", file_.name(), full, max));
    }
    return static_cast<int>(*number);
  }

  const GgufFile& file_;
  std::string prefix_;
};

// Sliding windows, soft-capping and the attention scale (gemma2, gemma3, phi3).
Status read_attention_variants(const GgufFile& file, const MetadataReader& meta, ModelConfig* config) {
  auto number = [&](const char* key, float* out) -> Status {
    if (meta.find(key) == nullptr) return {};
    auto value = meta.positive_float_or(key, 0.0f);
    if (!value) return value.error();
    *out = *value;
    return {};
  };
  const Architecture arch = config->architecture;
  if (arch == Architecture::gemma2) {
    // llama.cpp's defaults for Gemma 2 files that predate these keys.
    config->sliding_window = 4096;
    config->attn_softcap = 50.0f;
    config->final_softcap = 30.0f;
  }
  if (arch == Architecture::gemma2 || arch == Architecture::gemma3 || arch == Architecture::phi3) {
    // 0 means no window: llama.cpp's converter writes it for Phi-4, which is a phi3 file.
    if (const GgufValue* window = meta.find("attention.sliding_window")) {
      const auto value = window->as_int();
      if (!value || *value < 0 || *value > kMaxContext) {
        return make_error(Errc::bad_format,
                          fmt::format("{}: metadata '{}.attention.sliding_window' must be an integer from 0 to {}",
                                      file.name(), architecture_name(arch), kMaxContext));
      }
      config->sliding_window = static_cast<int>(*value);
    }
  }
  if (arch == Architecture::gemma2) DARKBLOOM_RETURN_IF_ERROR(number("attn_logit_softcapping", &config->attn_softcap));
  if (arch == Architecture::gemma2 || arch == Architecture::gemma3) {
    DARKBLOOM_RETURN_IF_ERROR(number("final_logit_softcapping", &config->final_softcap));
  }
  if (arch == Architecture::gemma3) {
    // The local layers' base is not in the files llama.cpp's converter writes; it is 10000.
    config->rope_theta_sliding = 10000.0f;
    DARKBLOOM_RETURN_IF_ERROR(number("rope.freq_base_swa", &config->rope_theta_sliding));
  }
  // Gemma's 27B models scale queries by 1/sqrt(n_embd / n_head) rather than 1/sqrt(head_dim), as
  // llama.cpp recognises them: by their layer count.
  const bool wide_query_scale = (arch == Architecture::gemma2 && config->n_layer == 46) ||
                                (arch == Architecture::gemma3 && config->n_layer == 62);
  const int width_per_head = config->n_embd / config->n_head;
  config->attention_scale =
      1.0f / std::sqrt(static_cast<float>(wide_query_scale && width_per_head > 0 ? width_per_head : config->head_dim));
  if (file.find_tensor("rope_factors_long.weight") != nullptr) {
    return make_error(Errc::unsupported, file.name() + ": LongRoPE (rope_factors_long) is not supported");
  }
  return {};
}

}  // namespace

const char* architecture_name(Architecture architecture) {
  switch (architecture) {
    case Architecture::llama:
      return "llama";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::qwen3:
      return "qwen3";
    case Architecture::qwen2moe:
      return "qwen2moe";
    case Architecture::qwen3moe:
      return "qwen3moe";
    case Architecture::gemma2:
      return "gemma2";
    case Architecture::gemma3:
      return "gemma3";
    case Architecture::phi3:
      return "phi3";
  }
  return "unknown";
}

// NOLINTNEXTLINE(readability-function-size): a parser: one block per GGUF hyperparameter key.
Result<ModelConfig> read_model_config(const GgufFile& file) {
  const GgufValue* arch_value = file.find("general.architecture");
  const std::string* arch = arch_value ? arch_value->as_string() : nullptr;
  if (arch == nullptr) return make_error(Errc::bad_format, file.name() + ": missing metadata 'general.architecture'");

  ModelConfig config;
  config.architecture_name = *arch;
  if (*arch == "llama") {
    config.architecture = Architecture::llama;
    config.rope_style = RopeStyle::normal;
  } else if (*arch == "qwen2") {
    config.architecture = Architecture::qwen2;
    config.rope_style = RopeStyle::neox;
    config.has_qkv_bias = true;
  } else if (*arch == "qwen3") {
    config.architecture = Architecture::qwen3;
    config.rope_style = RopeStyle::neox;
    config.has_qk_norm = true;
  } else if (*arch == "qwen2moe") {
    config.architecture = Architecture::qwen2moe;
    config.rope_style = RopeStyle::neox;
    config.has_qkv_bias = true;
  } else if (*arch == "qwen3moe") {
    config.architecture = Architecture::qwen3moe;
    config.rope_style = RopeStyle::neox;
    config.has_qk_norm = true;
    config.normalize_expert_weights = true;
  } else if (*arch == "gemma2" || *arch == "gemma3") {
    config.architecture = *arch == "gemma2" ? Architecture::gemma2 : Architecture::gemma3;
    config.rope_style = RopeStyle::neox;
    config.scale_embedding = true;
    config.has_post_norms = true;
    config.ffn_activation = FfnActivation::gelu;
    config.has_qk_norm = *arch == "gemma3";
    config.sliding_period = *arch == "gemma2" ? 2 : 6;
  } else if (*arch == "phi3") {
    config.architecture = Architecture::phi3;
    config.rope_style = RopeStyle::neox;
    // Converted Phi-3 files fuse q, k and v; some have them apart, which llama.cpp also loads.
    config.fused_qkv = file.find_tensor("blk.0.attn_qkv.weight") != nullptr;
    config.fused_gate_up = true;
  } else {
    return make_error(Errc::unsupported, fmt::format("{}: architecture '{}' is not supported (supported: {})",
                                                     file.name(), *arch, kSupportedArchitectures));
  }
  if (const GgufValue* name = file.find("general.name"); name && name->as_string()) config.name = *name->as_string();

  const MetadataReader meta(file, *arch + ".");
  auto assign = [](int* out, Result<int> value) -> Status {
    if (!value) return value.error();
    *out = *value;
    return {};
  };
  DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_embd, meta.positive_int("embedding_length", kMaxWidth)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_layer, meta.positive_int("block_count", kMaxLayers)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_ff, meta.positive_int("feed_forward_length", kMaxFeedForward)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_head, meta.positive_int("attention.head_count", kMaxHeads)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&config.n_head_kv, meta.positive_int_or("attention.head_count_kv", config.n_head, kMaxHeads)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&config.context_length, meta.positive_int_or("context_length", 2048, kMaxContext)));
  if (config.n_embd % config.n_head != 0 && meta.find("attention.key_length") == nullptr) {
    return make_error(Errc::bad_format, fmt::format("{}: embedding_length {} is not divisible by head_count {}",
                                                    file.name(), config.n_embd, config.n_head));
  }
  DARKBLOOM_RETURN_IF_ERROR(assign(
      &config.head_dim, meta.positive_int_or("attention.key_length", config.n_embd / config.n_head, kMaxHeadDim)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&config.value_dim, meta.positive_int_or("attention.value_length", config.head_dim, kMaxHeadDim)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&config.rope_dims, meta.positive_int_or("rope.dimension_count", config.head_dim, kMaxHeadDim)));
  if (config.n_head % config.n_head_kv != 0) {
    return make_error(Errc::bad_format, fmt::format("{}: head_count {} is not a multiple of head_count_kv {}",
                                                    file.name(), config.n_head, config.n_head_kv));
  }
  if (config.value_dim != config.head_dim) {
    return make_error(Errc::unsupported,
                      fmt::format("{}: value_length {} differs from key_length {}, which is not supported", file.name(),
                                  config.value_dim, config.head_dim));
  }
  if (config.rope_dims > config.head_dim || config.rope_dims % 2 != 0) {
    return make_error(Errc::bad_format,
                      fmt::format("{}: rope.dimension_count {} must be even and at most the head size {}", file.name(),
                                  config.rope_dims, config.head_dim));
  }

  if (config.architecture == Architecture::qwen2moe || config.architecture == Architecture::qwen3moe) {
    DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_expert, meta.positive_int("expert_count", kMaxExperts)));
    DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_expert_used, meta.positive_int("expert_used_count", kMaxExperts)));
    // Without the key, llama.cpp takes the FFN width as shared among the experts a token uses.
    DARKBLOOM_RETURN_IF_ERROR(
        assign(&config.n_ff_expert,
               meta.positive_int_or("expert_feed_forward_length",
                                    std::max(1, config.n_ff / std::max(1, config.n_expert_used)), kMaxFeedForward)));
    if (config.architecture == Architecture::qwen2moe) {
      DARKBLOOM_RETURN_IF_ERROR(assign(&config.n_ff_shared, meta.positive_int_or("expert_shared_feed_forward_length",
                                                                                 config.n_ff, kMaxFeedForward)));
    }
    if (config.n_expert_used > config.n_expert) {
      return make_error(Errc::bad_format, fmt::format("{}: expert_used_count {} is more than expert_count {}",
                                                      file.name(), config.n_expert_used, config.n_expert));
    }
  }

  DARKBLOOM_RETURN_IF_ERROR(read_attention_variants(file, meta, &config));

  auto eps = meta.positive_float_or("attention.layer_norm_rms_epsilon", 1e-5f);
  if (!eps) return eps.error();
  config.rms_epsilon = *eps;
  auto theta = meta.positive_float_or("rope.freq_base", 10000.0f);
  if (!theta) return theta.error();
  config.rope_theta = *theta;

  if (const GgufValue* scaling = meta.find("rope.scaling.type")) {
    const std::string* type = scaling->as_string();
    if (type == nullptr) return make_error(Errc::bad_format, file.name() + ": rope.scaling.type must be a string");
    if (*type == "linear") {
      auto factor = meta.positive_float_or("rope.scaling.factor", 1.0f);
      if (!factor) return factor.error();
      config.rope_linear_scale = *factor;
    } else if (*type != "none") {
      return make_error(
          Errc::unsupported,
          fmt::format("{}: RoPE scaling '{}' is not supported (supported: none, linear)", file.name(), *type));
    }
  }

  const GgufTensorInfo* embedding = file.find_tensor("token_embd.weight");
  if (embedding == nullptr) return make_error(Errc::bad_format, file.name() + ": missing tensor 'token_embd.weight'");
  if (embedding->dims.size() != 2 || embedding->dims[0] != static_cast<uint64_t>(config.n_embd) ||
      embedding->dims[1] > static_cast<uint64_t>(kMaxVocab)) {
    return make_error(Errc::bad_format,
                      file.name() + ": tensor 'token_embd.weight' does not have shape [embedding_length, vocab]");
  }
  config.n_vocab = static_cast<int>(embedding->dims[1]);
  // Each layer has at least nine tensors (six with phi3's fused matrices); a larger count is a lie
  // that would make the loader allocate per-layer state for nothing.
  const uint64_t per_layer = config.fused_gate_up ? 6 : 9;
  if (static_cast<uint64_t>(config.n_layer) * per_layer > file.tensors().size()) {
    return make_error(Errc::bad_format, fmt::format("{}: block_count {} is more than the file's {} tensors can hold",
                                                    file.name(), config.n_layer, file.tensors().size()));
  }
  return config;
}

}  // namespace darkbloom::engine
