#include "engine/model/quant_recipe.h"

#include <gtest/gtest.h>

#include <string>

namespace darkbloom::engine {
namespace {

// Qwen2.5-0.5B's shape: 24 layers, 14 heads sharing 2 KV heads, 896 wide (not a multiple of 256),
// FFN 4864, output tied to the embedding.
const RecipeModel kQwen05{.n_layer = 24, .n_head = 14, .n_head_kv = 2, .has_output = false};
// Llama 3 8B's shape: 32 layers, 32 heads sharing 8 KV heads, 4096 wide, its own output matrix.
const RecipeModel kLlama8{.n_layer = 32, .n_head = 32, .n_head_kv = 8};

GgmlType type_of(QuantRecipe r, const RecipeModel& m, const std::string& name, int64_t cols) {
  return quant_recipe_tensor_type(r, m, name, cols);
}

TEST(QuantRecipe, names_parse_in_either_case_and_unknown_ones_do_not) {
  EXPECT_EQ(quant_recipe_from_name("Q4_K_M"), QuantRecipe::q4_k_m);
  EXPECT_EQ(quant_recipe_from_name("iq4_xs"), QuantRecipe::iq4_xs);
  EXPECT_FALSE(quant_recipe_from_name("Q4_K_X"));
  EXPECT_FALSE(quant_recipe_from_name(""));
  for (std::string_view name : quant_recipe_names()) {
    ASSERT_TRUE(quant_recipe_from_name(name)) << name;
    EXPECT_EQ(quant_recipe_name(*quant_recipe_from_name(name)), name);
  }
}

// What llama-quantize writes for Qwen2.5-0.5B at Q4_K_M: the 896-wide matrices cannot hold Q4_K
// blocks and fall back to Q5_0, the value projections that get more bits (Q6_K) to Q8_0, and the
// tied embedding is the output matrix (Q6_K, so Q8_0).
TEST(QuantRecipe, q4_k_m_on_a_896_wide_model_falls_back_to_32_element_types) {
  const auto r = QuantRecipe::q4_k_m;
  EXPECT_EQ(type_of(r, kQwen05, "token_embd.weight", 896), GgmlType::q8_0);
  EXPECT_EQ(type_of(r, kQwen05, "blk.5.attn_q.weight", 896), GgmlType::q5_0);
  EXPECT_EQ(type_of(r, kQwen05, "blk.5.attn_k.weight", 896), GgmlType::q5_0);
  EXPECT_EQ(type_of(r, kQwen05, "blk.0.attn_v.weight", 896), GgmlType::q8_0);  // more bits: first eighth
  EXPECT_EQ(type_of(r, kQwen05, "blk.3.attn_v.weight", 896), GgmlType::q5_0);
  EXPECT_EQ(type_of(r, kQwen05, "blk.5.attn_v.weight", 896), GgmlType::q8_0);  // (5 - 3) % 3 == 2
  EXPECT_EQ(type_of(r, kQwen05, "blk.5.ffn_down.weight", 4864), GgmlType::q6_k);
  EXPECT_EQ(type_of(r, kQwen05, "blk.6.ffn_down.weight", 4864), GgmlType::q4_k);
  EXPECT_EQ(type_of(r, kQwen05, "blk.21.ffn_down.weight", 4864), GgmlType::q6_k);  // last eighth
}

TEST(QuantRecipe, recipes_on_a_4096_wide_model_keep_their_k_types) {
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, kLlama8, "token_embd.weight", 4096), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, kLlama8, "output.weight", 4096), GgmlType::q6_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, kLlama8, "blk.10.attn_output.weight", 4096), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_m, kLlama8, "blk.0.attn_v.weight", 4096), GgmlType::q6_k);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_m, kLlama8, "blk.4.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q2_k, kLlama8, "blk.4.attn_v.weight", 4096), GgmlType::q4_k);  // 4 heads per KV head
  EXPECT_EQ(type_of(QuantRecipe::q2_k, kLlama8, "blk.4.ffn_down.weight", 14336), GgmlType::q3_k);
  EXPECT_EQ(type_of(QuantRecipe::q2_k, kLlama8, "blk.4.attn_output.weight", 4096), GgmlType::q3_k);
  EXPECT_EQ(type_of(QuantRecipe::q2_k, kLlama8, "blk.4.ffn_up.weight", 4096), GgmlType::q2_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_m, kLlama8, "blk.1.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_m, kLlama8, "blk.2.attn_v.weight", 4096), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_m, kLlama8, "blk.1.ffn_down.weight", 14336), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_m, kLlama8, "blk.2.ffn_down.weight", 14336), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::iq4_xs, kLlama8, "blk.2.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::iq4_xs, kLlama8, "blk.3.ffn_down.weight", 14336), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::iq4_xs, kLlama8, "blk.4.ffn_down.weight", 14336), GgmlType::iq4_xs);
  EXPECT_EQ(type_of(QuantRecipe::q4_0, kLlama8, "output.weight", 4096), GgmlType::q6_k);
  EXPECT_EQ(type_of(QuantRecipe::q8_0, kLlama8, "output.weight", 4096), GgmlType::q8_0);
}

