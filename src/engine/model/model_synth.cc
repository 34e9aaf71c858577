#include "engine/model/model_synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "engine/gguf/gguf_writer.h"
#include "engine/kernels/quantize.h"
#include "engine/model/quant_recipe.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/vocabulary_spec.h"

namespace darkbloom::engine {
namespace {

// splitmix64: fast, seedable, and good enough for weights nobody will train.
class WeightRandom {
 public:
  explicit WeightRandom(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float symmetric() { return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0); }

 private:
  uint64_t state_;
};

uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = seed ^ 0xCBF29CE484222325ull;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return h;
}

struct TensorPlan {
  std::string name;
  GgmlType type;
  int64_t cols, rows;  // rows = 1 for vectors
  enum class Init { matrix, norm, bias } init;
  int64_t experts = 0;  // > 0: a stack of this many matrices (a three-dimensional tensor)
};

GgmlType choose_type(GgmlType wanted, int64_t cols) {
  const auto info = ggml_type_info(static_cast<uint32_t>(wanted));
  if (info && cols % info->block_elements == 0) return wanted;
  // Rows that do not fill whole blocks fall back to a finer type, as quantizers do.
  if (cols % 32 == 0) return GgmlType::q8_0;
  return GgmlType::f16;
}

constexpr const char* kArchitectures = "llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3";

bool is_moe(const std::string& arch) {
  return arch == "qwen2moe" || arch == "qwen3moe";
}

bool known_architecture(const std::string& arch) {
  for (const char* known : {"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "phi3"}) {
    if (arch == known) return true;
  }
  return false;
}

// Every tensor of the model, with its type: the recipe's choice or the one type asked for.
std::vector<TensorPlan> plan_tensors(const SynthOptions& o, int head_dim, int64_t n_vocab,
                                     const std::optional<QuantRecipe>& recipe, GgmlType base_type) {
  const std::string& arch = o.architecture;
  const int64_t q_width = static_cast<int64_t>(o.n_head) * head_dim;
  const int64_t kv_width = static_cast<int64_t>(o.n_head_kv) * head_dim;
  std::vector<TensorPlan> plan;
  const RecipeModel recipe_model{.n_layer = o.n_layer,
                                 .n_head = o.n_head,
                                 .n_head_kv = o.n_head_kv,
                                 .n_expert = is_moe(arch) ? o.n_expert : 0,
                                 .has_output = !o.tied_output};
  auto type_of = [&](const std::string& name, int64_t cols) {
    return recipe ? quant_recipe_tensor_type(*recipe, recipe_model, name, cols) : choose_type(base_type, cols);
  };
  auto matrix = [&](std::string name, int64_t cols, int64_t rows, int64_t experts = 0) {
    const GgmlType type = type_of(name, cols);
    plan.push_back({std::move(name), type, cols, rows, TensorPlan::Init::matrix, experts});
  };
  auto vector = [&](std::string name, int64_t length, TensorPlan::Init init) {
    plan.push_back({std::move(name), GgmlType::f32, length, 1, init});
  };
  const bool biases = arch == "qwen2" || arch == "qwen2moe";
  const bool qk_norm = arch == "qwen3" || arch == "qwen3moe" || arch == "gemma3";
  const bool gemma = arch == "gemma2" || arch == "gemma3";
  const bool phi3 = arch == "phi3";
  matrix("token_embd.weight", o.n_embd, n_vocab);
  for (int l = 0; l < o.n_layer; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    vector(p + "attn_norm.weight", o.n_embd, TensorPlan::Init::norm);
    if (phi3) {
      matrix(p + "attn_qkv.weight", o.n_embd, q_width + 2 * kv_width);
    } else {
      matrix(p + "attn_q.weight", o.n_embd, q_width);
      matrix(p + "attn_k.weight", o.n_embd, kv_width);
      matrix(p + "attn_v.weight", o.n_embd, kv_width);
    }
    if (biases) {
      vector(p + "attn_q.bias", q_width, TensorPlan::Init::bias);
      vector(p + "attn_k.bias", kv_width, TensorPlan::Init::bias);
      vector(p + "attn_v.bias", kv_width, TensorPlan::Init::bias);
    }
    if (qk_norm) {
      vector(p + "attn_q_norm.weight", head_dim, TensorPlan::Init::norm);
      vector(p + "attn_k_norm.weight", head_dim, TensorPlan::Init::norm);
    }
    matrix(p + "attn_output.weight", q_width, o.n_embd);
    if (gemma) vector(p + "post_attention_norm.weight", o.n_embd, TensorPlan::Init::norm);
    vector(p + "ffn_norm.weight", o.n_embd, TensorPlan::Init::norm);
    if (gemma) vector(p + "post_ffw_norm.weight", o.n_embd, TensorPlan::Init::norm);
    if (phi3) {
      matrix(p + "ffn_up.weight", o.n_embd, 2 * int64_t{o.n_ff});  // gate rows, then up rows
      matrix(p + "ffn_down.weight", o.n_ff, o.n_embd);
      continue;
    }
    if (!is_moe(arch)) {
      matrix(p + "ffn_gate.weight", o.n_embd, o.n_ff);
      matrix(p + "ffn_up.weight", o.n_embd, o.n_ff);
      matrix(p + "ffn_down.weight", o.n_ff, o.n_embd);
      continue;
    }
    // The router stays F32, as quantizers leave it.
    plan.push_back({p + "ffn_gate_inp.weight", GgmlType::f32, o.n_embd, o.n_expert, TensorPlan::Init::matrix});
    const int64_t ff = o.n_ff_expert > 0 ? o.n_ff_expert : o.n_ff;
    matrix(p + "ffn_gate_exps.weight", o.n_embd, ff, o.n_expert);
    matrix(p + "ffn_up_exps.weight", o.n_embd, ff, o.n_expert);
    matrix(p + "ffn_down_exps.weight", ff, o.n_embd, o.n_expert);
    if (arch == "qwen2moe") {
      const int64_t shared = o.n_ff_shared > 0 ? o.n_ff_shared : o.n_ff;
      vector(p + "ffn_gate_inp_shexp.weight", o.n_embd, TensorPlan::Init::bias);
      matrix(p + "ffn_gate_shexp.weight", o.n_embd, shared);
      matrix(p + "ffn_up_shexp.weight", o.n_embd, shared);
      matrix(p + "ffn_down_shexp.weight", shared, o.n_embd);
    }
  }
  vector("output_norm.weight", o.n_embd, TensorPlan::Init::norm);
  if (!o.tied_output) matrix("output.weight", o.n_embd, n_vocab);
  return plan;
}

// The architecture's hyperparameters, as llama.cpp's converter names them.
void add_model_metadata(GgufWriter& writer, const SynthOptions& o, int head_dim, int64_t n_vocab,
                        const std::optional<QuantRecipe>& recipe) {
  const std::string& arch = o.architecture;
  writer.add_metadata("general.architecture", gguf_string(arch));
  writer.add_metadata("general.name", gguf_string(o.name));
  if (recipe) writer.add_metadata("general.file_type", gguf_u32(quant_recipe_file_type(*recipe)));
  writer.add_metadata(arch + ".context_length", gguf_u32(static_cast<uint32_t>(o.context_length)));
  writer.add_metadata(arch + ".embedding_length", gguf_u32(static_cast<uint32_t>(o.n_embd)));
  writer.add_metadata(arch + ".block_count", gguf_u32(static_cast<uint32_t>(o.n_layer)));
  writer.add_metadata(arch + ".feed_forward_length", gguf_u32(static_cast<uint32_t>(o.n_ff)));
  writer.add_metadata(arch + ".attention.head_count", gguf_u32(static_cast<uint32_t>(o.n_head)));
  writer.add_metadata(arch + ".attention.head_count_kv", gguf_u32(static_cast<uint32_t>(o.n_head_kv)));
  writer.add_metadata(arch + ".attention.layer_norm_rms_epsilon", gguf_f32(o.rms_epsilon));
  writer.add_metadata(arch + ".rope.freq_base", gguf_f32(o.rope_theta));
  if (o.head_dim > 0) {
    writer.add_metadata(arch + ".attention.key_length", gguf_u32(static_cast<uint32_t>(head_dim)));
    writer.add_metadata(arch + ".attention.value_length", gguf_u32(static_cast<uint32_t>(head_dim)));
  }
  writer.add_metadata(arch + ".rope.dimension_count",
                      gguf_u32(static_cast<uint32_t>(o.rope_dims > 0 ? o.rope_dims : head_dim)));
  if (arch == "gemma2" || arch == "gemma3" || arch == "phi3") {
    // Published defaults: Gemma 2 slides over 4096 positions on every other layer, Gemma 3 over
    // 512 (1B) on five layers of six, Phi-3-mini over 2047 on every layer.
    const int window = o.sliding_window >= 0 ? o.sliding_window
                       : arch == "gemma2"    ? 4096
                       : arch == "gemma3"    ? 512
                                             : 2047;
    if (window > 0) writer.add_metadata(arch + ".attention.sliding_window", gguf_u32(static_cast<uint32_t>(window)));
  }
  if (arch == "gemma2") {
    writer.add_metadata(arch + ".attn_logit_softcapping", gguf_f32(o.attn_softcap > 0 ? o.attn_softcap : 50.0f));
    writer.add_metadata(arch + ".final_logit_softcapping", gguf_f32(o.final_softcap > 0 ? o.final_softcap : 30.0f));
  }
  writer.add_metadata(arch + ".vocab_size", gguf_u32(static_cast<uint32_t>(n_vocab)));
  if (is_moe(arch)) {
    writer.add_metadata(arch + ".expert_count", gguf_u32(static_cast<uint32_t>(o.n_expert)));
    writer.add_metadata(arch + ".expert_used_count", gguf_u32(static_cast<uint32_t>(o.n_expert_used)));
    writer.add_metadata(arch + ".expert_feed_forward_length",
                        gguf_u32(static_cast<uint32_t>(o.n_ff_expert > 0 ? o.n_ff_expert : o.n_ff)));
    if (arch == "qwen2moe") {
      writer.add_metadata(arch + ".expert_shared_feed_forward_length",
                          gguf_u32(static_cast<uint32_t>(o.n_ff_shared > 0 ? o.n_ff_shared : o.n_ff)));
    }
  }
}

// The tokenizer: vocabulary, scores or merges, special tokens, chat template.
void add_vocabulary_metadata(GgufWriter& writer, const VocabularySpec& vocabulary) {
  writer.add_metadata("tokenizer.ggml.model", gguf_string(vocabulary.model));
  writer.add_metadata("tokenizer.ggml.pre", gguf_string(vocabulary.pre));
  writer.add_metadata("tokenizer.ggml.tokens", gguf_string_array(vocabulary.tokens));
  writer.add_metadata("tokenizer.ggml.token_type", gguf_i32_array(vocabulary.token_types));
  if (!vocabulary.merges.empty() || vocabulary.model == "gpt2") {
    writer.add_metadata("tokenizer.ggml.merges", gguf_string_array(vocabulary.merges));
  }
  if (!vocabulary.scores.empty()) writer.add_metadata("tokenizer.ggml.scores", gguf_f32_array(vocabulary.scores));
  if (vocabulary.model == "llama") {
    writer.add_metadata("tokenizer.ggml.add_space_prefix", gguf_bool(vocabulary.add_space_prefix));
  }
  if (vocabulary.unknown) {
    writer.add_metadata("tokenizer.ggml.unknown_token_id", gguf_u32(static_cast<uint32_t>(*vocabulary.unknown)));
  }
  if (vocabulary.bos)
    writer.add_metadata("tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(*vocabulary.bos)));
  if (vocabulary.eos)
    writer.add_metadata("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(*vocabulary.eos)));
  if (vocabulary.padding) {
    writer.add_metadata("tokenizer.ggml.padding_token_id", gguf_u32(static_cast<uint32_t>(*vocabulary.padding)));
  }
  writer.add_metadata("tokenizer.ggml.add_bos_token", gguf_bool(vocabulary.add_bos));
  if (!vocabulary.chat_template.empty()) {
    writer.add_metadata("tokenizer.chat_template", gguf_string(vocabulary.chat_template));
  }
}

int head_size(const SynthOptions& o) {
  return o.head_dim > 0 ? o.head_dim : o.n_embd / std::max(1, o.n_head);
}

// The options' shape: every size within what the engine loads, so a written file always loads.
Status check_shape(const SynthOptions& o) {
  auto fail = [](const std::string& message) { return make_error(Errc::invalid_argument, message); };
  if (!known_architecture(o.architecture)) {
    return fail(fmt::format("architecture '{}' is not supported ({})", o.architecture, kArchitectures));
  }
  if (o.sliding_window < -1 || o.sliding_window > 1 << 22) return fail("the sliding window must be -1 to 4194304");
  if (o.attn_softcap < 0 || o.final_softcap < 0) return fail("soft-caps must not be negative");
  if (is_moe(o.architecture)) {
    if (o.n_expert < 2 || o.n_expert > 256) return fail("experts must be between 2 and 256");
    if (o.n_expert_used < 1 || o.n_expert_used > o.n_expert) return fail("experts-used must be between 1 and experts");
    for (int width : {o.n_ff_expert, o.n_ff_shared}) {
      if (width != 0 && (width < 32 || width % 32 != 0 || width > 1 << 20))
        return fail("expert FFN widths must be positive multiples of 32");
    }
  }
  if (o.n_layer < 1 || o.n_layer > 512) return fail("layers must be between 1 and 512");
  if (o.n_embd < 32 || o.n_embd > 65536 || o.n_embd % 32 != 0)
    return fail("embedding width must be a multiple of 32 between 32 and 65536");
  if (o.n_head < 1 || o.n_head_kv < 1 || o.n_head % o.n_head_kv != 0)
    return fail("heads must be a positive multiple of kv-heads");
  const int head_dim = head_size(o);
  if (o.head_dim == 0 && o.n_embd % o.n_head != 0)
    return fail("embedding width must be divisible by heads (or set head-dim)");
  if (head_dim < 2 || head_dim % 2 != 0 || head_dim > 1024) return fail("head size must be even and at most 1024");
  if (o.rope_dims < 0 || o.rope_dims % 2 != 0 || o.rope_dims > head_dim)
    return fail("rope dimensions must be even and at most the head size");
  if (o.n_ff < 32 || o.n_ff % 32 != 0 || o.n_ff > 1 << 20) return fail("FFN width must be a positive multiple of 32");
  if (o.context_length < 16 || o.context_length > 1 << 22) return fail("context length must be between 16 and 4194304");
  return {};
}

}  // namespace

Status synthesize_model(const SynthOptions& o, const std::string& out_path,
                        const std::function<void(size_t, size_t)>& progress) {
  auto fail = [](const std::string& message) { return make_error(Errc::invalid_argument, message); };
  DARKBLOOM_RETURN_IF_ERROR(check_shape(o));
  const int head_dim = head_size(o);

  std::optional<QuantRecipe> recipe;
  GgmlType base_type = GgmlType::q8_0;
  if (!o.recipe.empty()) {
    recipe = quant_recipe_from_name(o.recipe);
    if (!recipe) {
      return fail(fmt::format("recipe '{}' is unknown ({})", o.recipe, fmt::join(quant_recipe_names(), ", ")));
    }
  } else {
    const auto parsed = ggml_type_from_name(o.weight_type);
    if (!parsed || !ggml_type_supported(*parsed)) {
      if (quant_recipe_from_name(o.weight_type)) {
        return fail(fmt::format("'{}' is a recipe, not a weight type: use --recipe {}", o.weight_type,
                                quant_recipe_name(*quant_recipe_from_name(o.weight_type))));
      }
      return fail(fmt::format("weight type '{}' is not supported ({})", o.weight_type, supported_ggml_type_names()));
    }
    base_type = *parsed;
  }

  Result<VocabularySpec> vocabulary = o.tokenizer_json.empty()
                                          ? synthesize_vocabulary(o.n_vocab > 0 ? o.n_vocab : 512, o.seed)
                                          : import_hf_tokenizer(o.tokenizer_json, o.tokenizer_config);
  if (!vocabulary) return vocabulary.error();
  if (!o.tokenizer_json.empty() && o.n_vocab > 0) {
    const auto real = static_cast<int>(vocabulary->tokens.size());
    if (o.n_vocab < real) {
      return fail(fmt::format("the tokenizer has {} tokens; --vocab {} is smaller", real, o.n_vocab));
    }
    // Published models pad the embedding past the tokenizer (Qwen2.5: 151,643 + added tokens
    // padded to 151,936); the padding rows are unused tokens, as in their GGUF files.
    for (int id = real; id < o.n_vocab; ++id) {
      vocabulary->tokens.push_back(fmt::format("[PAD{}]", id));
      vocabulary->token_types.push_back(static_cast<int32_t>(TokenType::unused));
    }
  }
  const int64_t n_vocab = static_cast<int64_t>(vocabulary->tokens.size());

  GgufWriter writer;
  add_model_metadata(writer, o, head_dim, n_vocab, recipe);
  add_vocabulary_metadata(writer, *vocabulary);

  const std::vector<TensorPlan> plan = plan_tensors(o, head_dim, n_vocab, recipe, base_type);
  for (const TensorPlan& t : plan) {
    std::vector<uint64_t> dims{static_cast<uint64_t>(t.cols)};
    if (t.rows > 1 || t.init == TensorPlan::Init::matrix) dims.push_back(static_cast<uint64_t>(t.rows));
    if (t.experts > 0) dims.push_back(static_cast<uint64_t>(t.experts));
    const uint64_t seed = tensor_seed(o.seed, t.name);
    DARKBLOOM_RETURN_IF_ERROR(writer.add_tensor(t.name, t.type, dims, [t, seed](uint8_t* out) {
      WeightRandom random(seed);
      // Matrices: uniform with variance 1/cols keeps activations near unit scale through the
      // layers, so logits are spread enough for tests to tell tokens apart.
      const float amplitude = t.init == TensorPlan::Init::matrix ? std::sqrt(3.0f / static_cast<float>(t.cols))
                              : t.init == TensorPlan::Init::norm ? 0.1f
                                                                 : 0.05f;
      const float center = t.init == TensorPlan::Init::norm ? 1.0f : 0.0f;
      std::vector<float> row(static_cast<size_t>(t.cols));
      const size_t row_bytes = ggml_row_bytes(t.type, static_cast<uint64_t>(t.cols));
      for (int64_t r = 0; r < t.rows * std::max<int64_t>(1, t.experts); ++r) {
        for (auto& v : row) v = center + amplitude * random.symmetric();
        kernels::quantize_row(t.type, row.data(), out + static_cast<size_t>(r) * row_bytes, t.cols);
      }
    }));
  }
  return writer.write(out_path, progress);
}

}  // namespace darkbloom::engine
