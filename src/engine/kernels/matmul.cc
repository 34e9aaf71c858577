#include "engine/kernels/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

namespace darkbloom::engine::kernels {
namespace {

// Tokens per tile: a tile's activations stay in L2 while a chunk of weight rows sweeps them.
constexpr int64_t kTokenTile = 16;
// Weight rows are requested this far ahead of their use, into L2, so DRAM latency hides behind
// compute (measured on decode: no prefetch runs at half the speed; 4-8 KB ahead into L2 is
// fastest; into L1 loses 10-15 %, see the note in kernels_avx512.cc).
constexpr size_t kPrefetchDistance = 4096;

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

// The work list: runs of rows (or packed groups) that share the activation tile, enough of them
// over all the matrices to balance the threads. For one token (decoding) each run is a stream
// through the weights; for several, each weight row is read once per tile and used for
// kMaxDotRows tokens at a time.
void plan_chunks(std::span<const MatmulJob> jobs, int threads, std::vector<MatmulChunk>& chunks) {
  int64_t groups = 0, plain_rows = 0;
  for (const MatmulJob& job : jobs) {
    if (job.n_tokens <= 0) continue;
    groups += job.w->packed_rows / kPackRows;
    plain_rows += job.w->rows - job.w->packed_rows;
  }
  const int64_t groups_per_chunk = std::max<int64_t>(1, groups / (static_cast<int64_t>(threads) * 8));
  const int64_t rows_per_chunk = std::max<int64_t>(8, plain_rows / (static_cast<int64_t>(threads) * 8));
  chunks.clear();
  for (size_t j = 0; j < jobs.size(); ++j) {
    const WeightMatrix& w = *jobs[j].w;
    if (jobs[j].n_tokens <= 0) continue;
    const int job = static_cast<int>(j);
    const int64_t w_groups = w.packed_rows / kPackRows;
    for (int64_t g = 0; g < w_groups; g += groups_per_chunk) {
      chunks.push_back({job, true, g, std::min(w_groups, g + groups_per_chunk)});
    }
    for (int64_t r = w.packed_rows; r < w.rows; r += rows_per_chunk) {
      chunks.push_back({job, false, r, std::min(w.rows, r + rows_per_chunk)});
    }
  }
  if (chunks.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw std::length_error("matmul: too many chunks");
  }
}

// Packed groups [g_begin, g_end) of w against every token.
void run_packed(const KernelSet& kernels, const WeightMatrix& w, int64_t g_begin, int64_t g_end,
                const uint8_t* act_bytes, size_t act_row_bytes, int64_t n_tokens, float* y) {
  const PackedDotFn packed = kernels.packed_for(w.type);
  const size_t group_bytes = w.row_bytes * kPackRows;
  float out[kMaxPackedDotRows * kPackRows];
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
    const int64_t t1 = std::min(n_tokens, t0 + kTokenTile);
    for (int64_t g = g_begin; g < g_end; ++g) {
      const uint8_t* group = w.data + group_bytes * static_cast<size_t>(g);
      for (int64_t t = t0; t < t1; t += kMaxPackedDotRows) {
        const int count = static_cast<int>(std::min<int64_t>(kMaxPackedDotRows, t1 - t));
        packed(w.cols, group, act_bytes + act_row_bytes * static_cast<size_t>(t), act_row_bytes, count, out);
        for (int i = 0; i < count; ++i) {
          std::memcpy(y + (t + i) * w.rows + g * kPackRows, out + kPackRows * i, sizeof(float) * kPackRows);
        }
      }
    }
  }
}

// Plain rows [r_begin, r_end) of w against every token.
void run_rows(const KernelSet& kernels, const WeightMatrix& w, int64_t r_begin, int64_t r_end, const uint8_t* act_bytes,
              size_t act_row_bytes, int64_t n_tokens, float* y) {
  const DotRowsFn dot_rows = kernels.rows_for(w.type);
  const int64_t rows_ahead = std::max<int64_t>(1, static_cast<int64_t>(kPrefetchDistance / w.row_bytes));
  float out[kMaxDotRows];
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
    const int64_t t1 = std::min(n_tokens, t0 + kTokenTile);
    for (int64_t r = r_begin; r < r_end; ++r) {
      const uint8_t* weight_row = w.row(r);
      // Past the chunk's end too: the rows after it are the next chunk's, read next.
      if (t0 == 0 && r + rows_ahead < w.rows) {
        const uint8_t* ahead = w.row(r + rows_ahead);
        for (size_t offset = 0; offset < w.row_bytes; offset += 64) __builtin_prefetch(ahead + offset, 0, 2);
      }
      for (int64_t t = t0; t < t1; t += kMaxDotRows) {
        const int count = static_cast<int>(std::min<int64_t>(kMaxDotRows, t1 - t));
        dot_rows(w.cols, weight_row, act_bytes + act_row_bytes * static_cast<size_t>(t), act_row_bytes, count, out);
        for (int i = 0; i < count; ++i) y[(t + i) * w.rows + r] = out[i];
      }
    }
  }
}

}  // namespace

