// Quantization recipes: the per-tensor weight types of the presets people download (Q4_K_M,
// Q5_K_M, IQ4_XS, ...). A preset names a base type; some tensors get more bits (the output, the
// value projection, some down projections), and a matrix whose rows do not fill whole blocks of
// its type falls back to a type whose blocks fit. The rules follow llama.cpp's `llama-quantize`
// without an importance matrix (src/llama-quant.cpp, `llama_tensor_get_type`, 2025); docs/engine.md
// has the table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf/ggml_type.h"

namespace darkbloom::engine {

enum class QuantRecipe {
  q4_0,
  q4_1,
  q5_0,
  q5_1,
  q8_0,
  q2_k,
  q3_k_s,
  q3_k_m,
  q3_k_l,
  q4_k_s,
  q4_k_m,
  q5_k_s,
  q5_k_m,
  q6_k,
  iq4_nl,
  iq4_xs,
};

// The model facts the rules look at.
struct RecipeModel {
  int n_layer = 1;
  int n_head = 1;
  int n_head_kv = 1;
  int n_expert = 0;        // 0 or 1 for a dense model
  bool has_output = true;  // false when the output matrix is the token embedding (tied)
};

// "Q4_K_M", "q4_k_m", ...; nullopt for an unknown name.
std::optional<QuantRecipe> quant_recipe_from_name(std::string_view name);
std::string_view quant_recipe_name(QuantRecipe recipe);  // "Q4_K_M"
// Every recipe's name, in the order of the enum.
std::vector<std::string_view> quant_recipe_names();
// The recipe's base type (the type of most matrices).
GgmlType quant_recipe_base_type(QuantRecipe recipe);
// The number files record in `general.file_type` for the recipe (llama.cpp's llama_ftype), and
// back; nullopt for a number that is no recipe here.
uint32_t quant_recipe_file_type(QuantRecipe recipe);
std::optional<QuantRecipe> quant_recipe_from_file_type(uint64_t file_type);

// The type of the matrix `tensor_name` ("blk.3.ffn_down.weight"), whose rows have `cols`
// elements, in a file made with `recipe`.
GgmlType quant_recipe_tensor_type(QuantRecipe recipe, const RecipeModel& model, std::string_view tensor_name,
                                  int64_t cols);

}  // namespace darkbloom::engine
