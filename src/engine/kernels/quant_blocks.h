// Byte layouts of the quantized blocks GGUF files store (facts of the ggml format), and of the
// activation blocks the integer dot products consume (our own, never written to files).
#pragma once

#include <cstdint>

namespace darkbloom::engine::kernels {

inline constexpr int kQ8_0BlockSize = 32;
inline constexpr int kQ4_0BlockSize = 32;
inline constexpr int kSuperBlockSize = 256;  // the "K" quants

// Q8_0: value = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q4_0: value = d * (nibble - 8). Byte i holds element i in its low nibble and element i + 16 in
// its high nibble.
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Q4_K: 8 sub-blocks of 32; value = d * scale[j] * nibble - dmin * min[j]. The 6-bit scales and
// mins are packed in 12 bytes (see unpack_q4_k_scales). Bytes qs[32c .. 32c + 31] hold sub-block
// 2c in their low nibbles and sub-block 2c + 1 in their high nibbles.
struct BlockQ4_K {
  uint16_t d;     // fp16 super-scale of the scales
  uint16_t dmin;  // fp16 super-scale of the mins
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q6_K: 16 sub-blocks of 16; value = d * scales[e / 16] * (q - 32) with q a 6-bit number whose
// low 4 bits live in ql and high 2 bits in qh. In each 128-element half h, for l in [0, 32):
//   element l      : ql[64h + l] low nibble,       qh[32h + l] bits 0-1
//   element l + 32 : ql[64h + l + 32] low nibble,  qh[32h + l] bits 2-3
//   element l + 64 : ql[64h + l] high nibble,      qh[32h + l] bits 4-5
//   element l + 96 : ql[64h + l + 32] high nibble, qh[32h + l] bits 6-7
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ6_K) == 210);

// Activation block for Q8_0 and Q4_0 weights: 32 values, float scale.
struct ActQ8_0 {
  float d;
  int8_t qs[32];
};
static_assert(sizeof(ActQ8_0) == 36);

// Activation block for K-quant weights: 256 values, float scale, and the sum of each group of 16
// quants (what the Q4_K mins and the Q6_K offset of 32 are multiplied with).
struct ActQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(ActQ8_K) == 292);

// Unpacks the 8 six-bit scales and mins of a Q4_K block. Bytes 0-3 hold scales 0-3 (low 6 bits),
// bytes 4-7 mins 0-3 (low 6 bits); bytes 8-11 hold the low 4 bits of scales 4-7 (low nibble) and
// mins 4-7 (high nibble), whose top 2 bits are the top bits of bytes 0-3 and 4-7 respectively.
inline void unpack_q4_k_scales(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scales[j] = static_cast<uint8_t>((packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4));
    mins[j] = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

inline void pack_q4_k_scales(const uint8_t* scales, const uint8_t* mins, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>((scales[j] & 63) | ((scales[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>((mins[j] & 63) | ((mins[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((mins[j + 4] & 0x0F) << 4));
  }
}

}  // namespace darkbloom::engine::kernels
