// Perplexity of a text under a model: the standard check that an engine computes the right
// probabilities. The text is cut into windows of `context` tokens; as llama.cpp's perplexity tool
// does, each window scores only its second half, so every scored token has at least half a
// window of context and the numbers are comparable.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "base/result.h"
#include "base/thread_pool.h"
#include "engine/kernels/kernel_set.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

struct PerplexityOptions {
  int context = 512;
  int max_windows = 0;  // 0 = all
};

struct PerplexityResult {
  double perplexity = 0;
  int64_t tokens_scored = 0;
  int windows = 0;
  int64_t text_tokens = 0;
};

// `progress` gets (windows done, windows total, perplexity so far).
Result<PerplexityResult> compute_perplexity(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool,
                                            const kernels::KernelSet& kernels, std::string_view text,
                                            const PerplexityOptions& options,
                                            const std::function<void(int, int, double)>& progress = {});

}  // namespace darkbloom::engine
