// Continuous batching and the paged KV cache, held to their invariants: a token's logits are the
// same bits alone or in any ragged batch, however its prompt was chunked and whether its prefix
// was computed or reused; requests give the same output alone, in batches of 2, 4 and 8, with
// rows joining and leaving mid-run, under preemption and with a reused prefix; cancelled rows
// give their blocks back at once; and a storm of submits and cancels from several threads
// leaves nothing behind.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "base/thread_pool.h"
#include "engine/collecting_sink.h"
#include "engine/engine.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/forward.h"
#include "engine/model/model.h"
#include "engine/model/model_synth.h"
#include "support/temp_dir.h"

namespace darkbloom::engine {
namespace {

using darkbloom::testing::TempDir;
constexpr int kBlock = KvCache::kBlockTokens;

class Batching : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    SynthOptions options;
    // Wide enough KV rows (8 heads of 64, 4 layers: 128 KiB per f16 block) that a few MiB of
    // cache is a tight squeeze.
    options.n_layer = 4;
    options.n_embd = 512;
    options.n_head = 8;
    options.n_head_kv = 8;
    options.n_ff = 1024;
    options.n_vocab = 600;
    model_path_ = dir_->file("batching.gguf");
    ASSERT_TRUE(synthesize_model(options, model_path_));
  }
  static void TearDownTestSuite() { delete dir_; }

  std::unique_ptr<Engine> load(EngineOptions options = {}) {
    options.model_path = model_path_;
    options.threads = 2;
    if (options.context == 0) options.context = 256;
    auto engine = Engine::load(options);
    EXPECT_TRUE(engine) << engine.error().message;
    return engine ? std::move(*engine) : nullptr;
  }

  // A prompt of `n` ordinary tokens drawn with `seed`.
  static std::vector<int32_t> prompt(int n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> tokens;
    for (int i = 0; i < n; ++i) tokens.push_back(static_cast<int32_t>(300 + rng() % 250));
    return tokens;
  }

  static GenerationRequest request(std::vector<int32_t> tokens, int max_tokens, float temperature = 0.0f,
                                   uint64_t seed = 1) {
    GenerationRequest r;
    r.prompt_tokens = std::move(tokens);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    return r;
  }

  static std::string alone(Engine& engine, GenerationRequest r) {
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(engine.submit(std::move(r), sink));
    EXPECT_NE(sink->wait().reason, FinishReason::error);
    return sink->text();
  }

  static TempDir* dir_;
  static std::string model_path_;
};

TempDir* Batching::dir_ = nullptr;
std::string Batching::model_path_;

// Logits for the last token of each sequence, computed by `plan`: a list of forward calls, each a
// list of (sequence, first position, count) chunks.
struct Chunk {
  int sequence;
  int first;
  int count;
};

// The logits of each sequence's last token after running `plan` (forward calls of chunks).
std::vector<std::vector<float>> last_logits(const Model& model, KvType type,
                                            const std::vector<std::vector<int32_t>>& sequences,
                                            const std::vector<std::vector<Chunk>>& plan) {
  ThreadPool pool(2);
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  KvCache cache(model.config().n_layer, model.config().kv_width(), type, 64);
  ForwardPass forward(model, pool, kernels::best_kernels());
  std::vector<std::vector<int32_t>> tables(sequences.size());
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (size_t b = 0; b < (sequences[s].size() + kBlock - 1) / kBlock; ++b) tables[s].push_back(*cache.allocate());
  }
  std::vector<std::vector<float>> last(sequences.size());
  for (const auto& call : plan) {
    std::vector<BatchToken> batch;
    std::vector<int> owners;
    for (const Chunk& chunk : call) {
      const auto& sequence = sequences[static_cast<size_t>(chunk.sequence)];
      const auto& table = tables[static_cast<size_t>(chunk.sequence)];
      for (int p = chunk.first; p < chunk.first + chunk.count; ++p) {
        const bool want = p + 1 == static_cast<int>(sequence.size());
        batch.push_back({sequence[static_cast<size_t>(p)], p, table.data(), static_cast<int32_t>(table.size()), want});
        if (want) owners.push_back(chunk.sequence);
      }
    }
    std::vector<float> logits(owners.size() * n_vocab);
    forward.run(batch, cache, logits.data());
    for (size_t i = 0; i < owners.size(); ++i) {
      last[static_cast<size_t>(owners[i])].assign(logits.begin() + static_cast<long>(i * n_vocab),
                                                  logits.begin() + static_cast<long>((i + 1) * n_vocab));
    }
  }
  return last;
}

