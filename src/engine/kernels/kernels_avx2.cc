// AVX2 + FMA + F16C kernels. This file alone is compiled with those instructions enabled; nothing
// here may run before kernel_set.cc has checked the CPU.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"

namespace darkbloom::engine::kernels {
namespace {

inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

inline int horizontal_sum_i32(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4E));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xB1));
  return _mm_cvtsi128_si32(sum);
}

inline float load_fp16(uint16_t h) {
  return _cvtsh_ss(h);
}

// 32 signed bytes times 32 signed bytes, summed in pairs to 8 int32. maddubs needs an unsigned
// left operand, so move the sign of x onto y.
inline __m256i dot_i8_pairs(__m256i x, __m256i y) {
  const __m256i abs_x = _mm256_sign_epi8(x, x);
  const __m256i signed_y = _mm256_sign_epi8(y, x);
  const __m256i pairs16 = _mm256_maddubs_epi16(abs_x, signed_y);
  return _mm256_madd_epi16(pairs16, _mm256_set1_epi16(1));
}

float dot_f32(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
  float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

float dot_f16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    const __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i + 8)));
    acc0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(y + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    acc0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y + i), acc0);
  }
  float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += load_fp16(x[i]) * y[i];
  return sum;
}

inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

float dot_bf16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load_bf16x8(x + i), _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(load_bf16x8(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(load_bf16x8(x + i), _mm256_loadu_ps(y + i), acc0);
  float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    uint32_t bits = static_cast<uint32_t>(x[i]) << 16;
    float value;
    __builtin_memcpy(&value, &bits, sizeof value);
    sum += value * y[i];
  }
  return sum;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const ActQ8_0*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[b].qs));
    const __m256 scale = _mm256_set1_ps(load_fp16(x[b].d) * y[b].d);
    acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot_i8_pairs(qx, qy)), acc);
  }
  return horizontal_sum(acc);
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const ActQ8_0*>(a);
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs));
    // Low nibbles are elements 0-15 (lower lane), high nibbles 16-31 (upper lane).
    __m256i qx = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    qx = _mm256_sub_epi8(_mm256_and_si256(qx, low_mask), eight);
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[b].qs));
    const __m256 scale = _mm256_set1_ps(load_fp16(x[b].d) * y[b].d);
    acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot_i8_pairs(qx, qy)), acc);
  }
  return horizontal_sum(acc);
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    uint8_t scales[8], mins[8];
    unpack_q4_k_scales(x[b].scales, scales, mins);
    __m256i sum_q = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(packed, low_mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
      const __m256i act_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[b].qs + 64 * c));
      const __m256i act_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[b].qs + 64 * c + 32));
      // Nibbles are unsigned, so maddubs takes them directly (at most 15 * 127 * 2 per pair).
      const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, act_lo), _mm256_set1_epi16(scales[2 * c]));
      const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, act_hi), _mm256_set1_epi16(scales[2 * c + 1]));
      sum_q = _mm256_add_epi32(sum_q, _mm256_add_epi32(p_lo, p_hi));
    }
    int sum_mins = 0;
    for (int j = 0; j < 8; ++j) sum_mins += mins[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
    sum += y[b].d * (load_fp16(x[b].d) * static_cast<float>(horizontal_sum_i32(sum_q)) -
                     load_fp16(x[b].dmin) * static_cast<float>(sum_mins));
  }
  return sum;
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i two_bits = _mm256_set1_epi8(3);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    __m256i sum_q = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh + 32 * h));
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low_mask), _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, low_mask),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4)),
      };
      for (int g = 0; g < 4; ++g) {
        const __m256i act = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[b].qs + 128 * h + 32 * g));
        const int8_t* sc = x[b].scales + 8 * h + 2 * g;
        // Lower lane: elements 0-15 of the group (scale sc[0]); upper lane: 16-31 (scale sc[1]).
        const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
        sum_q = _mm256_add_epi32(sum_q, _mm256_madd_epi16(_mm256_maddubs_epi16(q[g], act), scale));
      }
    }
    int offset = 0;  // the stored q is value + 32
    for (int g = 0; g < 16; ++g) offset += x[b].scales[g] * y[b].bsums[g];
    sum += load_fp16(x[b].d) * y[b].d * static_cast<float>(horizontal_sum_i32(sum_q) - 32 * offset);
  }
  return sum;
}

// Same bytes as quantize_activation_row: scale = amax / 127, round half to even.
void quantize_q8_0(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<ActQ8_0*>(dst);
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / 32; ++b, src += 32) {
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
    out[b].d = max_abs / 127.0f;
    const __m256 inverse = _mm256_set1_ps(max_abs != 0.0f ? 127.0f / max_abs : 0.0f);
    __m256i i32[4];
    for (int k = 0; k < 4; ++k) i32[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inverse));
    // Pack 32-bit to 8-bit; the packs interleave 128-bit lanes, so restore element order.
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
    const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i i8 = _mm256_packs_epi16(i16a, i16b);
    i8 = _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), i8);
  }
}

void quantize_q8_k(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<ActQ8_K*>(dst);
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / 256; ++b, src += 256) {
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 32; ++k) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(src + 8 * k)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float max_abs = _mm_cvtss_f32(m);
    out[b].d = max_abs / 127.0f;
    const __m256 inverse = _mm256_set1_ps(max_abs != 0.0f ? 127.0f / max_abs : 0.0f);
    for (int c = 0; c < 8; ++c) {
      __m256i i32[4];
      for (int k = 0; k < 4; ++k)
        i32[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + 32 * c + 8 * k), inverse));
      const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
      const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
      __m256i i8 = _mm256_packs_epi16(i16a, i16b);
      i8 = _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs + 32 * c), i8);
      // Group sums of 16: widen to int16 and add horizontally within each half.
      const __m256i wide_lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(i8));
      const __m256i wide_hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(i8, 1));
      out[b].bsums[2 * c] = static_cast<int16_t>(horizontal_sum_i32(_mm256_madd_epi16(wide_lo, _mm256_set1_epi16(1))));
      out[b].bsums[2 * c + 1] =
          static_cast<int16_t>(horizontal_sum_i32(_mm256_madd_epi16(wide_hi, _mm256_set1_epi16(1))));
    }
  }
}

const KernelSet kAvx2 = {
    "avx2", dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q4_k, dot_q6_k, quantize_q8_0, quantize_q8_k,
};

}  // namespace

const KernelSet* avx2_kernel_set_unchecked() {
  return &kAvx2;
}

}  // namespace darkbloom::engine::kernels
