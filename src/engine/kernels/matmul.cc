#include "engine/kernels/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace darkbloom::engine::kernels {
namespace {

// Tokens per tile: a tile's activations stay in L2 while a chunk of weight rows sweeps them.
constexpr int64_t kTokenTile = 16;
// Weight rows are requested this far ahead of their use so DRAM latency hides behind compute.
constexpr int64_t kPrefetchRows = 4;

}  // namespace

void PackedWeights::Free::operator()(uint8_t* p) const {
  std::free(p);
}

WeightMatrix PackedWeights::pack(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w) {
  const PackRowsFn pack_rows = kernels.pack_for(w.type);
  if (pack_rows == nullptr || kernels.packed_for(w.type) == nullptr || w.rows < kPackRows || w.packed_rows != 0) {
    return w;
  }
  const size_t bytes = w.row_bytes * static_cast<size_t>(w.rows);
  std::unique_ptr<uint8_t, Free> buffer(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  if (!buffer) throw std::bad_alloc();
  WeightMatrix packed = w;
  packed.data = buffer.get();
  packed.packed_rows = w.rows / kPackRows * kPackRows;
  uint8_t* out = buffer.get();
  const int64_t groups = packed.packed_rows / kPackRows;
  pool.run(static_cast<int>(groups), [&](int g, int) {
    const size_t offset = w.row_bytes * static_cast<size_t>(g) * kPackRows;
    pack_rows(w.data + offset, w.row_bytes, w.cols, out + offset);
  });
  const size_t packed_bytes = w.row_bytes * static_cast<size_t>(packed.packed_rows);
  std::memcpy(out + packed_bytes, w.data + packed_bytes, bytes - packed_bytes);
  buffers_.push_back(std::move(buffer));
  return packed;
}

namespace {

// Rows [0, w.packed_rows) of a packed matrix, in groups.
void matmul_packed(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w, const uint8_t* act_bytes,
                   size_t act_row_bytes, int64_t n_tokens, float* y) {
  const PackedDotFn packed = kernels.packed_for(w.type);
  const int64_t groups = w.packed_rows / kPackRows;
  const int64_t groups_per_chunk = std::max<int64_t>(1, groups / (static_cast<int64_t>(pool.size()) * 8));
  const int64_t n_chunks = (groups + groups_per_chunk - 1) / groups_per_chunk;
  const size_t group_bytes = w.row_bytes * kPackRows;
  pool.run(static_cast<int>(n_chunks), [&](int chunk, int) {
    const int64_t g_begin = chunk * groups_per_chunk;
    const int64_t g_end = std::min(groups, g_begin + groups_per_chunk);
    float out[kMaxDotRows * kPackRows];
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
      const int64_t t1 = std::min(n_tokens, t0 + kTokenTile);
      for (int64_t g = g_begin; g < g_end; ++g) {
        const uint8_t* group = w.data + group_bytes * static_cast<size_t>(g);
        for (int64_t t = t0; t < t1; t += kMaxDotRows) {
          const int count = static_cast<int>(std::min<int64_t>(kMaxDotRows, t1 - t));
          packed(w.cols, group, act_bytes + act_row_bytes * static_cast<size_t>(t), act_row_bytes, count, out);
          for (int i = 0; i < count; ++i) {
            std::memcpy(y + (t + i) * w.rows + g * kPackRows, out + kPackRows * i, sizeof(float) * kPackRows);
          }
        }
      }
    }
  });
}

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
  if (w.packed_rows > 0) {
    matmul_packed(pool, kernels, w, act_bytes, act_row_bytes, n_tokens, y);
    if (w.packed_rows == w.rows) return;
  }
  const DotRowsFn dot_rows = kernels.rows_for(w.type);
  const int64_t first_row = w.packed_rows;  // the rest are plain rows
  const int64_t plain_rows = w.rows - first_row;

  // Enough chunks to balance the threads, each a run of rows sharing the activation tile. For one
  // token (decoding) this is a stream through the weights; for several, each weight row is read
  // once per tile and used for kMaxDotRows tokens at a time.
  const int64_t rows_per_chunk = std::max<int64_t>(8, plain_rows / (static_cast<int64_t>(pool.size()) * 8));
  const int64_t n_chunks = (plain_rows + rows_per_chunk - 1) / rows_per_chunk;
  pool.run(static_cast<int>(n_chunks), [&](int chunk, int) {
    const int64_t r_begin = first_row + chunk * rows_per_chunk;
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
