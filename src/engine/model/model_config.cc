#include "engine/model/model_config.h"

#include <fmt/format.h>

#include <limits>

namespace darkbloom::engine {
namespace {

// Bounds far above any real model (the largest open models have width 16384, 128 heads of 256,
// FFN 53248, 126 layers); with them every width product fits comfortably in an int.
constexpr int kMaxWidth = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxFeedForward = 1 << 20;
constexpr int kMaxHeads = 1024;
constexpr int kMaxHeadDim = 4096;
constexpr int kMaxContext = 1 << 24;
constexpr int kMaxVocab = 1 << 24;

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

}  // namespace

const char* architecture_name(Architecture architecture) {
  switch (architecture) {
    case Architecture::llama:
      return "llama";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::qwen3:
      return "qwen3";
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
  } else {
    return make_error(
        Errc::unsupported,
        fmt::format("{}: architecture '{}' is not supported (supported: llama, qwen2, qwen3)", file.name(), *arch));
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
  // Each layer has at least nine tensors; a larger count is a lie that would make the loader
  // allocate per-layer state for nothing.
  if (static_cast<uint64_t>(config.n_layer) * 9 > file.tensors().size()) {
    return make_error(Errc::bad_format, fmt::format("{}: block_count {} is more than the file's {} tensors can hold",
                                                    file.name(), config.n_layer, file.tensors().size()));
  }
  return config;
}

}  // namespace darkbloom::engine
