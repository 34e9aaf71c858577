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

struct KernelSet {
  std::string_view name;  // "scalar", "avx2", "float"
  VecDotFn dot_f32 = nullptr;
  VecDotFn dot_f16 = nullptr;
  VecDotFn dot_bf16 = nullptr;
  VecDotFn dot_q8_0 = nullptr;
  VecDotFn dot_q4_0 = nullptr;
  VecDotFn dot_q4_k = nullptr;
  VecDotFn dot_q6_k = nullptr;
  QuantizeActivationFn quantize_q8_0 = nullptr;
  QuantizeActivationFn quantize_q8_k = nullptr;
  // The "float" set keeps activations in f32 and dequantizes weights instead: slow, but free of
  // activation rounding, so it checks the weight formats and the forward pass exactly.
  bool float_activations = false;

  VecDotFn dot_for(GgmlType weight_type) const;
  ActivationFormat activation_format_for(GgmlType weight_type) const {
    return float_activations ? ActivationFormat::f32 : activation_format(weight_type);
  }
  void quantize_activation(ActivationFormat format, const float* src, void* dst, int64_t n) const;
};

const KernelSet& scalar_kernels();
const KernelSet& float_kernels();
// nullptr when this build or this CPU lacks the instructions.
const KernelSet* avx2_kernels();

// The fastest set this CPU runs.
const KernelSet& best_kernels();
// "auto", "scalar", "avx2" or "float"; nullptr if unknown or not runnable here.
const KernelSet* kernels_by_name(std::string_view name);
// Names of the sets this CPU can run, fastest last.
std::vector<std::string_view> available_kernel_names();

}  // namespace darkbloom::engine::kernels