// Four prompts alone, in one ragged call, and chunked and interleaved as the scheduler does with
// prompts and decode rows: the last tokens' logits must be the same bits every way.
void expect_batch_independent_logits(const Model& model, const std::vector<std::vector<int32_t>>& sequences) {
  ASSERT_EQ(sequences.size(), 4u);
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  for (KvType type : {KvType::f16, KvType::q8_0, KvType::f32}) {
    SCOPED_TRACE(kv_type_name(type));
    std::vector<std::vector<Chunk>> alone_plan;
    for (int s = 0; s < 4; ++s)
      alone_plan.push_back({{s, 0, static_cast<int>(sequences[static_cast<size_t>(s)].size())}});
    const auto expected = last_logits(model, type, sequences, alone_plan);
    const auto together = last_logits(model, type, sequences, {{{0, 0, 37}, {1, 0, 21}, {2, 0, 5}, {3, 0, 50}}});
    const auto chunked = last_logits(model, type, sequences,
                                     {{{3, 0, 16}, {0, 0, 10}},
                                      {{0, 10, 20}, {2, 0, 5}, {3, 16, 17}},
                                      {{1, 0, 20}, {0, 30, 6}, {3, 33, 16}},
                                      {{0, 36, 1}, {1, 20, 1}, {3, 49, 1}}});
    for (size_t s = 0; s < 4; ++s) {
      ASSERT_EQ(expected[s].size(), n_vocab);
      EXPECT_EQ(std::memcmp(expected[s].data(), together[s].data(), n_vocab * sizeof(float)), 0)
          << "sequence " << s << " in one ragged batch";
      EXPECT_EQ(std::memcmp(expected[s].data(), chunked[s].data(), n_vocab * sizeof(float)), 0)
          << "sequence " << s << " chunked";
    }
  }
}

TEST_F(Batching, a_tokens_logits_are_the_same_bits_alone_in_a_ragged_batch_and_after_a_reused_prefix) {
  auto model = Model::load(model_path_);
  ASSERT_TRUE(model);
  expect_batch_independent_logits(**model, {prompt(37, 1), prompt(21, 2), prompt(5, 3), prompt(50, 4)});
}

// A mixture of experts groups a batch's tokens by expert, and sliding windows cut each token's
// attention differently: each token must still get the numbers it gets alone, also with the
// packed Q8_0 layout of the avx512 set.
TEST_F(Batching, every_architecture_gives_a_token_the_same_bits_in_any_batch) {
  for (const char* arch : {"qwen3moe", "qwen2moe", "gemma2", "gemma3", "phi3"}) {
    for (const char* type : {"q4_k", "q8_0"}) {
      SCOPED_TRACE(std::string(arch) + " " + type);
      SynthOptions options;
      options.architecture = arch;
      options.n_layer = 2;
      options.n_embd = 256;
      options.n_head = 4;
      options.n_head_kv = 2;
      options.n_ff = 256;
      options.n_expert = 8;
      options.n_expert_used = 2;
      options.sliding_window = 20;  // crosses block boundaries in the 50-token prompt
      options.n_vocab = 600;
      options.weight_type = type;
      const std::string path = dir_->file(std::string(arch) + "-" + type + ".gguf");
      ASSERT_TRUE(synthesize_model(options, path));
      auto model = Model::load(path);
      ASSERT_TRUE(model) << model.error().message;
      expect_batch_independent_logits(**model, {prompt(37, 5), prompt(21, 6), prompt(5, 7), prompt(50, 8)});
    }
  }
}

