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
  q8_0,  // Q8_0 weights: ActQ8_0 blocks of 32 (a kernel set may lay them out its own way)
  q8_1,  // Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL weights: ActQ8_1 blocks of 32, the same in every set
         // (our own 40-byte block, not GGUF's q8_1 type): the sum lets the zero points of Q4_0 and
         // Q5_0 and the offsets of Q4_1 and Q5_1 be applied once per activation block
  q8_k,  // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS weights: ActQ8_K blocks of 256
};

ActivationFormat activation_format(GgmlType weight_type);
size_t activation_row_bytes(ActivationFormat format, int64_t n);
// Portable quantization of an activation row; the SIMD kernel sets carry their own versions that
// must produce identical bytes.
void quantize_activation_row(ActivationFormat format, const float* src, void* dst, int64_t n);

}  // namespace darkbloom::engine::kernels
