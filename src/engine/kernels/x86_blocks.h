// Small AVX2 building blocks shared by kernels_avx2.cc and kernels_avx512.cc. Include only from
// files compiled with AVX2/FMA/F16C enabled. Every function is `static`: each including file gets
// its own copy compiled with its own instruction set, so the linker can never hand the AVX-512
// file's copy to the AVX2 kernels (which an ordinary inline function would allow).
#pragma once

#include <immintrin.h>

#include "engine/kernels/quant_blocks.h"

namespace darkbloom::engine::kernels::x86 {

static inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// One Q8_0 activation block: the scale into *d, the 32 quants returned in element order. The same
// numbers as the scalar quantizer: scale = amax / 127, round half to even.
static inline __m256i quantize_q8_0_block(const float* src, float* d) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(src + 8 * k);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, v[k]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float max_abs = _mm_cvtss_f32(m);
  *d = max_abs / 127.0f;
  const __m256 inverse = _mm256_set1_ps(max_abs != 0.0f ? 127.0f / max_abs : 0.0f);
  __m256i i32[4];
  for (int k = 0; k < 4; ++k) i32[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inverse));
  // Pack 32-bit to 8-bit; the packs interleave 128-bit lanes, so restore element order.
  const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
  const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
  const __m256i i8 = _mm256_packs_epi16(i16a, i16b);
  return _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// A Q8_0 weight block's 32 signed bytes.
static inline __m256i signed_quants(const BlockQ8_0& block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.qs));
}

}  // namespace darkbloom::engine::kernels::x86
