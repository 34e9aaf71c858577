// ggml tensor element types as GGUF files number them, with the block geometry of each one.
// Only the types the engine computes with are "supported"; the rest are known by name so an error
// can say what a file contains.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace darkbloom::engine {

enum class GgmlType : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
};

struct GgmlTypeInfo {
  std::string_view name;    // "q4_k", as llama.cpp prints it
  uint32_t block_elements;  // elements per block
  uint32_t block_bytes;     // bytes per block
};

// Geometry of a type this build knows; nullopt for an unknown number.
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type);
std::string_view ggml_type_name(GgmlType type);
// Types the engine can compute with (dequantize and dot): F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS.
bool ggml_type_supported(GgmlType type);
// "f32, f16, bf16, q8_0, ...": the supported types, for messages.
std::string supported_ggml_type_names();
// Parses "q4_k" / "Q4_K" / "f16"...; nullopt if unknown.
std::optional<GgmlType> ggml_type_from_name(std::string_view name);

// Bytes of one row of `elements` values; 0 if `elements` is not a whole number of blocks.
size_t ggml_row_bytes(GgmlType type, uint64_t elements);

}  // namespace darkbloom::engine