void matmul(ThreadPool& pool, const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, MatmulScratch& scratch) {
  const MatmulJob job{&w, x, n_tokens, y};
  matmul_many(pool, kernels, std::span(&job, 1), scratch);
}

namespace {

// The quantized rows of every distinct (input, format) pair of the jobs: inputs[job_input[j]] is
// what job j reads. Quantizing is one dispatch, one task per input row.
void quantize_inputs(ThreadPool& pool, const KernelSet& kernels, std::span<const MatmulJob> jobs,
                     MatmulScratch& scratch) {
  auto& inputs = scratch.inputs;
  inputs.clear();
  scratch.job_input.assign(jobs.size(), 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MatmulJob& job = jobs[j];
    const ActivationFormat format = kernels.activation_format_for(job.w->type);
    auto found = std::find_if(inputs.begin(), inputs.end(), [&](const MatmulInput& in) {
      return in.x == job.x && in.n_tokens == job.n_tokens && in.cols == job.w->cols && in.format == format;
    });
    if (found == inputs.end()) {
      found = inputs.insert(
          found, {job.x, job.n_tokens, job.w->cols, format, activation_row_bytes(format, job.w->cols), nullptr, 0, 0});
    }
    scratch.job_input[j] = static_cast<int>(found - inputs.begin());
  }
  // The inputs to quantize, each owning a run of tasks from its first_task and a run of bytes from
  // its offset in the one activation buffer.
  std::vector<int>& quantized = scratch.quantized_inputs;
  quantized.clear();
  int64_t tasks = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    MatmulInput& in = inputs[i];
    if (in.format == ActivationFormat::f32) continue;
    in.first_task = tasks;
    in.offset = bytes;
    tasks += in.n_tokens;
    bytes += in.row_bytes * static_cast<size_t>(in.n_tokens);
    quantized.push_back(static_cast<int>(i));
  }
  scratch.activations.resize(bytes);
  for (MatmulInput& in : inputs) {
    in.bytes = in.format == ActivationFormat::f32 ? reinterpret_cast<const uint8_t*>(in.x)
                                                  : scratch.activations.data() + in.offset;
  }
  if (tasks > std::numeric_limits<int>::max()) throw std::length_error("matmul: too many activation rows");
  pool.run(static_cast<int>(tasks), [&](int task, int) {
    // The last input whose run starts at or before `task`.
    const auto next = std::upper_bound(quantized.begin(), quantized.end(), task, [&](int64_t value, int i) {
      return value < inputs[static_cast<size_t>(i)].first_task;
    });
    const MatmulInput& in = inputs[static_cast<size_t>(*(next - 1))];
    const int64_t t = task - in.first_task;
    kernels.quantize_activation(in.format, in.x + t * in.cols,
                                scratch.activations.data() + in.offset + in.row_bytes * static_cast<size_t>(t),
                                in.cols);
  });
}

}  // namespace

void matmul_many(ThreadPool& pool, const KernelSet& kernels, std::span<const MatmulJob> jobs, MatmulScratch& scratch) {
  quantize_inputs(pool, kernels, jobs, scratch);
  const std::vector<MatmulChunk>& chunks = scratch.chunks;
  plan_chunks(jobs, pool.size(), scratch.chunks);
  pool.run(static_cast<int>(chunks.size()), [&](int c, int) {
    const MatmulChunk& chunk = chunks[static_cast<size_t>(c)];
    const MatmulJob& job = jobs[static_cast<size_t>(chunk.job)];
    const MatmulInput& in = scratch.inputs[static_cast<size_t>(scratch.job_input[static_cast<size_t>(chunk.job)])];
    if (chunk.packed) {
      run_packed(kernels, *job.w, chunk.begin, chunk.end, in.bytes, in.row_bytes, job.n_tokens, job.y);
    } else {
      run_rows(kernels, *job.w, chunk.begin, chunk.end, in.bytes, in.row_bytes, job.n_tokens, job.y);
    }
  });
}

}  // namespace darkbloom::engine::kernels