TEST_F(Batching, greedy_output_is_identical_alone_and_in_batches_of_2_4_and_8) {
  auto engine = load();
  ASSERT_TRUE(engine);
  // Ragged prompts and lengths: rows finish at different steps while others continue.
  std::vector<GenerationRequest> requests;
  std::vector<std::string> expected;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(request(prompt(3 + 11 * i, 100 + static_cast<uint64_t>(i)), 12 + 5 * i));
    expected.push_back(alone(*engine, requests.back()));
  }
  for (int batch : {2, 4, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < batch; ++i) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(engine->submit(requests[static_cast<size_t>(i)], sinks.back()));
    }
    for (int i = 0; i < batch; ++i) {
      EXPECT_EQ(sinks[static_cast<size_t>(i)]->wait().reason, FinishReason::length);
      EXPECT_EQ(sinks[static_cast<size_t>(i)]->text(), expected[static_cast<size_t>(i)]) << "request " << i;
    }
  }
  // Rows joining mid-run: each new one arrives once the previous one is decoding.
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 8; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->submit(requests[static_cast<size_t>(i)], sinks.back()));
    sinks.back()->wait_for_texts(2);
  }
  for (int i = 0; i < 8; ++i) {
    sinks[static_cast<size_t>(i)]->wait();
    EXPECT_EQ(sinks[static_cast<size_t>(i)]->text(), expected[static_cast<size_t>(i)]) << "joining request " << i;
  }
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0);
}

TEST_F(Batching, tiny_steps_preemption_and_a_reused_prefix_change_nothing) {
  const std::vector<int32_t> system = prompt(40, 7);  // a shared "system prompt"
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> tokens = system;
    const auto own = prompt(5 + 3 * i, 50 + static_cast<uint64_t>(i));
    tokens.insert(tokens.end(), own.begin(), own.end());
    requests.push_back(request(tokens, 30));
  }
  std::vector<std::string> expected;
  {
    EngineOptions plain;
    plain.prefix_reuse = false;
    auto engine = load(plain);
    ASSERT_TRUE(engine);
    for (const auto& r : requests) expected.push_back(alone(*engine, r));
    EXPECT_EQ(engine->stats().prefix_tokens_reused, 0u);
  }
  // Seven tokens per step, a cache of one context (8 blocks of 16) for six rows of up to 88
  // positions: prompts are chunked, rows are preempted and recomputed, prefixes are reused.
  EngineOptions tight;
  tight.step_tokens = 7;
  tight.max_batch = 6;
  tight.kv_memory_mb = 1;  // rounded down to whole blocks below
  tight.context = 128;
  auto engine = load(tight);
  ASSERT_TRUE(engine);
  ASSERT_EQ(engine->stats().kv_tokens_total, 128);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->submit(r, sinks.back()));
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(sinks[i]->wait().reason, FinishReason::length);
    EXPECT_EQ(sinks[i]->text(), expected[i]) << "request " << i;
  }
  const EngineStats stats = engine->stats();
  EXPECT_GT(stats.prefix_tokens_reused, 0u) << "the shared beginning was computed once";
  EXPECT_GT(stats.preemptions, 0u) << "the cache was too small for all six at once";
  EXPECT_EQ(stats.kv_blocks_used, 0);
  // Reuse again after everything finished: the published blocks are still there.
  const uint64_t reused_before = stats.prefix_tokens_reused;
  EXPECT_EQ(alone(*engine, requests[0]), expected[0]);
  EXPECT_GE(engine->stats().prefix_tokens_reused, reused_before + 32);
}

TEST_F(Batching, preemption_recomputes_the_newest_row_without_changing_any_output) {
  std::vector<GenerationRequest> requests;
  std::vector<std::string> expected;
  auto reference = load();
  ASSERT_TRUE(reference);
  for (int i = 0; i < 4; ++i) {
    requests.push_back(request(prompt(20, 200 + static_cast<uint64_t>(i)), 100));
    expected.push_back(alone(*reference, requests.back()));
  }
  // Room for 128 positions: four rows of 120 cannot all grow, so some must give way.
  EngineOptions options;
  options.context = 128;
  options.kv_memory_mb = 1;
  auto engine = load(options);
  ASSERT_TRUE(engine);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->submit(r, sinks.back()));
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(sinks[i]->wait().reason, FinishReason::length);
    EXPECT_EQ(sinks[i]->text(), expected[i]) << "request " << i;
  }
  EXPECT_GT(engine->stats().preemptions, 0u);
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

