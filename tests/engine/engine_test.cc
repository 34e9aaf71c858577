#include "engine/engine.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <semaphore>
#include <thread>

#include "base/json.h"
#include "base/thread_pool.h"
#include "engine/collecting_sink.h"
#include "engine/kernels/kernel_set.h"
#include "engine/model/logit_evaluator.h"
#include "engine/model/model_synth.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "support/temp_dir.h"

namespace darkbloom::engine {
namespace {

using darkbloom::testing::TempDir;

// Collects a request's output; wait() blocks until on_finish.

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    SynthOptions options;
    options.n_layer = 2;
    options.n_vocab = 600;
    model_path_ = dir_->file("engine.gguf");
    ASSERT_TRUE(synthesize_model(options, model_path_));
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    EngineOptions options;
    options.model_path = model_path_;
    options.threads = 2;
    options.context = 256;
    auto loaded = Engine::load(options);
    ASSERT_TRUE(loaded) << loaded.error().message;
    engine_ = std::move(*loaded);
  }

  GenerationRequest request(const std::string& prompt, int max_tokens, float temperature = 0.0f) {
    GenerationRequest r;
    r.prompt_tokens = engine_->tokenizer().encode(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.ignore_eos = true;
    return r;
  }

  std::pair<std::string, FinishEvent> run(GenerationRequest r) {
    auto sink = std::make_shared<CollectingSink>();
    auto id = engine_->submit(std::move(r), sink);
    if (!id) {
      ADD_FAILURE() << "submit failed: " << id.error().message;
      FinishEvent failed;
      failed.reason = FinishReason::error;
      return {"", failed};
    }
    const FinishEvent event = sink->wait();
    return {sink->text(), event};
  }

  static TempDir* dir_;
  static std::string model_path_;
  std::unique_ptr<Engine> engine_;
};

TempDir* EngineTest::dir_ = nullptr;
std::string EngineTest::model_path_;

TEST_F(EngineTest, greedy_generation_is_deterministic_and_stops_at_max_tokens) {
  const auto [first, event] = run(request("The river ran", 24));
  const auto [second, again] = run(request("The river ran", 24));
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(first, second);
  EXPECT_EQ(event.reason, FinishReason::length);
  EXPECT_EQ(event.completion_tokens, 24);
  EXPECT_EQ(event.prompt_tokens, static_cast<int>(engine_->tokenizer().encode("The river ran").size()));
}

// The scheduler decodes incrementally with the KV cache; recomputing the whole sequence from
// scratch at every step must choose the same greedy tokens.
TEST_F(EngineTest, structured_output_is_valid_and_the_same_alone_and_batched) {
  auto schema = json::parse(
      R"({"type":"object","properties":{"mood":{"enum":["calm","busy"]},"n":{"type":"integer","minimum":0,"maximum":99},)"
      R"("tags":{"type":"array","items":{"type":"string","maxLength":3},"maxItems":2}},"required":["mood","n","tags"]})",
      "schema");
  ASSERT_TRUE(schema);
  auto grammar = engine_->json_grammar(&*schema);
  ASSERT_TRUE(grammar) << grammar.error().message;
  auto constrained = [&](uint64_t seed) {
    GenerationRequest r = request("Report:", 96, 1.0f);
    r.ignore_eos = false;
    r.sampling.seed = seed;
    r.grammar = *grammar;
    r.stop = {"\""};  // stop strings do not apply to structured output
    return r;
  };
  std::vector<std::pair<std::string, FinishEvent>> alone;
  for (uint64_t seed = 1; seed <= 6; ++seed) alone.push_back(run(constrained(seed)));
  int stopped = 0;
  for (const auto& [text, event] : alone) {
    if (event.reason != FinishReason::stop) continue;
    ++stopped;
    auto value = json::parse(text, "answer");
    ASSERT_TRUE(value) << text;
    const auto& object = value->as_object();
    EXPECT_TRUE(object.at("mood") == "calm" || object.at("mood") == "busy") << text;
    EXPECT_LE(object.at("n").as_int64(), 99) << text;
    EXPECT_LE(object.at("tags").as_array().size(), 2u) << text;
  }
  EXPECT_GE(stopped, 3);
  // All six at once: one batch, the same answers token for token.
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine_->submit(constrained(seed), sinks.back()));
  }
  for (size_t i = 0; i < sinks.size(); ++i) {
    const FinishEvent event = sinks[i]->wait();
    EXPECT_EQ(sinks[i]->text(), alone[i].first);
    EXPECT_EQ(event.reason, alone[i].second.reason);
    EXPECT_EQ(event.completion_tokens, alone[i].second.completion_tokens);
  }
}

