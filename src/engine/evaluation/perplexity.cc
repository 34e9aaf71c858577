#include "engine/evaluation/perplexity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "engine/engine.h"
#include "engine/model/logit_evaluator.h"

namespace darkbloom::engine {

Result<PerplexityResult> compute_perplexity(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool,
                                            const kernels::KernelSet& kernels, std::string_view text,
                                            const PerplexityOptions& options,
                                            const std::function<void(int, int, double)>& progress) {
  if (options.context < 8)
    return make_error(Errc::invalid_argument, "the perplexity context must be at least 8 tokens");
  EncodeOptions encode;
  encode.add_special = false;
  encode.parse_special = false;
  const std::vector<int32_t> tokens = tokenizer.encode(text, encode);
  const bool with_bos = tokenizer.adds_bos();
  // Each window is [BOS] + (context - 1) text tokens, or context text tokens.
  const size_t text_per_window = static_cast<size_t>(options.context) - (with_bos ? 1 : 0);
  if (tokens.size() < 4) {
    return make_error(Errc::invalid_argument,
                      fmt::format("the text has only {} tokens; perplexity needs more", tokens.size()));
  }
  int n_windows = static_cast<int>(std::max<size_t>(1, tokens.size() / text_per_window));
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);

  LogitEvaluator evaluator(model, pool, kernels, options.context);
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  PerplexityResult result;
  result.text_tokens = static_cast<int64_t>(tokens.size());
  double negative_log_likelihood = 0.0;
  std::vector<int32_t> window;
  for (int w = 0; w < n_windows; ++w) {
    const size_t begin = static_cast<size_t>(w) * text_per_window;
    const size_t end = std::min(tokens.size(), begin + text_per_window);
    window.clear();
    if (with_bos) window.push_back(*tokenizer.bos());
    window.insert(window.end(), tokens.begin() + static_cast<std::ptrdiff_t>(begin),
                  tokens.begin() + static_cast<std::ptrdiff_t>(end));
    const std::vector<float> logits = evaluator.evaluate(window);
    // Position t's logits predict window[t + 1]; score the second half of the window.
    for (size_t t = window.size() / 2; t + 1 < window.size(); ++t) {
      const float* row = logits.data() + t * n_vocab;
      const float max_logit = *std::max_element(row, row + n_vocab);
      double sum = 0.0;
      for (size_t v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(row[v] - max_logit));
      const double log_probability = row[window[t + 1]] - max_logit - std::log(sum);
      negative_log_likelihood -= log_probability;
      ++result.tokens_scored;
    }
    result.windows = w + 1;
    if (progress)
      progress(w + 1, n_windows, std::exp(negative_log_likelihood / static_cast<double>(result.tokens_scored)));
  }
  result.perplexity = std::exp(negative_log_likelihood / static_cast<double>(result.tokens_scored));
  return result;
}

}  // namespace darkbloom::engine
