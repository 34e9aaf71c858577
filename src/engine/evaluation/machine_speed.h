// What this machine can do at most, measured in the same run as a benchmark so results can be
// quoted as a share of it: memory read bandwidth (what batch-1 decoding is bound by) and the
// fp32 multiply-add rate (what prompt processing is bound by). Both use every thread of a pool.
#pragma once

#include <cstddef>

#include "base/thread_pool.h"

namespace darkbloom::engine {

// GB/s reading a buffer of `bytes` (far larger than the caches) split over the pool's threads;
// the median of `repeats` passes after one warm-up pass.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{512} << 20, int repeats = 5);

// GFLOP/s of fp32 fused multiply-adds (2 flops each) from register-only loops on every thread:
// AVX2 FMA when the CPU has it, scalar otherwise. The median of `repeats`.
double measure_fma_gflops(ThreadPool& pool, int repeats = 5);

namespace detail {
// Kernels, in machine_speed_avx2.cc when the CPU has AVX2 (callers check).
unsigned long long read_sum_avx2(const void* data, size_t bytes);
float fma_loop_avx2(long iterations, float seed);
}  // namespace detail

}  // namespace darkbloom::engine
