// The compute primitives of the engine for one instruction set: dot products of a stored weight
// row with a prepared activation row, and activation quantization. Every set produces the same
// numbers up to float summation order; the scalar set is the portable reference.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/gguf/ggml_type.h"
#include "engine/kernels/quantize.h"

namespace darkbloom::engine::kernels {

// Dot product of one weight row of `n` elements with an activation row in the weight type's
// ActivationFormat.
using VecDotFn = float (*)(int64_t n, const void* weight_row, const void* activation);
using QuantizeActivationFn = void (*)(const float* src, void* dst, int64_t n);
// Dot products of one weight row with `count` activation rows `stride` bytes apart (count in
// [1, kMaxDotRows]), into out[0..count). Each result is bit for bit what VecDotFn gives for that
// activation row alone: a request's numbers never depend on what it is batched with.
using DotRowsFn = void (*)(int64_t n, const void* weight_row, const void* activations, size_t stride, int count,
                           float* out);
inline constexpr int kMaxDotRows = 4;
using F16ToF32Fn = void (*)(const uint16_t* src, float* dst, int64_t n);
// Attention over `n` cache rows (f32 or f16 elements), `stride` elements apart, head_dim wide,
// for `n_q` query heads that share them (grouped-query attention):
//   scores: scores[g * scores_stride + p] = scale * <q + g * head_dim, row p>
//   accumulate: out + g * head_dim += sum over p of weights[g * weights_stride + p] * row p
using KvScoresFn = void (*)(const void* rows, size_t stride, int n, const float* q, int n_q, int head_dim, float scale,
                            float* scores, size_t scores_stride);
using KvAccumulateFn = void (*)(const void* rows, size_t stride, int n, const float* weights, size_t weights_stride,
                                int n_q, int head_dim, float* out);
using F32ToF16Fn = void (*)(const float* src, uint16_t* dst, int64_t n);
// Softmax in place over x[0..n), n >= 1: x[i] = exp(x[i] - max) / (sum over j of exp(x[j] - max)),
// the division done as one multiplication by the sum's reciprocal.
using SoftmaxFn = void (*)(float* x, int64_t n);
// Some sets also read weights repacked into their own layout: kPackRows rows of `n` elements
// interleaved into one group of the same total size (rows `row_bytes` apart in, contiguous out),
// so that one instruction works on all of the group's rows at once.
inline constexpr int kPackRows = 8;
using PackRowsFn = void (*)(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group);
// The kPackRows rows of a packed group against `count` activation rows (count in
// [1, kMaxPackedDotRows]), into out[t * kPackRows + i]. As with DotRowsFn, each activation row's
// results are bit for bit what a call with that row alone gives.
inline constexpr int kMaxPackedDotRows = 8;
using PackedDotFn = void (*)(int64_t n, const void* group, const void* activations, size_t stride, int count,
                             float* out);

struct KernelSet {
  std::string_view name;  // "scalar", "avx2", "avx512", "float"
  VecDotFn dot_f32 = nullptr;
  VecDotFn dot_f16 = nullptr;
  VecDotFn dot_bf16 = nullptr;
  VecDotFn dot_q8_0 = nullptr;
  VecDotFn dot_q4_0 = nullptr;
  VecDotFn dot_q4_k = nullptr;
  VecDotFn dot_q6_k = nullptr;
  // The types below: an integer set may leave them out (nullptr), and then the scalar set's kernels
  // serve, since their activation formats (q8_1, q8_k) are the same bytes in every set. The float
  // set must have them all.
  VecDotFn dot_q4_1 = nullptr;
  VecDotFn dot_q5_0 = nullptr;
  VecDotFn dot_q5_1 = nullptr;
  VecDotFn dot_iq4_nl = nullptr;
  VecDotFn dot_q2_k = nullptr;
  VecDotFn dot_q3_k = nullptr;
  VecDotFn dot_q5_k = nullptr;
  VecDotFn dot_iq4_xs = nullptr;
  QuantizeActivationFn quantize_q8_0 = nullptr;
  QuantizeActivationFn quantize_q8_k = nullptr;
  QuantizeActivationFn quantize_q8_1 = nullptr;  // nullptr: the portable quantizer (same bytes)
  // The "float" set keeps activations in f32 and dequantizes weights instead: slow, but free of
  // activation rounding, so it checks the weight formats and the forward pass exactly.
  bool float_activations = false;
  DotRowsFn rows_f32 = nullptr;
  DotRowsFn rows_f16 = nullptr;
  DotRowsFn rows_bf16 = nullptr;
  DotRowsFn rows_q8_0 = nullptr;
  DotRowsFn rows_q4_0 = nullptr;
  DotRowsFn rows_q4_k = nullptr;
  DotRowsFn rows_q6_k = nullptr;
  DotRowsFn rows_q4_1 = nullptr;
  DotRowsFn rows_q5_0 = nullptr;
  DotRowsFn rows_q5_1 = nullptr;
  DotRowsFn rows_iq4_nl = nullptr;
  DotRowsFn rows_q2_k = nullptr;
  DotRowsFn rows_q3_k = nullptr;
  DotRowsFn rows_q5_k = nullptr;
  DotRowsFn rows_iq4_xs = nullptr;
  // The KV cache's F16 rows.
  F16ToF32Fn f16_to_f32 = nullptr;
  F32ToF16Fn f32_to_f16 = nullptr;
  KvScoresFn scores_f32 = nullptr;
  KvScoresFn scores_f16 = nullptr;
  KvAccumulateFn accumulate_f32 = nullptr;
  KvAccumulateFn accumulate_f16 = nullptr;
  SoftmaxFn softmax = nullptr;
  // Packed layouts (nullptr when the set has none for a type; the avx512 set has them for every
  // quantized type but Q2_K and Q3_K).
  PackRowsFn pack_q8_0 = nullptr;
  PackRowsFn pack_q4_0 = nullptr;
  PackRowsFn pack_q5_0 = nullptr;
  PackRowsFn pack_q4_1 = nullptr;
  PackRowsFn pack_q5_1 = nullptr;
  PackRowsFn pack_iq4_nl = nullptr;
  PackRowsFn pack_q4_k = nullptr;
  PackRowsFn pack_q5_k = nullptr;
  PackRowsFn pack_q6_k = nullptr;
  PackRowsFn pack_iq4_xs = nullptr;
  PackedDotFn packed_q8_0 = nullptr;
  PackedDotFn packed_q4_0 = nullptr;
  PackedDotFn packed_q5_0 = nullptr;
  PackedDotFn packed_q4_1 = nullptr;
  PackedDotFn packed_q5_1 = nullptr;
  PackedDotFn packed_iq4_nl = nullptr;
  PackedDotFn packed_q4_k = nullptr;
  PackedDotFn packed_q5_k = nullptr;
  PackedDotFn packed_q6_k = nullptr;
  PackedDotFn packed_iq4_xs = nullptr;

  VecDotFn dot_for(GgmlType weight_type) const;
  DotRowsFn rows_for(GgmlType weight_type) const;
  PackRowsFn pack_for(GgmlType weight_type) const;
  PackedDotFn packed_for(GgmlType weight_type) const;
  ActivationFormat activation_format_for(GgmlType weight_type) const {
    return float_activations ? ActivationFormat::f32 : activation_format(weight_type);
  }
  void quantize_activation(ActivationFormat format, const float* src, void* dst, int64_t n) const;
};

const KernelSet& scalar_kernels();
const KernelSet& float_kernels();
// nullptr when this build or this CPU lacks the instructions.
const KernelSet* avx2_kernels();
// AVX2 plus AVX-512 F/BW/VL/VNNI (the integer dot products); nullptr when absent.
const KernelSet* avx512_kernels();

// The fastest set this CPU runs.
const KernelSet& best_kernels();
// "auto", "scalar", "avx2", "avx512" or "float"; nullptr if unknown or not runnable here.
const KernelSet* kernels_by_name(std::string_view name);
// Names of the sets this CPU can run, fastest last.
std::vector<std::string_view> available_kernel_names();

}  // namespace darkbloom::engine::kernels
