#include "engine/kernels/matmul.h"

#include <algorithm>

namespace darkbloom::engine::kernels {
namespace {

// Tokens per tile: a tile's activations stay in L2 while a chunk of weight rows sweeps them.
constexpr int64_t kTokenTile = 16;
// Weight rows are requested this far ahead of their use so DRAM latency hides behind compute.
constexpr int64_t kPrefetchRows = 4;

}  // namespace

void matmul(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, MatmulScratch& scratch) {
  const ActivationFormat format = kernels.activation_format_for(w.type);
  const size_t act_row_bytes = activation_row_bytes(format, w.cols);
  const void* activations = x;
  if (format != ActivationFormat::f32) {
    scratch.activations.resize(act_row_bytes * static_cast<size_t>(n_tokens));
    uint8_t* out = scratch.activations.data();
    const int64_t cols = w.cols;
    pool.run(static_cast<int>(n_tokens), [&](int t, int) {
      kernels.quantize_activation(format, x + t * cols, out + act_row_bytes * static_cast<size_t>(t), cols);
    });
    activations = out;
  }
  const auto* act_bytes = static_cast<const uint8_t*>(activations);
  const DotRowsFn dot_rows = kernels.rows_for(w.type);

  // Enough chunks to balance the threads, each a run of rows sharing the activation tile. For one
  // token (decoding) this is a stream through the weights; for several, each weight row is read
  // once per tile and used for kMaxDotRows tokens at a time.
  const int64_t rows_per_chunk = std::max<int64_t>(8, w.rows / (static_cast<int64_t>(pool.size()) * 8));
  const int64_t n_chunks = (w.rows + rows_per_chunk - 1) / rows_per_chunk;
  pool.run(static_cast<int>(n_chunks), [&](int chunk, int) {
    const int64_t r_begin = chunk * rows_per_chunk;
    const int64_t r_end = std::min(w.rows, r_begin + rows_per_chunk);
    float out[kMaxDotRows];
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
      const int64_t t1 = std::min(n_tokens, t0 + kTokenTile);
      for (int64_t r = r_begin; r < r_end; ++r) {
        const uint8_t* weight_row = w.row(r);
        if (t0 == 0 && r + kPrefetchRows < r_end) {
          const uint8_t* ahead = w.row(r + kPrefetchRows);
          for (size_t offset = 0; offset < w.row_bytes; offset += 64) __builtin_prefetch(ahead + offset);
        }
        for (int64_t t = t0; t < t1; t += kMaxDotRows) {
          const int count = static_cast<int>(std::min<int64_t>(kMaxDotRows, t1 - t));
          dot_rows(w.cols, weight_row, act_bytes + act_row_bytes * static_cast<size_t>(t), act_row_bytes, count, out);
          for (int i = 0; i < count; ++i) y[(t + i) * w.rows + r] = out[i];
        }
      }
    }
  });
}

}  // namespace darkbloom::engine::kernels
