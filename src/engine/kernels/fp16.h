// Half-precision (IEEE binary16) and bfloat16 conversions in portable C++. SIMD kernels use the
// hardware instructions instead; these are the reference and the scalar path.
#pragma once

#include <cstdint>
#include <cstring>

namespace darkbloom::engine::kernels {

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  if (exponent == 0x1F) return bits_to_float(sign | 0x7F800000 | (mantissa << 13));  // inf, nan
  if (exponent != 0) return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return bits_to_float(sign);
  // Subnormal half: value = mantissa * 2^-24.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

// Round to nearest even; overflow goes to infinity, NaN stays NaN.
inline uint16_t fp32_to_fp16(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const uint32_t abs_bits = bits & 0x7FFFFFFF;
  if (abs_bits > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00);   // NaN
  if (abs_bits >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // rounds past 65504
  if (abs_bits < 0x38800000) {
    // Result is subnormal (or zero): scale to units of 2^-24 and round half to even.
    const float magnitude = bits_to_float(abs_bits);
    const float units = magnitude * 16777216.0f;  // exact: a power-of-two scale
    uint32_t q = static_cast<uint32_t>(units);
    const float remainder = units - static_cast<float>(q);
    if (remainder > 0.5f || (remainder == 0.5f && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t rounded = abs_bits + 0x0FFF + ((abs_bits >> 13) & 1);
  rounded -= 112u << 23;
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

inline float bf16_to_fp32(uint16_t b) {
  return bits_to_float(static_cast<uint32_t>(b) << 16);
}

inline uint16_t fp32_to_bf16(float f) {
  const uint32_t bits = float_to_bits(f);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

}  // namespace darkbloom::engine::kernels
