// Portable kernels: the reference every SIMD set is tested against, and the fallback for CPUs
// without AVX2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/kernels/fp16.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"

namespace darkbloom::engine::kernels {
namespace {

float dot_f32(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

float dot_f16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += fp16_to_fp32(x[i]) * y[i];
  return sum;
}

float dot_bf16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += bf16_to_fp32(x[i]) * y[i];
  return sum;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const ActQ8_0*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int isum = 0;
    for (int i = 0; i < 32; ++i) isum += x[b].qs[i] * y[b].qs[i];
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const ActQ8_1*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int isum = 0;
    for (int i = 0; i < 16; ++i) {
      isum += ((x[b].qs[i] & 0x0F) - 8) * y[b].qs[i];
      isum += ((x[b].qs[i] >> 4) - 8) * y[b].qs[i + 16];
    }
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    uint8_t scales[8], mins[8];
    unpack_q4_k_scales(x[b].scales, scales, mins);
    int sum_q = 0;     // sum over sub-blocks of scale * <nibbles, activations>
    int sum_mins = 0;  // sum over sub-blocks of min * (sum of activations)
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = x[b].qs + 32 * c;
      const int8_t* act = y[b].qs + 64 * c;
      int lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo += (q[l] & 0x0F) * act[l];
        hi += (q[l] >> 4) * act[l + 32];
      }
      sum_q += scales[2 * c] * lo + scales[2 * c + 1] * hi;
    }
    for (int j = 0; j < 8; ++j) sum_mins += mins[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
    sum += y[b].d *
           (fp16_to_fp32(x[b].d) * static_cast<float>(sum_q) - fp16_to_fp32(x[b].dmin) * static_cast<float>(sum_mins));
  }
  return sum;
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    int group_sums[16] = {};  // <q (0..63), activations> per group of 16
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[b].ql + 64 * h;
      const uint8_t* qh = x[b].qh + 32 * h;
      const int8_t* act = y[b].qs + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int g = 8 * h + l / 16;
        group_sums[g] += ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) * act[l];
        group_sums[g + 2] += ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) * act[l + 32];
        group_sums[g + 4] += ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) * act[l + 64];
        group_sums[g + 6] += ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) * act[l + 96];
      }
    }
    int isum = 0;
    for (int g = 0; g < 16; ++g) isum += x[b].scales[g] * (group_sums[g] - 32 * y[b].bsums[g]);
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

// Q4_1 and Q5_1: sum((d q + m) a) = d * <q, a> + m * sum(a).
template <class Block>
float dot_affine(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const Block*>(w);
  const auto* y = static_cast<const ActQ8_1*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int8_t q[32];
    unpack_32_quants(x[b].qs, fifth_bits(x[b]), q);
    int isum = 0;
    for (int i = 0; i < 32; ++i) isum += q[i] * y[b].qs[i];
    sum += y[b].d *
           (fp16_to_fp32(x[b].d) * static_cast<float>(isum) + fp16_to_fp32(x[b].m) * static_cast<float>(y[b].sum));
  }
  return sum;
}

float dot_q5_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_0*>(w);
  const auto* y = static_cast<const ActQ8_1*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int8_t q[32];
    unpack_32_quants(x[b].qs, x[b].qh, q);
    int isum = 0;
    for (int i = 0; i < 32; ++i) isum += q[i] * y[b].qs[i];
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum - 16 * y[b].sum);
  }
  return sum;
}

float dot_iq4_nl(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ4_NL*>(w);
  const auto* y = static_cast<const ActQ8_1*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int8_t q[32];
    unpack_32_quants(x[b].qs, nullptr, q);
    int isum = 0;
    for (int i = 0; i < 32; ++i) isum += kIq4nlValues[q[i]] * y[b].qs[i];
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

// <q, a> over each group of `size` elements.
template <int kGroups>
void group_dots(const int8_t* q, const int8_t* act, int* out) {
  constexpr int size = 256 / kGroups;
  for (int g = 0; g < kGroups; ++g) {
    int sum = 0;
    for (int i = 0; i < size; ++i) sum += q[size * g + i] * act[size * g + i];
    out[g] = sum;
  }
}

float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    int8_t q[256];
    unpack_q2_k_quants(x[b], q);
    int dots[16];
    group_dots<16>(q, y[b].qs, dots);
    int sum_q = 0, sum_mins = 0;
    for (int g = 0; g < 16; ++g) {
      sum_q += (x[b].scales[g] & 0x0F) * dots[g];
      sum_mins += (x[b].scales[g] >> 4) * y[b].bsums[g];
    }
    sum += y[b].d *
           (fp16_to_fp32(x[b].d) * static_cast<float>(sum_q) - fp16_to_fp32(x[b].dmin) * static_cast<float>(sum_mins));
  }
  return sum;
}

float dot_q3_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    int8_t q[256];
    unpack_q3_k_quants(x[b], q);
    uint8_t scales[16];
    unpack_q3_k_scales(x[b].scales, scales);
    int dots[16];
    group_dots<16>(q, y[b].qs, dots);
    int isum = 0;
    for (int g = 0; g < 16; ++g) isum += (scales[g] - 32) * dots[g];
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