TEST_F(EngineTest, logprobs_are_those_of_the_distribution_before_temperature) {
  struct Tokens final : GenerationSink {
    void on_text(std::string_view) override {}
    void on_token(const SampledToken& token) override { tokens.push_back(token); }
    void on_finish(const FinishEvent&) override { done.release(); }
    std::vector<SampledToken> tokens;
    std::binary_semaphore done{0};
  };
  auto sample = [&](float temperature) {
    GenerationRequest r = request("The river ran", 1, temperature);
    r.logprobs = 5;
    r.sampling.seed = 4;
    auto sink = std::make_shared<Tokens>();
    EXPECT_TRUE(engine_->submit(std::move(r), sink));
    sink->done.acquire();
    return sink->tokens;
  };
  const auto greedy = sample(0.0f);
  const auto hot = sample(1.5f);
  ASSERT_EQ(greedy.size(), 1u);
  ASSERT_EQ(hot.size(), 1u);
  ASSERT_EQ(greedy[0].top.size(), 5u);
  EXPECT_EQ(greedy[0].token, greedy[0].top[0].token);
  EXPECT_FLOAT_EQ(greedy[0].logprob, greedy[0].top[0].logprob);
  double mass = 0;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(hot[0].top[i].token, greedy[0].top[i].token);
    EXPECT_FLOAT_EQ(hot[0].top[i].logprob, greedy[0].top[i].logprob);
    if (i > 0) {
      EXPECT_GE(greedy[0].top[i - 1].logprob, greedy[0].top[i].logprob);
    }
    mass += std::exp(greedy[0].top[i].logprob);
  }
  EXPECT_LE(mass, 1.0 + 1e-6);

  // Under a grammar that allows two tokens' worth of choices, only possible tokens are listed
  // (masked ones have no finite log-probability).
  auto schema = json::parse(R"({"enum":["yes","no"]})", "schema");
  ASSERT_TRUE(schema);
  GenerationRequest r = request("Answer:", 4, 0.0f);
  r.logprobs = 20;
  r.grammar = *engine_->json_grammar(&*schema);
  auto sink = std::make_shared<Tokens>();
  ASSERT_TRUE(engine_->submit(std::move(r), sink));
  sink->done.acquire();
  ASSERT_FALSE(sink->tokens.empty());
  for (const auto& token : sink->tokens) {
    EXPECT_LT(token.top.size(), 20u);
    for (const auto& alternative : token.top) EXPECT_TRUE(std::isfinite(alternative.logprob));
  }
}

TEST_F(EngineTest, incremental_decoding_matches_full_recomputation) {
  const int n = 12;
  const auto [text, event] = run(request("Engineers checked the machines", n));
  auto model = Model::load(model_path_);
  ASSERT_TRUE(model);
  ThreadPool pool(2);
  // The same arithmetic as the engine (its default f16 cache), without the scheduler or batching.
  LogitEvaluator evaluator(**model, pool, kernels::best_kernels(), 256, KvType::f16);
  std::vector<int32_t> tokens = engine_->tokenizer().encode("Engineers checked the machines");
  StreamingDetokenizer detokenizer(engine_->tokenizer());
  std::string expected;
  const size_t n_vocab = static_cast<size_t>((*model)->config().n_vocab);
  for (int i = 0; i < n; ++i) {
    const std::vector<float> logits = evaluator.evaluate(tokens, 5);
    const float* last = logits.data() + (tokens.size() - 1) * n_vocab;
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + n_vocab) - last);
    tokens.push_back(next);
    expected += detokenizer.push(next);
  }
  expected += detokenizer.finish();
  EXPECT_EQ(text, expected);
}

TEST_F(EngineTest, same_seed_reproduces_and_different_seeds_diverge) {
  GenerationRequest r = request("Good software", 32, 1.0f);
  r.sampling.seed = 7;
  const auto [a, event_a] = run(r);
  const auto [b, event_b] = run(r);
  EXPECT_EQ(a, b);
  r.sampling.seed = 8;
  const auto [c, event_c] = run(r);
  EXPECT_NE(a, c);
}

TEST_F(EngineTest, stop_string_ends_generation_before_it) {
  const auto [full, event] = run(request("The", 40));
  // Three ASCII letters from the middle of the answer (a substring of a multi-byte character
  // would not be a valid stop string).
  size_t at = 6;
  while (at + 3 <= full.size() && !(std::isalpha(static_cast<unsigned char>(full[at])) &&
                                    std::isalpha(static_cast<unsigned char>(full[at + 1])) &&
                                    std::isalpha(static_cast<unsigned char>(full[at + 2])))) {
    ++at;
  }
  ASSERT_LE(at + 3, full.size()) << "no three ASCII letters in: " << full;
  const std::string stop = full.substr(at, 3);
  GenerationRequest r = request("The", 40);
  r.stop = {stop};
  const auto [text, stopped] = run(r);
  EXPECT_EQ(stopped.reason, FinishReason::stop);
  EXPECT_EQ(text, full.substr(0, full.find(stop)));
}

