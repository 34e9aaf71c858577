// `bench grammar`: what structured output costs on a model's vocabulary.
//
// The mask step (the allowed tokens of the text so far, then the logits of every other token set
// to -infinity) is timed on its own over answers a random model could give: each step takes one
// allowed token at random. The first answer meets a cold cache, the later ones a warm one (the
// grammar is shared by every request with the same schema). Then free and constrained decoding
// are timed through the engine at batch 1 and at a larger batch (random sampling, a short prompt).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "engine/engine.h"

namespace darkbloom::engine {

struct GrammarBenchOptions {
  int answers = 20;     // simulated answers for the mask timings
  int max_steps = 256;  // tokens per simulated answer at most
  int gen_tokens = 64;  // tokens per request in the decoding runs
  std::vector<int> batch_sizes = {1, 8};
  uint64_t seed = 7;
};

struct MaskTimes {
  size_t steps = 0;
  double p50_us = 0;
  double p99_us = 0;
};

struct GrammarBenchResult {
  int n_vocab = 0;
  MaskTimes cold;  // the first simulated answer
  MaskTimes warm;  // the others
  MaskTimes all;
  int answers_completed = 0;  // simulated answers that reached their end within max_steps
  size_t cached_masks = 0;
  size_t stacks = 0;
  struct Decode {
    int batch = 1;
    double free_tokens_per_second = 0;         // per request, median
    double constrained_tokens_per_second = 0;  // per request, median
    double constrained_tokens = 0;             // mean tokens of a constrained answer
  };
  std::vector<Decode> decode;
};

// `progress` gets a line of what runs now.
Result<GrammarBenchResult> run_grammar_bench(Engine& engine, const json::bj::value& schema,
                                             const GrammarBenchOptions& options,
                                             const std::function<void(const std::string&)>& progress = {});

}  // namespace darkbloom::engine