float dot_q5_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_K*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    int8_t q[256];
    unpack_q5_k_quants(x[b], q);
    uint8_t scales[8], mins[8];
    unpack_q4_k_scales(x[b].scales, scales, mins);
    int dots[8];
    group_dots<8>(q, y[b].qs, dots);
    int sum_q = 0, sum_mins = 0;
    for (int j = 0; j < 8; ++j) {
      sum_q += scales[j] * dots[j];
      sum_mins += mins[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
    }
    sum += y[b].d *
           (fp16_to_fp32(x[b].d) * static_cast<float>(sum_q) - fp16_to_fp32(x[b].dmin) * static_cast<float>(sum_mins));
  }
  return sum;
}

float dot_iq4_xs(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ4_XS*>(w);
  const auto* y = static_cast<const ActQ8_K*>(a);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    int8_t q[256];
    for (int j = 0; j < 8; ++j) {
      unpack_32_quants(x[b].qs + 16 * j, nullptr, q + 32 * j);
      for (int i = 0; i < 32; ++i) q[32 * j + i] = kIq4nlValues[q[32 * j + i]];
    }
    int dots[8];
    group_dots<8>(q, y[b].qs, dots);
    int isum = 0;
    for (int j = 0; j < 8; ++j) isum += iq4_xs_scale(x[b], j) * dots[j];
    sum += fp16_to_fp32(x[b].d) * y[b].d * static_cast<float>(isum);
  }
  return sum;
}

void quantize_q8_0(const float* src, void* dst, int64_t n) {
  quantize_activation_row(ActivationFormat::q8_0, src, dst, n);
}

void quantize_q8_k(const float* src, void* dst, int64_t n) {
  quantize_activation_row(ActivationFormat::q8_k, src, dst, n);
}

// Float set: any weight type times float activations, by dequantizing the weight row.
float dot_dequantized(GgmlType type, int64_t n, const void* w, const void* a) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(n));
  dequantize_row(type, w, row.data(), n);
  return dot_f32(n, row.data(), a);
}
float dot_q8_0_float(int64_t n, const void* w, const void* a) {
  return dot_dequantized(GgmlType::q8_0, n, w, a);
}
float dot_q4_0_float(int64_t n, const void* w, const void* a) {
  return dot_dequantized(GgmlType::q4_0, n, w, a);
}
float dot_q4_k_float(int64_t n, const void* w, const void* a) {
  return dot_dequantized(GgmlType::q4_k, n, w, a);
}
float dot_q6_k_float(int64_t n, const void* w, const void* a) {
  return dot_dequantized(GgmlType::q6_k, n, w, a);
}
template <GgmlType kType>
float dot_float(int64_t n, const void* w, const void* a) {
  return dot_dequantized(kType, n, w, a);
}

