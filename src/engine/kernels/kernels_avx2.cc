// AVX2 + FMA + F16C kernels. This file alone is compiled with those instructions enabled; nothing
// here may run before kernel_set.cc has checked the CPU.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/x86_blocks.h"
#include "engine/kernels/x86_quant_dots.h"

namespace darkbloom::engine::kernels {
namespace {

using x86::horizontal_sum;
using x86::signed_quants;

inline int horizontal_sum_i32(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4E));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xB1));
  return _mm_cvtsi128_si32(sum);
}

inline float load_fp16(uint16_t h) {
  return _cvtsh_ss(h);
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

// The quantized dot products run on up to kMaxDotRows activation rows per pass over a weight
// row: the weight block is loaded and unpacked once, then each activation row gets exactly the
// operations a single-row call would give it, so results never depend on the batch. The
// single-row entry points are the T = 1 instances.
// Q8_0 against Q8_0 activations (the other quantized types are in x86_quant_dots.h).
struct RowsQ8_0 {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ8_0*>(w);
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; ++b) {
      const __m256i qx = signed_quants(x[b]);
      const __m256i abs_x = _mm256_sign_epi8(qx, qx);
      const float dx = load_fp16(x[b].d);
      for (int t = 0; t < T; ++t) {
        const auto* y = reinterpret_cast<const ActQ8_0*>(a + stride * static_cast<size_t>(t)) + b;
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs));
        const __m256i pairs16 = _mm256_maddubs_epi16(abs_x, _mm256_sign_epi8(qy, qx));
        const __m256i sums = _mm256_madd_epi16(pairs16, _mm256_set1_epi16(1));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y->d), _mm256_cvtepi32_ps(sums), acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]);
  }
};

// Float-activation types: one pass per activation row (weights stay in L1 between them).
template <VecDotFn Dot>
void rows_by_dot(int64_t n, const void* w, const void* a, size_t stride, int count, float* out) {
  for (int t = 0; t < count; ++t) out[t] = Dot(n, w, static_cast<const uint8_t*>(a) + stride * static_cast<size_t>(t));
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = load_fp16(src[i]);
}

void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

// Same bytes as quantize_activation_row: scale = amax / 127, round half to even.
void quantize_q8_0(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<ActQ8_0*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, src += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), x86::quantize_q8_0_block(src, &out[b].d));
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

// Attention kernels. Rows are loaded once and used for every query head of the group.
inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float load1(float x) {
  return x;
}
inline float load1(uint16_t x) {
  return load_fp16(x);
}

// Scores for 4 positions and up to 2 query heads at a time: each key element is converted once
// for both heads, and the 4 x 8-lane sums are reduced together.
template <class Element, int G>
void scores_4(const Element* const rows[4], const float* q, int head_dim, float scale, float* scores,
              size_t scores_stride, int count) {
  __m256 acc[G][4];
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < 4; ++j) acc[g][j] = _mm256_setzero_ps();
  }
  for (int i = 0; i < head_dim; i += 8) {
    __m256 r[4];
    for (int j = 0; j < 4; ++j) r[j] = load8(rows[j] + i);
    for (int g = 0; g < G; ++g) {
      const __m256 qv = _mm256_loadu_ps(q + static_cast<size_t>(g) * head_dim + i);
      for (int j = 0; j < 4; ++j) acc[g][j] = _mm256_fmadd_ps(qv, r[j], acc[g][j]);
    }
  }
  for (int g = 0; g < G; ++g) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[g][0], acc[g][1]), _mm256_hadd_ps(acc[g][2], acc[g][3]));
    const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    float out[4];
    _mm_storeu_ps(out, _mm_mul_ps(sums, _mm_set1_ps(scale)));
    for (int j = 0; j < count; ++j) scores[static_cast<size_t>(g) * scores_stride + j] = out[j];
  }
}

template <class Element>
void scores_rows(const void* rows, size_t stride, int n, const float* q, int n_q, int head_dim, float scale,
                 float* scores, size_t scores_stride) {
  const auto* base = static_cast<const Element*>(rows);
  if (head_dim % 8 != 0) {
    for (int p = 0; p < n; ++p) {
      const Element* row = base + stride * static_cast<size_t>(p);
      for (int g = 0; g < n_q; ++g) {
        const float* qg = q + static_cast<size_t>(g) * head_dim;
        float sum = 0;
        for (int i = 0; i < head_dim; ++i) sum += qg[i] * load1(row[i]);
        scores[static_cast<size_t>(g) * scores_stride + p] = sum * scale;
      }
    }
    return;
  }
  for (int p = 0; p < n; p += 4) {
    const int count = n - p < 4 ? n - p : 4;
    const Element* four[4];
    for (int j = 0; j < 4; ++j) four[j] = base + stride * static_cast<size_t>(p + (j < count ? j : 0));
    int g = 0;
    for (; g + 2 <= n_q; g += 2) {
      scores_4<Element, 2>(four, q + static_cast<size_t>(g) * head_dim, head_dim, scale,
                           scores + static_cast<size_t>(g) * scores_stride + p, scores_stride, count);
    }
    if (g < n_q) {
      scores_4<Element, 1>(four, q + static_cast<size_t>(g) * head_dim, head_dim, scale,
                           scores + static_cast<size_t>(g) * scores_stride + p, scores_stride, count);
    }
  }
}