TEST_F(Batching, seeded_sampling_is_reproducible_in_any_batch_and_seeds_diverge) {
  auto engine = load();
  ASSERT_TRUE(engine);
  const GenerationRequest a = request(prompt(9, 5), 40, 1.0f, 42);
  const std::string first = alone(*engine, a);
  // The same request next to others.
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    GenerationRequest r = i == 2 ? a : request(prompt(9 + i, 6 + static_cast<uint64_t>(i)), 40, 1.0f, 7);
    ASSERT_TRUE(engine->submit(std::move(r), sinks.back()));
  }
  for (auto& sink : sinks) sink->wait();
  EXPECT_EQ(sinks[2]->text(), first);
  GenerationRequest b = a;
  b.sampling.seed = 43;
  EXPECT_NE(alone(*engine, b), first);
}

TEST_F(Batching, a_cancelled_row_gives_its_blocks_back_at_once) {
  EngineOptions options;
  options.prefix_reuse = false;  // nothing stays published: every block is either used or free
  auto engine = load(options);
  ASSERT_TRUE(engine);
  auto sink = std::make_shared<CollectingSink>();
  auto id = engine->submit(request(prompt(60, 9), 150), sink);
  ASSERT_TRUE(id);
  sink->wait_for_texts(3);
  EXPECT_GE(engine->stats().kv_blocks_used, 4);  // 60 prompt positions and more
  engine->cancel(*id);
  EXPECT_EQ(sink->wait().reason, FinishReason::cancelled);
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.kv_tokens_used, 0);
  EXPECT_EQ(stats.running, 0);
}

TEST_F(Batching, a_thousand_submits_and_cancels_from_several_threads_leave_nothing_behind) {
  EngineOptions options;
  options.max_batch = 6;
  options.step_tokens = 32;
  auto engine = load(options);
  ASSERT_TRUE(engine);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::atomic<int> finishes{0};
  std::vector<std::vector<std::shared_ptr<CollectingSink>>> all(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      std::vector<RequestId> ids;
      for (int i = 0; i < kPerThread; ++i) {
        auto sink = std::make_shared<CollectingSink>();
        auto id = engine->submit(
            request(prompt(1 + static_cast<int>(rng() % 40), rng()), 1 + static_cast<int>(rng() % 6)), sink);
        if (!id) continue;
        all[static_cast<size_t>(t)].push_back(sink);
        ids.push_back(*id);
        // Cancel a random earlier request (running, queued or finished) about half the time.
        if (rng() % 2 == 0) engine->cancel(ids[rng() % ids.size()]);
        if (rng() % 7 == 0) engine->cancel(*id + 1000000);  // unknown ids are ignored
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (auto& sinks : all) {
    for (auto& sink : sinks) {
      const FinishEvent event = sink->wait();
      EXPECT_TRUE(event.reason == FinishReason::length || event.reason == FinishReason::cancelled);
      finishes += sink->finishes();
    }
  }
  EXPECT_EQ(finishes.load(), kThreads * kPerThread);  // exactly one finish each
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.kv_tokens_used, 0);
  EXPECT_EQ(stats.requests_finished, static_cast<uint64_t>(kThreads * kPerThread));
}

TEST_F(Batching, bad_batching_options_are_errors) {
  EngineOptions options;
  options.model_path = model_path_;
  options.kv_type = "f8";
  EXPECT_FALSE(Engine::load(options));
  options.kv_type = "f16";
  options.max_batch = 0;
  EXPECT_FALSE(Engine::load(options));
  options.max_batch = 8;
  options.step_tokens = 0;
  EXPECT_FALSE(Engine::load(options));
  options.step_tokens = 512;
  options.context = 4096;
  options.kv_memory_mb = 1;  // less than one full context
  auto small = Engine::load(options);
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message.find("--kv-memory"), std::string::npos);
}

}  // namespace
}  // namespace darkbloom::engine
