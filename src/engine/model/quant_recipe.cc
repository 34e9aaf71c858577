#include "engine/model/quant_recipe.h"

#include <array>
#include <cctype>
#include <charconv>

namespace darkbloom::engine {
namespace {

using R = QuantRecipe;
using T = GgmlType;

struct RecipeInfo {
  QuantRecipe recipe;
  std::string_view name;
  GgmlType base;
  uint32_t file_type;  // llama_ftype, as `general.file_type` records it
};

constexpr std::array<RecipeInfo, 16> kRecipes = {{
    {R::q4_0, "Q4_0", T::q4_0, 2},
    {R::q4_1, "Q4_1", T::q4_1, 3},
    {R::q5_0, "Q5_0", T::q5_0, 8},
    {R::q5_1, "Q5_1", T::q5_1, 9},
    {R::q8_0, "Q8_0", T::q8_0, 7},
    {R::q2_k, "Q2_K", T::q2_k, 10},
    {R::q3_k_s, "Q3_K_S", T::q3_k, 11},
    {R::q3_k_m, "Q3_K_M", T::q3_k, 12},
    {R::q3_k_l, "Q3_K_L", T::q3_k, 13},
    {R::q4_k_s, "Q4_K_S", T::q4_k, 14},
    {R::q4_k_m, "Q4_K_M", T::q4_k, 15},
    {R::q5_k_s, "Q5_K_S", T::q5_k, 16},
    {R::q5_k_m, "Q5_K_M", T::q5_k, 17},
    {R::q6_k, "Q6_K", T::q6_k, 18},
    {R::iq4_nl, "IQ4_NL", T::iq4_nl, 25},
    {R::iq4_xs, "IQ4_XS", T::iq4_xs, 30},
}};

const RecipeInfo& info(QuantRecipe recipe) {
  return kRecipes[static_cast<size_t>(recipe)];
}

bool contains(std::string_view name, std::string_view part) {
  return name.find(part) != std::string_view::npos;
}

// The N of "blk.N.", or 0 for tensors outside the blocks.
int layer_of(std::string_view name) {
  constexpr std::string_view prefix = "blk.";
  if (name.substr(0, prefix.size()) != prefix) return 0;
  int layer = 0;
  const char* begin = name.data() + prefix.size();
  std::from_chars(begin, name.data() + name.size(), layer);
  return layer;
}

// The layers that get more bits in the _M recipes: the first and last eighth, and every third in
// between.
bool use_more_bits(int layer, int n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

uint32_t block_elements(GgmlType type) {
  const auto geometry = ggml_type_info(static_cast<uint32_t>(type));
  return geometry ? geometry->block_elements : 1;
}

GgmlType value_projection(QuantRecipe r, const RecipeModel& m, int layer, GgmlType type) {
  const int gqa = m.n_head_kv > 0 ? m.n_head / m.n_head_kv : 1;
  if (r == R::q2_k) {
    type = gqa >= 4 ? T::q4_k : T::q3_k;
  } else if (r == R::q3_k_m) {
    type = layer < 2 ? T::q5_k : T::q4_k;
  } else if (r == R::q3_k_l) {
    type = T::q5_k;
  } else if ((r == R::iq4_nl || r == R::iq4_xs) && gqa >= 4) {
    type = T::q5_k;
  } else if ((r == R::q4_k_m || r == R::q5_k_m) && use_more_bits(layer, m.n_layer)) {
    type = T::q6_k;
  } else if (r == R::q4_k_s && layer < 4) {
    type = T::q5_k;
  }
  // Eight-expert models (Mixtral's shape) spend the few bytes on a Q8_0 value projection.
  return m.n_expert == 8 ? T::q8_0 : type;
}

GgmlType down_projection(QuantRecipe r, const RecipeModel& m, int layer, GgmlType type) {
  const int n = m.n_layer;
  if (r == R::q2_k) return T::q3_k;
  if (r == R::q3_k_m) return layer < n / 16 ? T::q5_k : T::q4_k;
  if (r == R::q3_k_l) return T::q5_k;
  if (r == R::q4_k_m) return use_more_bits(layer, n) ? T::q6_k : type;
  if (layer < n / 8 && (r == R::iq4_nl || r == R::iq4_xs)) return T::q5_k;
  if (r == R::q5_k_m && use_more_bits(layer, n)) return T::q6_k;
  if (r == R::q4_k_s && layer < n / 8) return T::q5_k;
  return type;
}

GgmlType attention_output(QuantRecipe r, const RecipeModel& m, GgmlType type) {
  if (m.n_expert == 8) {
    switch (r) {
      case R::q2_k:
      case R::q3_k_s:
      case R::q3_k_m:
      case R::iq4_nl:
      case R::q4_k_s:
      case R::q4_k_m:
      case R::iq4_xs:
        return T::q5_k;
      default:
        return type;
    }
  }
  if (r == R::q2_k) return T::q3_k;
  if (r == R::q3_k_m) return T::q4_k;
  if (r == R::q3_k_l) return T::q5_k;
  return type;
}

// Fused QKV (phi3).
GgmlType fused_qkv(QuantRecipe r, GgmlType type) {
  if (r == R::q3_k_m || r == R::q3_k_l) return T::q4_k;
  if (r == R::q4_k_m) return T::q5_k;
  if (r == R::q5_k_m) return T::q6_k;
  return type;
}

// A type whose blocks do not fit the rows falls back to a 32-element type of about as many bits.
GgmlType fit_rows(GgmlType type, int64_t cols) {
  if (cols % block_elements(type) == 0) return type;
  switch (type) {
    case T::q2_k:
    case T::q3_k:
    case T::iq4_xs:
      type = T::iq4_nl;
      break;
    case T::q4_k:
      type = T::q5_0;
      break;
    case T::q5_k:
      type = T::q5_1;
      break;
    case T::q6_k:
      type = T::q8_0;
      break;
    default:
      break;
  }
  // llama-quantize refuses such a matrix; F16 keeps synthetic shapes writable.
  return cols % block_elements(type) == 0 ? type : T::f16;
}

}  // namespace

std::optional<QuantRecipe> quant_recipe_from_name(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const RecipeInfo& recipe : kRecipes) {
    if (recipe.name == upper) return recipe.recipe;
  }
  return std::nullopt;
}

std::string_view quant_recipe_name(QuantRecipe recipe) {
  return info(recipe).name;
}

std::vector<std::string_view> quant_recipe_names() {
  std::vector<std::string_view> names;
  for (const RecipeInfo& recipe : kRecipes) names.push_back(recipe.name);
  return names;
}

GgmlType quant_recipe_base_type(QuantRecipe recipe) {
  return info(recipe).base;
}

uint32_t quant_recipe_file_type(QuantRecipe recipe) {
  return info(recipe).file_type;
}

std::optional<QuantRecipe> quant_recipe_from_file_type(uint64_t file_type) {
  for (const RecipeInfo& recipe : kRecipes) {
    if (recipe.file_type == file_type) return recipe.recipe;
  }
  return std::nullopt;
}

GgmlType quant_recipe_tensor_type(QuantRecipe recipe, const RecipeModel& model, std::string_view name, int64_t cols) {
  const GgmlType base = info(recipe).base;
  if (contains(name, "ffn_gate_inp.weight")) return T::f32;  // MoE routers are never quantized
  GgmlType type = base;
  const int layer = layer_of(name);
  if (name == "output.weight" || (!model.has_output && name == "token_embd.weight")) {
    // The output matrix: Q6_K, or Q8_0 when the base type's blocks do not fit its rows.
    type = cols % block_elements(base) != 0 || base == T::q8_0 ? T::q8_0 : T::q6_k;
  } else if (name == "token_embd.weight") {
    type = base;
  } else if (contains(name, "attn_v.weight")) {
    type = value_projection(recipe, model, layer, base);
  } else if (contains(name, "attn_k.weight")) {
    if (model.n_expert == 8) type = T::q8_0;
  } else if (contains(name, "ffn_down")) {
    type = down_projection(recipe, model, layer, base);
  } else if (contains(name, "attn_output.weight")) {
    type = attention_output(recipe, model, base);
  } else if (contains(name, "attn_qkv.weight")) {
    type = fused_qkv(recipe, base);
  }
  return fit_rows(type, cols);
}

}  // namespace darkbloom::engine
