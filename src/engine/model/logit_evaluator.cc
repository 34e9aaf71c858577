#include "engine/model/logit_evaluator.h"

#include <algorithm>
#include <stdexcept>

namespace darkbloom::engine {

LogitEvaluator::LogitEvaluator(const Model& model, ThreadPool& pool, const kernels::KernelSet& kernels, int context,
                               KvType kv_type)
    : model_(model),
      context_(context),
      cache_(model.config().n_layer, model.config().kv_width(), kv_type,
             (context + KvCache::kBlockTokens - 1) / KvCache::kBlockTokens),
      forward_(model, pool, kernels) {
  // One sequence at a time, always in the same blocks.
  for (int64_t b = 0; b < cache_.n_blocks(); ++b) blocks_.push_back(*cache_.allocate());
}

std::vector<float> LogitEvaluator::evaluate(std::span<const int32_t> tokens, int chunk) {
  if (tokens.size() > static_cast<size_t>(context_)) throw std::out_of_range("sequence longer than the context");
  const size_t n_vocab = static_cast<size_t>(model_.config().n_vocab);
  std::vector<float> logits(tokens.size() * n_vocab);
  std::vector<BatchToken> batch;
  for (size_t start = 0; start < tokens.size(); start += static_cast<size_t>(chunk)) {
    const size_t end = std::min(tokens.size(), start + static_cast<size_t>(chunk));
    batch.clear();
    for (size_t i = start; i < end; ++i) {
      batch.push_back({tokens[i], static_cast<int32_t>(i), blocks_.data(), static_cast<int32_t>(blocks_.size()), true});
    }
    forward_.run(batch, cache_, logits.data() + start * n_vocab);
  }
  return logits;
}

}  // namespace darkbloom::engine
