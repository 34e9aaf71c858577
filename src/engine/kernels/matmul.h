// Matrix products of a stored weight matrix with a batch of activation rows, spread over a thread
// pool. Weights are read once per call for the whole batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "engine/gguf/ggml_type.h"
#include "engine/kernels/kernel_set.h"

namespace darkbloom::engine::kernels {

// A row-major weight matrix as stored in a GGUF file: `rows` rows of `cols` elements each. A
// packed copy (PackedWeights) keeps the size and the last rows % kPackRows rows as they are; its
// first `packed_rows` rows are in groups of kPackRows in the layout of the kernel set that packed
// them, and only that set may read it.
struct WeightMatrix {
  GgmlType type = GgmlType::f32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  int64_t packed_rows = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

// Owns packed copies of weight matrices for one kernel set.
class PackedWeights {
 public:
  // A copy of `w` in `kernels`' packed layout, or `w` itself when the set has none for its type
  // or it has fewer than kPackRows rows. The copy lives as long as this object.
  WeightMatrix pack(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w);

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::vector<std::unique_ptr<uint8_t, Free>> buffers_;
};

// Reusable buffer for quantized activations, so steady-state steps do not allocate.
struct MatmulScratch {
  std::vector<uint8_t> activations;
};

// y[t * w.rows + r] = dot(row r of w, x[t * w.cols ...]) for t < n_tokens.
void matmul(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, MatmulScratch& scratch);

}  // namespace darkbloom::engine::kernels
