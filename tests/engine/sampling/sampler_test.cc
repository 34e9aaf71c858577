#include "engine/sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <vector>

namespace darkbloom::engine {
namespace {

std::vector<float> logits_of(std::initializer_list<float> values) {
  return values;
}

std::vector<int32_t> draw(const SamplingParams& params, const std::vector<float>& logits, int n) {
  Sampler sampler(params, {});
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> copy = logits;
    out.push_back(sampler.sample(copy));
  }
  return out;
}

std::vector<float> flat(int n) {
  return std::vector<float>(static_cast<size_t>(n), 0.0f);
}

TEST(Sampler, temperature_zero_is_argmax) {
  SamplingParams params;
  params.temperature = 0.0f;
  EXPECT_EQ(draw(params, logits_of({0.1f, 3.0f, 2.9f, -1.0f}), 5), (std::vector<int32_t>(5, 1)));
}

TEST(Sampler, same_seed_same_tokens_and_different_seeds_diverge) {
  SamplingParams params;
  params.seed = 42;
  const auto a = draw(params, flat(1000), 50);
  const auto b = draw(params, flat(1000), 50);
  EXPECT_EQ(a, b);
  params.seed = 43;
  EXPECT_NE(draw(params, flat(1000), 50), a);
}

TEST(Sampler, top_k_one_is_greedy_and_top_k_limits_the_choice) {
  SamplingParams params;
  params.seed = 1;
  params.top_k = 1;
  EXPECT_EQ(draw(params, logits_of({0.0f, 0.5f, 0.4f}), 20), (std::vector<int32_t>(20, 1)));
  params.top_k = 2;
  for (int32_t token : draw(params, logits_of({0.0f, 0.5f, 0.4f, 0.1f}), 200)) EXPECT_TRUE(token == 1 || token == 2);
}

TEST(Sampler, top_p_keeps_the_smallest_set_reaching_the_mass) {
  SamplingParams params;
  params.seed = 2;
  params.top_p = 0.5f;
  // Probabilities ~0.6, 0.3, 0.1: the first token alone reaches 0.5.
  const float a = std::log(0.6f), b = std::log(0.3f), c = std::log(0.1f);
  for (int32_t token : draw(params, logits_of({c, a, b}), 100)) EXPECT_EQ(token, 1);
  params.top_p = 0.8f;
  std::map<int32_t, int> counts;
  for (int32_t token : draw(params, logits_of({c, a, b}), 400)) ++counts[token];
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_GT(counts[2], 50);
}

TEST(Sampler, top_p_over_a_large_vocabulary_uses_the_full_sort_when_the_head_is_not_enough) {
  SamplingParams params;
  params.seed = 3;
  params.top_p = 0.99f;
  // Flat over 5000 tokens: the first 1024 candidates hold ~20% of the mass.
  std::map<int32_t, int> counts;
  for (int32_t token : draw(params, flat(5000), 2000)) ++counts[token];
  EXPECT_GT(counts.size(), 1500u);
}

TEST(Sampler, min_p_drops_tokens_far_below_the_best) {
  SamplingParams params;
  params.seed = 4;
  params.min_p = 0.2f;
  const float best = 0.0f, close = std::log(0.5f), far = std::log(0.05f);
  for (int32_t token : draw(params, logits_of({far, best, close, far}), 300)) EXPECT_TRUE(token == 1 || token == 2);
}

TEST(Sampler, sampling_frequencies_follow_the_softmax) {
  SamplingParams params;
  params.seed = 5;
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int32_t token : draw(params, logits_of({0.0f, std::log(3.0f)}), n)) ++counts[token];
  // Expected 25% / 75%; the standard deviation of the count is ~61.
  EXPECT_NEAR(counts[1], 0.75 * n, 400);
}

TEST(Sampler, penalties_push_repeated_tokens_down) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt{0};
  Sampler sampler(params, prompt);
  std::vector<float> logits{1.0f, 0.8f};
  EXPECT_EQ(sampler.sample(logits), 1);  // token 0 was in the prompt: 1.0 / 2 < 0.8
  EXPECT_FLOAT_EQ(logits[0], 0.5f);

  SamplingParams presence;
  presence.temperature = 0.0f;
  presence.presence_penalty = 0.5f;
  presence.frequency_penalty = 0.25f;
  Sampler output_sampler(presence, {});
  output_sampler.accept(0);
  output_sampler.accept(0);
  std::vector<float> more{1.0f, 0.2f};
  EXPECT_EQ(output_sampler.sample(more), 1);  // 1.0 - 0.5 - 2 * 0.25 = 0.0 < 0.2
  EXPECT_FLOAT_EQ(more[0], 0.0f);
}

TEST(Sampler, nan_logits_are_never_chosen_and_all_nan_is_an_error) {
  SamplingParams params;
  params.seed = 9;
  params.min_p = 0.05f;
  params.top_p = 0.9f;
  for (int32_t token : draw(params, logits_of({NAN, 1.0f, NAN, 0.5f}), 200)) EXPECT_TRUE(token == 1 || token == 3);
  Sampler sampler(params, {});
  std::vector<float> all_nan(16, NAN);
  EXPECT_THROW(sampler.sample(all_nan), std::runtime_error);
}

TEST(Sampler, out_of_range_settings_are_rejected_with_the_field_name) {
  auto error_of = [](SamplingParams p) { return p.validate().ok() ? std::string() : p.validate().error().message; };
  SamplingParams p;
  EXPECT_TRUE(p.validate());
  p.temperature = -1;
  EXPECT_NE(error_of(p).find("temperature"), std::string::npos);
  p = {};
  p.top_p = 0;
  EXPECT_NE(error_of(p).find("top_p"), std::string::npos);
  p = {};
  p.min_p = 2;
  EXPECT_NE(error_of(p).find("min_p"), std::string::npos);
  p = {};
  p.presence_penalty = 3;
  EXPECT_NE(error_of(p).find("presence_penalty"), std::string::npos);
  p = {};
  p.temperature = NAN;
  EXPECT_FALSE(p.validate());
}

}  // namespace
}  // namespace darkbloom::engine