// Several activation rows: one call of the single-row dot each, so identical by construction.
template <VecDotFn Dot>
void rows_by_dot(int64_t n, const void* w, const void* a, size_t stride, int count, float* out) {
  for (int t = 0; t < count; ++t) out[t] = Dot(n, w, static_cast<const uint8_t*>(a) + stride * static_cast<size_t>(t));
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

template <class Element, float (*Load)(Element)>
void scores_rows(const void* rows, size_t stride, int n, const float* q, int n_q, int head_dim, float scale,
                 float* scores, size_t scores_stride) {
  for (int p = 0; p < n; ++p) {
    const Element* row = static_cast<const Element*>(rows) + stride * static_cast<size_t>(p);
    for (int g = 0; g < n_q; ++g) {
      const float* qg = q + static_cast<size_t>(g) * head_dim;
      float sum = 0.0f;
      for (int i = 0; i < head_dim; ++i) sum += qg[i] * Load(row[i]);
      scores[static_cast<size_t>(g) * scores_stride + p] = sum * scale;
    }
  }
}

template <class Element, float (*Load)(Element)>
void accumulate_rows(const void* rows, size_t stride, int n, const float* weights, size_t weights_stride, int n_q,
                     int head_dim, float* out) {
  for (int p = 0; p < n; ++p) {
    const Element* row = static_cast<const Element*>(rows) + stride * static_cast<size_t>(p);
    for (int g = 0; g < n_q; ++g) {
      const float w = weights[static_cast<size_t>(g) * weights_stride + p];
      float* og = out + static_cast<size_t>(g) * head_dim;
      for (int i = 0; i < head_dim; ++i) og[i] += w * Load(row[i]);
    }
  }
}

float load_f32(float x) {
  return x;
}
float load_f16(uint16_t x) {
  return fp16_to_fp32(x);
}

void softmax(float* x, int64_t n) {
  float shift = -INFINITY;
  for (int64_t i = 0; i < n; ++i) shift = std::max(shift, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  const float inverse = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inverse;
}

const KernelSet kFloat = {
    .name = "float",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0_float,
    .dot_q4_0 = dot_q4_0_float,
    .dot_q4_k = dot_q4_k_float,
    .dot_q6_k = dot_q6_k_float,
    .dot_q4_1 = dot_float<GgmlType::q4_1>,
    .dot_q5_0 = dot_float<GgmlType::q5_0>,
    .dot_q5_1 = dot_float<GgmlType::q5_1>,
    .dot_iq4_nl = dot_float<GgmlType::iq4_nl>,
    .dot_q2_k = dot_float<GgmlType::q2_k>,
    .dot_q3_k = dot_float<GgmlType::q3_k>,
    .dot_q5_k = dot_float<GgmlType::q5_k>,
    .dot_iq4_xs = dot_float<GgmlType::iq4_xs>,
    .quantize_q8_0 = quantize_q8_0,
    .quantize_q8_k = quantize_q8_k,
    .float_activations = true,
    .rows_f32 = rows_by_dot<dot_f32>,
    .rows_f16 = rows_by_dot<dot_f16>,
    .rows_bf16 = rows_by_dot<dot_bf16>,
    .rows_q8_0 = rows_by_dot<dot_q8_0_float>,
    .rows_q4_0 = rows_by_dot<dot_q4_0_float>,
    .rows_q4_k = rows_by_dot<dot_q4_k_float>,
    .rows_q6_k = rows_by_dot<dot_q6_k_float>,
    .rows_q4_1 = rows_by_dot<dot_float<GgmlType::q4_1>>,
    .rows_q5_0 = rows_by_dot<dot_float<GgmlType::q5_0>>,
    .rows_q5_1 = rows_by_dot<dot_float<GgmlType::q5_1>>,
    .rows_iq4_nl = rows_by_dot<dot_float<GgmlType::iq4_nl>>,
    .rows_q2_k = rows_by_dot<dot_float<GgmlType::q2_k>>,
    .rows_q3_k = rows_by_dot<dot_float<GgmlType::q3_k>>,
    .rows_q5_k = rows_by_dot<dot_float<GgmlType::q5_k>>,
    .rows_iq4_xs = rows_by_dot<dot_float<GgmlType::iq4_xs>>,
    .f16_to_f32 = f16_to_f32,
    .f32_to_f16 = f32_to_f16,
    .scores_f32 = scores_rows<float, load_f32>,
    .scores_f16 = scores_rows<uint16_t, load_f16>,
    .accumulate_f32 = accumulate_rows<float, load_f32>,
    .accumulate_f16 = accumulate_rows<uint16_t, load_f16>,
    .softmax = softmax,
};

const KernelSet kScalar = {
    .name = "scalar",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .dot_q4_k = dot_q4_k,
    .dot_q6_k = dot_q6_k,
    .dot_q4_1 = dot_affine<BlockQ4_1>,
    .dot_q5_0 = dot_q5_0,
    .dot_q5_1 = dot_affine<BlockQ5_1>,
    .dot_iq4_nl = dot_iq4_nl,
    .dot_q2_k = dot_q2_k,
    .dot_q3_k = dot_q3_k,
    .dot_q5_k = dot_q5_k,
    .dot_iq4_xs = dot_iq4_xs,
    .quantize_q8_0 = quantize_q8_0,
    .quantize_q8_k = quantize_q8_k,
    .rows_f32 = rows_by_dot<dot_f32>,
    .rows_f16 = rows_by_dot<dot_f16>,
    .rows_bf16 = rows_by_dot<dot_bf16>,
    .rows_q8_0 = rows_by_dot<dot_q8_0>,
    .rows_q4_0 = rows_by_dot<dot_q4_0>,
    .rows_q4_k = rows_by_dot<dot_q4_k>,
    .rows_q6_k = rows_by_dot<dot_q6_k>,
    .rows_q4_1 = rows_by_dot<dot_affine<BlockQ4_1>>,
    .rows_q5_0 = rows_by_dot<dot_q5_0>,
    .rows_q5_1 = rows_by_dot<dot_affine<BlockQ5_1>>,
    .rows_iq4_nl = rows_by_dot<dot_iq4_nl>,
    .rows_q2_k = rows_by_dot<dot_q2_k>,
    .rows_q3_k = rows_by_dot<dot_q3_k>,
    .rows_q5_k = rows_by_dot<dot_q5_k>,
    .rows_iq4_xs = rows_by_dot<dot_iq4_xs>,
    .f16_to_f32 = f16_to_f32,
    .f32_to_f16 = f32_to_f16,
    .scores_f32 = scores_rows<float, load_f32>,
    .scores_f16 = scores_rows<uint16_t, load_f16>,
    .accumulate_f32 = accumulate_rows<float, load_f32>,
    .accumulate_f16 = accumulate_rows<uint16_t, load_f16>,
    .softmax = softmax,
};

}  // namespace

const KernelSet& scalar_kernels() {
  return kScalar;
}
const KernelSet& float_kernels() {
  return kFloat;
}

}  // namespace darkbloom::engine::kernels
