#include "engine/evaluation/machine_speed.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "base/cpu_features.h"

namespace darkbloom::engine {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

bool has_avx2() {
#if defined(__x86_64__)
  const CpuFeatures& cpu = cpu_features();
  return cpu.avx2 && cpu.fma;
#else
  return false;
#endif
}

#if !defined(__x86_64__)
}  // namespace
namespace detail {
unsigned long long read_sum_avx2(const void*, size_t) {
  return 0;
}
float fma_loop_avx2(long, float) {
  return 0;
}
}  // namespace detail
namespace {
#endif

unsigned long long read_sum_portable(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned long long*>(data);
  unsigned long long a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 4 <= bytes / 8; i += 4) {
    a0 ^= p[i];
    a1 ^= p[i + 1];
    a2 ^= p[i + 2];
    a3 ^= p[i + 3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
}

float fma_loop_portable(long iterations, float seed) {
  float acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = seed + static_cast<float>(k);
  for (long i = 0; i < iterations; ++i) {
    for (float& x : acc) x = x * 0.999999f + 1e-7f;
  }
  return acc[0] + acc[7];
}

volatile unsigned long long g_sink_bits;  // keeps the reads from being optimised away
volatile float g_sink_float;

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int repeats) {
  const int threads = pool.size();
  const size_t slice = (bytes / static_cast<size_t>(threads)) & ~size_t{4095};
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> buffer(std::aligned_alloc(4096, slice * static_cast<size_t>(threads)));
  if (!buffer) return 0;
  auto* base = static_cast<unsigned char*>(buffer.get());
  // First touch from the thread that will read each slice.
  pool.run(threads, [&](int t, int) { std::memset(base + slice * static_cast<size_t>(t), t + 1, slice); });
  const bool avx2 = has_avx2();
  std::vector<double> rates;
  for (int r = 0; r <= repeats; ++r) {
    const auto start = Clock::now();
    pool.run(threads, [&](int t, int) {
      const void* part = base + slice * static_cast<size_t>(t);
      g_sink_bits = avx2 ? detail::read_sum_avx2(part, slice) : read_sum_portable(part, slice);
    });
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (r > 0) rates.push_back(static_cast<double>(slice) * threads / seconds / 1e9);  // r = 0 warms up
  }
  return median(rates);
}

double measure_fma_gflops(ThreadPool& pool, int repeats) {
  const int threads = pool.size();
  const bool avx2 = has_avx2();
  const long iterations = avx2 ? 4'000'000 : 2'000'000;
  // Flops per iteration: 12 chains of 8-wide FMAs (AVX2) or 8 scalar multiply-adds.
  const double flops_per_iteration = avx2 ? 12.0 * 8 * 2 : 8.0 * 2;
  std::vector<double> rates;
  for (int r = 0; r <= repeats; ++r) {
    const auto start = Clock::now();
    pool.run(threads, [&](int t, int) {
      g_sink_float = avx2 ? detail::fma_loop_avx2(iterations, static_cast<float>(t))
                          : fma_loop_portable(iterations, static_cast<float>(t));
    });
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (r > 0) rates.push_back(flops_per_iteration * static_cast<double>(iterations) * threads / seconds / 1e9);
  }
  return median(rates);
}

}  // namespace darkbloom::engine
