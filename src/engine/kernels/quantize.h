// Conversion between float rows and the stored weight types (for `model synth`, embeddings and
// tests), and quantization of activations into the blocks the integer dot products take.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/gguf/ggml_type.h"

namespace darkbloom::engine::kernels {

// Writes `n` floats as `type` (one of the supported types; n a multiple of its block size).
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);
// Reads `n` values stored as `type` into floats.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// How the other operand of a dot product with a weight row of a given type is stored.
enum class ActivationFormat {
  f32,   // F32, F16 and BF16 weights multiply plain floats
  q8_0,  // Q8_0 and Q4_0 weights: ActQ8_0 blocks of 32
  q8_k,  // Q4_K and Q6_K weights: ActQ8_K blocks of 256
};

ActivationFormat activation_format(GgmlType weight_type);
size_t activation_row_bytes(ActivationFormat format, int64_t n);
// Portable quantization of an activation row; the SIMD kernel sets carry their own versions that
// must produce identical bytes.
void quantize_activation_row(ActivationFormat format, const float* src, void* dst, int64_t n);

}  // namespace darkbloom::engine::kernels
