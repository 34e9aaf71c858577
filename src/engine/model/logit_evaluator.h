// Logits for every position of a token sequence, computed directly with the forward pass (no
// scheduler, no sampling): what perplexity and the reference-implementation checks need.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/thread_pool.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/forward.h"
#include "engine/model/model.h"

namespace darkbloom::engine {

class LogitEvaluator {
 public:
  // `context` bounds the longest sequence evaluate() accepts. Keys and values are kept in f32 by
  // default, so reference checks see the model's arithmetic without cache rounding.
  LogitEvaluator(const Model& model, ThreadPool& pool, const kernels::KernelSet& kernels, int context,
                 KvType kv_type = KvType::f32);

  // Row t of the result (n_vocab floats) are the logits after tokens[0..t]. The sequence starts
  // at position 0; tokens are fed in chunks of `chunk` positions.
  std::vector<float> evaluate(std::span<const int32_t> tokens, int chunk = 256);

  int context() const { return context_; }

 private:
  const Model& model_;
  int context_;
  KvCache cache_;
  std::vector<int32_t> blocks_;
  ForwardPass forward_;
};

}  // namespace darkbloom::engine