TEST_F(EngineTest, cancelling_a_running_request_finishes_it_as_cancelled) {
  auto sink = std::make_shared<CollectingSink>();
  sink->hold_on_first_text();
  auto id = engine_->submit(request("The", 250), sink);
  ASSERT_TRUE(id);
  sink->wait_for_texts();  // the engine is now paused inside on_text
  engine_->cancel(*id);
  sink->release();
  const FinishEvent event = sink->wait();
  EXPECT_EQ(event.reason, FinishReason::cancelled);
  EXPECT_LT(event.completion_tokens, 250);
  EXPECT_EQ(sink->finishes(), 1);
}

TEST_F(EngineTest, cancelling_a_queued_request_never_runs_it) {
  auto first = std::make_shared<CollectingSink>();
  auto second = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine_->submit(request("The", 200), first));
  auto queued = engine_->submit(request("The", 200), second);
  ASSERT_TRUE(queued);
  engine_->cancel(*queued);
  const FinishEvent event = second->wait();
  EXPECT_EQ(event.reason, FinishReason::cancelled);
  EXPECT_EQ(event.completion_tokens, 0);
  EXPECT_EQ(second->text(), "");
  EXPECT_EQ(first->wait().reason, FinishReason::length);
}

TEST_F(EngineTest, invalid_requests_are_rejected_before_queueing) {
  auto sink = std::make_shared<CollectingSink>();
  GenerationRequest empty;
  EXPECT_EQ(engine_->submit(empty, sink).error().code, Errc::invalid_argument);
  GenerationRequest too_long = request("x", 5);
  too_long.prompt_tokens.assign(256, 65);
  auto error = engine_->submit(too_long, sink);
  ASSERT_FALSE(error);
  EXPECT_EQ(error.error().code, Errc::out_of_range);
  EXPECT_NE(error.error().message.find("256 tokens"), std::string::npos);
  GenerationRequest bad_token = request("x", 5);
  bad_token.prompt_tokens.push_back(600);
  EXPECT_NE(engine_->submit(bad_token, sink).error().message.find("outside the vocabulary"), std::string::npos);
  GenerationRequest bad_sampling = request("x", 5);
  bad_sampling.sampling.top_p = 2.0f;
  EXPECT_NE(engine_->submit(bad_sampling, sink).error().message.find("top_p"), std::string::npos);
  GenerationRequest bad_stop = request("x", 5);
  bad_stop.stop = {""};
  EXPECT_FALSE(engine_->submit(bad_stop, sink));
  GenerationRequest zero = request("x", 0);
  EXPECT_FALSE(engine_->submit(zero, sink));
  EXPECT_EQ(sink->finishes(), 0);
}

TEST_F(EngineTest, generation_stops_at_the_end_of_the_context) {
  GenerationRequest r = request("x", 1000);
  r.prompt_tokens.assign(250, 70);
  const auto [text, event] = run(r);
  EXPECT_EQ(event.reason, FinishReason::length);
  EXPECT_EQ(event.completion_tokens, 256 - 250 + 1);
}

TEST_F(EngineTest, stats_count_finished_requests_and_tokens) {
  run(request("a", 5));
  run(request("b", 7));
  const EngineStats stats = engine_->stats();
  EXPECT_EQ(stats.requests_finished, 2u);
  EXPECT_EQ(stats.tokens_generated, 12u);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
  // A cache for max_batch (8) full contexts of 256, in blocks of 16 positions.
  EXPECT_EQ(stats.kv_blocks_total, 8 * 256 / KvCache::kBlockTokens);
  EXPECT_EQ(stats.kv_tokens_total, 8 * 256);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.kv_tokens_used, 0);
}

TEST(EngineLoad, a_chat_template_file_replaces_the_models_and_a_broken_one_names_its_line) {
  TempDir dir;
  SynthOptions synth;
  synth.n_layer = 1;
  synth.n_vocab = 400;
  const std::string model = dir.file("model.gguf");
  ASSERT_TRUE(synthesize_model(synth, model));
  EngineOptions options;
  options.model_path = model;
  options.threads = 1;
  options.context = 64;
  options.chat_template_file = dir.file("template.jinja");
  {
    std::ofstream(options.chat_template_file) << "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}";
  }
  auto loaded = Engine::load(options);
  ASSERT_TRUE(loaded) << loaded.error().message;
  auto text = (*loaded)->chat_template().render(std::vector<ChatTurn>{{"user", "Hi"}});
  ASSERT_TRUE(text);
  EXPECT_EQ(text->bytes(), "[user] Hi\n");
  { std::ofstream(options.chat_template_file) << "line one\n{% include 'x' %}"; }
  auto broken = Engine::load(options);
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message.find("template.jinja: line 2"), std::string::npos) << broken.error().message;
}

TEST(EngineLoad, bad_options_and_files_are_errors) {
  EngineOptions options;
  options.model_path = "/nonexistent.gguf";
  auto missing = Engine::load(options);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("/nonexistent.gguf"), std::string::npos);
  options.kernels = "neon";
  EXPECT_NE(Engine::load(options).error().message.find("kernels 'neon'"), std::string::npos);
}

}  // namespace
}  // namespace darkbloom::engine
