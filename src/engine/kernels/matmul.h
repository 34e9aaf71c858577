// Matrix products of a stored weight matrix with a batch of activation rows, spread over a thread
// pool. Weights are read once per call for the whole batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
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

// A run of one matrix's packed groups or plain rows, [begin, end): one task of a matmul.
struct MatmulChunk {
  int job;
  bool packed;
  int64_t begin, end;
};

// One input of a matmul in one activation format, and where its quantized rows are.
struct MatmulInput {
  const float* x;
  int64_t n_tokens;
  int64_t cols;
  ActivationFormat format;
  size_t row_bytes;
  const uint8_t* bytes;
  int64_t first_task;  // its first task in the quantizing dispatch
  size_t offset;       // of its rows in MatmulScratch::activations
};

// Reusable buffers (quantized activations, the work list), so steady-state steps do not
// allocate.
struct MatmulScratch {
  std::vector<uint8_t> activations;
  std::vector<MatmulInput> inputs;
  std::vector<int> quantized_inputs;  // indices of the inputs that are not f32
  std::vector<int> job_input;
  std::vector<MatmulChunk> chunks;
};

// One product: y[t * w.rows + r] = dot(row r of w, x[t * w.cols ...]) for t < n_tokens.
struct MatmulJob {
  const WeightMatrix* w;
  const float* x;
  int64_t n_tokens;
  float* y;
};

void matmul(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, MatmulScratch& scratch);

// Several products in two dispatches instead of two each: every distinct input is quantized once
// per activation format its matrices need (a layer's Q, K and V share one), then the rows of all
// matrices are spread over the pool together (Q, K and V; gate and up; the experts a step routes
// to). Each product is bit for bit what matmul gives it alone.
void matmul_many(ThreadPool& pool, const KernelSet& kernels, std::span<const MatmulJob> jobs, MatmulScratch& scratch);

}  // namespace darkbloom::engine::kernels