// out += weights x rows for 32 dimensions and up to 2 query heads at a time, accumulated in
// registers across all positions; each value element is converted once for all heads.
template <class Element, int G>
void accumulate_32(const Element* rows, size_t stride, int n, const float* weights, size_t weights_stride, float* out,
                   int head_dim) {
  __m256 acc[G][4];
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_loadu_ps(out + static_cast<size_t>(g) * head_dim + 8 * c);
  }
  for (int p = 0; p < n; ++p) {
    const Element* row = rows + stride * static_cast<size_t>(p);
    __m256 r[4];
    for (int c = 0; c < 4; ++c) r[c] = load8(row + 8 * c);
    for (int g = 0; g < G; ++g) {
      const __m256 w = _mm256_set1_ps(weights[static_cast<size_t>(g) * weights_stride + p]);
      for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_fmadd_ps(w, r[c], acc[g][c]);
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) _mm256_storeu_ps(out + static_cast<size_t>(g) * head_dim + 8 * c, acc[g][c]);
  }
}

template <class Element>
void accumulate_rows(const void* rows, size_t stride, int n, const float* weights, size_t weights_stride, int n_q,
                     int head_dim, float* out) {
  const auto* base = static_cast<const Element*>(rows);
  if (head_dim % 32 != 0) {
    for (int p = 0; p < n; ++p) {
      const Element* row = base + stride * static_cast<size_t>(p);
      for (int g = 0; g < n_q; ++g) {
        const float w = weights[static_cast<size_t>(g) * weights_stride + p];
        float* og = out + static_cast<size_t>(g) * head_dim;
        for (int i = 0; i < head_dim; ++i) og[i] += w * load1(row[i]);
      }
    }
    return;
  }
  for (int d = 0; d < head_dim; d += 32) {
    int g = 0;
    for (; g + 2 <= n_q; g += 2) {
      accumulate_32<Element, 2>(base + d, stride, n, weights + static_cast<size_t>(g) * weights_stride, weights_stride,
                                out + static_cast<size_t>(g) * head_dim + d, head_dim);
    }
    for (; g < n_q; ++g) {
      accumulate_32<Element, 1>(base + d, stride, n, weights + static_cast<size_t>(g) * weights_stride, weights_stride,
                                out + static_cast<size_t>(g) * head_dim + d, head_dim);
    }
  }
}

// e^x for 8 floats: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (Taylor
// coefficients; relative error below 2e-7 on that range), times 2^n built in the exponent bits.
// Below -87.3 the result is 0 (the smallest normal float is e^-87.3).
inline __m256 exp8(__m256 x) {
  const __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2, with ln2 split in two so the product is exact enough.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  return _mm256_andnot_ps(too_small, result);
}

// Lanes of x[i..n) for a tail of fewer than 8 elements: all ones where i + lane < n.
inline __m256 tail_mask(int64_t left) {
  return _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

void softmax(float* x, int64_t n) {
  // The maximum (a NaN element is passed over, as std::max does).
  __m256 max8 = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) max8 = _mm256_max_ps(_mm256_loadu_ps(x + i), max8);
  float shift = -INFINITY;
  {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, max8);
    for (float lane : lanes) shift = std::max(shift, lane);
    for (int64_t j = i; j < n; ++j) shift = std::max(shift, x[j]);
  }
  const __m256 shift8 = _mm256_set1_ps(shift);
  __m256 sum8 = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), shift8));
    _mm256_storeu_ps(x + i, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float tail[8] = {};
  if (i < n) {  // the tail through the same vector code, so every element gets the same function
    for (int64_t j = i; j < n; ++j) tail[j - i] = x[j];
    const __m256 e = _mm256_and_ps(tail_mask(n - i), exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), shift8)));
    _mm256_storeu_ps(tail, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  const float inverse = 1.0f / horizontal_sum(sum8);
  const __m256 inverse8 = _mm256_set1_ps(inverse);
  for (int64_t k = 0; k < i; k += 8) _mm256_storeu_ps(x + k, _mm256_mul_ps(_mm256_loadu_ps(x + k), inverse8));
  for (int64_t j = i; j < n; ++j) x[j] = tail[j - i] * inverse;
}

KernelSet make_set() {
  KernelSet set = {
      .name = "avx2",
      .dot_f32 = dot_f32,
      .dot_f16 = dot_f16,
      .dot_bf16 = dot_bf16,
      .dot_q8_0 = x86::dot_of<RowsQ8_0>,
      .quantize_q8_0 = quantize_q8_0,
      .quantize_q8_k = quantize_q8_k,
      .rows_f32 = rows_by_dot<dot_f32>,
      .rows_f16 = rows_by_dot<dot_f16>,
      .rows_bf16 = rows_by_dot<dot_bf16>,
      .rows_q8_0 = x86::rows_of<RowsQ8_0>,
      .f16_to_f32 = f16_to_f32,
      .f32_to_f16 = f32_to_f16,
      .scores_f32 = scores_rows<float>,
      .scores_f16 = scores_rows<uint16_t>,
      .accumulate_f32 = accumulate_rows<float>,
      .accumulate_f16 = accumulate_rows<uint16_t>,
      .softmax = softmax,
  };
  x86::add_quant_dots(set);
  return set;
}

}  // namespace

const KernelSet* avx2_kernel_set_unchecked() {
  static const KernelSet set = make_set();
  return &set;
}

}  // namespace darkbloom::engine::kernels