TEST(QuantRecipe, the_small_and_large_variants_move_bits_where_llama_quantize_does) {
  EXPECT_EQ(type_of(QuantRecipe::q4_k_s, kLlama8, "blk.3.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_s, kLlama8, "blk.4.attn_v.weight", 4096), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_s, kLlama8, "blk.3.ffn_down.weight", 14336), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_s, kLlama8, "blk.4.ffn_down.weight", 14336), GgmlType::q4_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_l, kLlama8, "blk.9.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_l, kLlama8, "blk.9.ffn_down.weight", 14336), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_l, kLlama8, "blk.9.attn_output.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_s, kLlama8, "blk.9.attn_v.weight", 4096), GgmlType::q3_k);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_s, kLlama8, "blk.0.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::iq4_nl, kLlama8, "blk.9.attn_v.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, kLlama8, "blk.9.attn_qkv.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_m, kLlama8, "blk.9.attn_qkv.weight", 4096), GgmlType::q6_k);
  EXPECT_EQ(type_of(QuantRecipe::q3_k_m, kLlama8, "blk.9.attn_qkv.weight", 4096), GgmlType::q4_k);
}

TEST(QuantRecipe, file_types_are_llama_cpps_numbers_and_round_trip) {
  EXPECT_EQ(quant_recipe_file_type(QuantRecipe::q4_k_m), 15u);
  EXPECT_EQ(quant_recipe_file_type(QuantRecipe::q8_0), 7u);
  EXPECT_EQ(quant_recipe_file_type(QuantRecipe::iq4_xs), 30u);
  for (std::string_view name : quant_recipe_names()) {
    const QuantRecipe recipe = *quant_recipe_from_name(name);
    EXPECT_EQ(quant_recipe_from_file_type(quant_recipe_file_type(recipe)), recipe) << name;
  }
  EXPECT_FALSE(quant_recipe_from_file_type(1));   // mostly F16: no recipe here
  EXPECT_FALSE(quant_recipe_from_file_type(19));  // IQ2_XXS
}

TEST(QuantRecipe, rows_that_no_block_fits_fall_back_by_bits) {
  EXPECT_EQ(type_of(QuantRecipe::iq4_xs, kQwen05, "blk.9.ffn_up.weight", 896), GgmlType::iq4_nl);
  EXPECT_EQ(type_of(QuantRecipe::q2_k, kQwen05, "blk.9.ffn_up.weight", 896), GgmlType::iq4_nl);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_m, kQwen05, "blk.9.ffn_up.weight", 896), GgmlType::q5_1);
  EXPECT_EQ(type_of(QuantRecipe::q6_k, kQwen05, "blk.9.ffn_up.weight", 896), GgmlType::q8_0);
  EXPECT_EQ(type_of(QuantRecipe::q4_0, kQwen05, "blk.9.ffn_up.weight", 80), GgmlType::f16);
}

TEST(QuantRecipe, eight_expert_models_get_q8_0_attention_keys_and_values) {
  RecipeModel moe = kLlama8;
  moe.n_expert = 8;
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, moe, "blk.3.attn_v.weight", 4096), GgmlType::q8_0);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, moe, "blk.3.attn_k.weight", 4096), GgmlType::q8_0);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, moe, "blk.3.attn_output.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q2_k, moe, "blk.3.attn_output.weight", 4096), GgmlType::q5_k);
  EXPECT_EQ(type_of(QuantRecipe::q5_k_m, moe, "blk.3.attn_output.weight", 4096), GgmlType::q5_k);  // its base
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, moe, "blk.0.ffn_down_exps.weight", 14336), GgmlType::q6_k);
  EXPECT_EQ(type_of(QuantRecipe::q4_k_m, moe, "blk.0.ffn_gate_inp.weight", 4096), GgmlType::f32);
}

}  // namespace
}  // namespace darkbloom::engine
