// A request's n choices on a real engine: each is the answer one request with seed + i would get,
// the later ones reuse the prompt's cached blocks, and a cancellation ends them all.
#include "provider/openai_bridge.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/blocking_sink.h"
#include "engine/model/model_synth.h"
#include "support/temp_dir.h"

namespace darkbloom::provider {
namespace {

namespace asio = net::asio;

class ChoiceRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new darkbloom::testing::TempDir();
    engine::SynthOptions options;
    options.n_layer = 2;
    options.n_embd = 64;
    options.n_head = 2;
    options.n_head_kv = 1;
    options.n_ff = 128;
    options.n_vocab = 600;
    path_ = dir_->file("choices.gguf");
    ASSERT_TRUE(engine::synthesize_model(options, path_));
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    engine::EngineOptions options;
    options.model_path = path_;
    options.threads = 1;
    options.context = 512;
    auto loaded = engine::Engine::load(options);
    ASSERT_TRUE(loaded) << loaded.error().message;
    engine_ = std::move(*loaded);
  }

  engine::GenerationRequest request(uint64_t seed) {
    engine::GenerationRequest r;
    std::string prompt;
    for (int i = 0; i < 20; ++i) prompt += "The river ran past the mill and the old stone bridge. ";
    r.prompt_tokens = engine_->tokenizer().encode(prompt);
    r.max_tokens = 12;
    r.ignore_eos = true;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    return r;
  }

  // Every event of a run, texts joined per choice; `cancel_after` cancels after that many texts.
  struct Outcome {
    std::vector<std::string> texts;
    std::vector<engine::FinishEvent> finishes;
  };
  Outcome drain(ChoiceRun& run, int cancel_after = -1) {
    Outcome outcome;
    outcome.texts.resize(static_cast<size_t>(run.choices()));
    outcome.finishes.resize(static_cast<size_t>(run.choices()));
    asio::co_spawn(
        io_,
        [&]() -> net::awaitable<void> {
          int texts = 0;
          while (!run.finished()) {
            ChoiceRun::Event event = co_await run.next();
            if (event.finish) {
              outcome.finishes[static_cast<size_t>(event.index)] = *event.finish;
            } else {
              outcome.texts[static_cast<size_t>(event.index)] += event.text;
              if (++texts == cancel_after) run.cancel();
            }
          }
        },
        asio::detached);
    io_.run();
    io_.restart();
    return outcome;
  }

  std::string alone(uint64_t seed) {
    struct Collect final : engine::BlockingSink {
      void on_text(std::string_view text) override { collected += text; }
      std::string collected;
    };
    auto sink = std::make_shared<Collect>();
    EXPECT_TRUE(engine_->submit(request(seed), sink));
    sink->wait();
    return sink->collected;
  }

  static darkbloom::testing::TempDir* dir_;
  static std::string path_;
  asio::io_context io_;
  std::unique_ptr<engine::Engine> engine_;
};
darkbloom::testing::TempDir* ChoiceRunTest::dir_ = nullptr;
std::string ChoiceRunTest::path_;

TEST_F(ChoiceRunTest, each_choice_is_the_answer_of_its_seed_and_later_ones_reuse_the_cached_prompt) {
  const uint64_t reused_before = engine_->stats().prefix_tokens_reused;
  ChoiceRun run(*engine_, io_.get_executor(), proto::Endpoint::completions, request(40), 4);
  ASSERT_TRUE(run.start());
  const Outcome outcome = drain(run);
  const size_t prompt = request(40).prompt_tokens.size();
  // Choices 1-3 found every full block of the prompt in the cache.
  const uint64_t full_blocks = (prompt - 1) / 16 * 16;
  EXPECT_GE(engine_->stats().prefix_tokens_reused - reused_before, 3 * full_blocks);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(outcome.finishes[static_cast<size_t>(i)].reason, engine::FinishReason::length);
    EXPECT_EQ(outcome.finishes[static_cast<size_t>(i)].completion_tokens, 12);
    EXPECT_EQ(outcome.texts[static_cast<size_t>(i)], alone(40 + static_cast<uint64_t>(i))) << "choice " << i;
  }
  EXPECT_NE(outcome.texts[0], outcome.texts[1]);
}

TEST_F(ChoiceRunTest, cancelling_ends_every_choice_including_those_not_yet_submitted) {
  ChoiceRun early(*engine_, io_.get_executor(), proto::Endpoint::chat_completions, request(1), 3);
  ASSERT_TRUE(early.start());
  early.cancel();  // before choice 0 produced anything: 1 and 2 are never submitted
  Outcome outcome = drain(early);
  for (const auto& finish : outcome.finishes) EXPECT_EQ(finish.reason, engine::FinishReason::cancelled);

  // Cancelled after two texts, when every choice is running. The engine runs on its own thread, so
  // a choice may still reach its end before the cancel does (on a loaded machine, all of them):
  // what must hold is that every choice reports its end, cancelled or complete, and nothing runs on.
  ChoiceRun late(*engine_, io_.get_executor(), proto::Endpoint::chat_completions, request(1), 3);
  ASSERT_TRUE(late.start());
  outcome = drain(late, 2);
  for (const auto& finish : outcome.finishes) {
    if (finish.reason != engine::FinishReason::cancelled) {
      EXPECT_EQ(finish.reason, engine::FinishReason::length);
      EXPECT_EQ(finish.completion_tokens, 12);
    }
  }
  EXPECT_EQ(engine_->stats().running, 0);
}

TEST_F(ChoiceRunTest, logprobs_come_with_the_text_of_their_choice) {
  engine::GenerationRequest r = request(3);
  r.logprobs = 2;
  ChoiceRun run(*engine_, io_.get_executor(), proto::Endpoint::chat_completions, std::move(r), 2);
  ASSERT_TRUE(run.start());
  std::vector<size_t> entries(2, 0);
  asio::co_spawn(
      io_,
      [&]() -> net::awaitable<void> {
        while (!run.finished()) {
          ChoiceRun::Event event = co_await run.next();
          if (!event.finish && event.logprobs.is_object()) {
            entries[static_cast<size_t>(event.index)] += event.logprobs.as_object().at("content").as_array().size();
          }
        }
      },
      asio::detached);
  io_.run();
  EXPECT_GE(entries[0], 1u);
  EXPECT_GE(entries[1], 1u);
  EXPECT_LE(entries[0], 12u);
}

}  // namespace
}  // namespace darkbloom::provider
