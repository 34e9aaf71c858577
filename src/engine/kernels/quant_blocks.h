// Byte layouts of the quantized blocks GGUF files store (facts of the ggml format), and of the
// activation blocks the integer dot products consume (our own, never written to files).
//
// The helpers are `static`: files compiled with AVX2 or AVX-512 enabled include this header too,
// and a shared (inline) copy compiled with those instructions could be the one the linker keeps
// for the portable code.
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

// Q4_1: value = d * nibble + m, nibbles placed as in Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 offset (the block's minimum)
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20);

// Q5_0: value = d * (q - 16) with q a 5-bit number: its low 4 bits are placed as Q4_0's nibbles,
// and its top bit for element i is bit i of qh (read as a little-endian 32-bit word).
struct BlockQ5_0 {
  uint16_t d;  // fp16 scale
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22);

// Q5_1: value = d * q + m, q as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 offset
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24);

// IQ4_NL: value = d * kIq4nlValues[nibble], nibbles placed as in Q4_0.
struct BlockIQ4_NL {
  uint16_t d;  // fp16 scale
  uint8_t qs[16];
};
static_assert(sizeof(BlockIQ4_NL) == 18);

// The 16 levels of IQ4_NL and IQ4_XS: a non-uniform grid denser near zero.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Q2_K: 16 groups of 16; value = d * (scales[g] & 15) * q - dmin * (scales[g] >> 4), q 2 bits.
// Element e (h = e / 128, j = e % 128 / 32, r = e % 32) is bits 2j..2j+1 of qs[32h + r]; its
// group is e / 16.
struct BlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;     // fp16 super-scale of the scales
  uint16_t dmin;  // fp16 super-scale of the mins
};
static_assert(sizeof(BlockQ2_K) == 84);

// Q3_K: 16 groups of 16; value = d * (scale[g] - 32) * (q - 4), q = 2 low bits + 4 * high bit.
// The low bits are placed as Q2_K's; the high bit of element e is bit (4h + j) of hmask[r]. The
// 16 six-bit scales are packed in 12 bytes (see unpack_q3_k_scales).
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ3_K) == 110);

// Q5_K: Q4_K with a fifth bit: value = d * scale[j] * q - dmin * min[j], q = nibble + 16 * bit,
// nibbles placed as Q4_K's, and the high bit of element e is bit e / 32 of qh[e % 32].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // as Q4_K's
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_K) == 176);

// IQ4_XS: 8 sub-blocks of 32; value = d * (ls[j] - 32) * kIq4nlValues[nibble], with ls[j] six bits:
// low 4 from scales_l[j / 2] (low nibble for even j), high 2 from bits 2j..2j+1 of scales_h.
// Sub-block j's nibbles are qs[16j .. 16j + 15], placed as Q4_0's.
struct BlockIQ4_XS {
  uint16_t d;  // fp16
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(BlockIQ4_XS) == 136);

// Activation block for Q8_0 weights: 32 values, float scale.
struct ActQ8_0 {
  float d;
  int8_t qs[32];
};
static_assert(sizeof(ActQ8_0) == 36);

// Activation block for the other 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL): an ActQ8_0
// with the sum of its quants, which meets the zero points and offsets of the weights once per
// block. Every set stores it this way.
struct ActQ8_1 {
  float d;
  int32_t sum;
  int8_t qs[32];
};
static_assert(sizeof(ActQ8_1) == 40);

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
static inline void unpack_q4_k_scales(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scales[j] = static_cast<uint8_t>((packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4));
    mins[j] = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

static inline void pack_q4_k_scales(const uint8_t* scales, const uint8_t* mins, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>((scales[j] & 63) | ((scales[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>((mins[j] & 63) | ((mins[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((mins[j + 4] & 0x0F) << 4));
  }
}

// Unpacks the 16 six-bit scales of a Q3_K block (stored plus 32). Scale i has its low 4 bits in
// the low nibble of byte i (i < 8) or the high nibble of byte i - 8, and its top 2 bits at bits
// 2 * (i / 4) of byte 8 + i % 4.
static inline void unpack_q3_k_scales(const uint8_t* packed, uint8_t* scales) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? packed[i] & 0x0F : packed[i - 8] >> 4;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = static_cast<uint8_t>(low | (high << 4));
  }
}

static inline void pack_q3_k_scales(const uint8_t* scales, uint8_t* packed) {
  for (int i = 0; i < 12; ++i) packed[i] = 0;
  for (int i = 0; i < 16; ++i) {
    packed[i % 8] = static_cast<uint8_t>(packed[i % 8] | ((scales[i] & 0x0F) << (i < 8 ? 0 : 4)));
    packed[8 + i % 4] = static_cast<uint8_t>(packed[8 + i % 4] | ((scales[i] >> 4) << (2 * (i / 4))));
  }
}

static inline int iq4_xs_scale(const BlockIQ4_XS& block, int j) {
  const int low = (block.scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
  const int high = (block.scales_h >> (2 * j)) & 3;
  return (low | (high << 4)) - 32;
}

// The fifth bits of a 32-element block (Q5_0, Q5_1), or nullptr for a 4-bit one (Q4_1).
template <class Block>
static auto fifth_bits(Block& block) -> decltype(&block.qs[0]) {
  if constexpr (requires { block.qh; }) {
    return block.qh;
  } else {
    return nullptr;
  }
}

// The 32 quants of a Q4_0-placed block (Q4_1, IQ4_NL indices), plus 16 * the fifth bit from the
// little-endian word qh when there is one (Q5_0, Q5_1).
static inline void unpack_32_quants(const uint8_t* qs, const uint8_t* qh, int8_t* q) {
  uint32_t high = 0;
  if (qh != nullptr) high = qh[0] | (qh[1] << 8) | (qh[2] << 16) | (static_cast<uint32_t>(qh[3]) << 24);
  for (int i = 0; i < 16; ++i) {
    q[i] = static_cast<int8_t>((qs[i] & 0x0F) | (((high >> i) & 1) << 4));
    q[i + 16] = static_cast<int8_t>((qs[i] >> 4) | (((high >> (i + 16)) & 1) << 4));
  }
}

// The 256 two-bit quants of a Q2_K block, 0..3. (The loops run 32 bytes at a time, which
// compilers vectorise; these unpackers are the portable kernels' inner loop.)
static inline void unpack_q2_k_quants(const BlockQ2_K& block, int8_t* q) {
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      const uint8_t* in = block.qs + 32 * h;
      int8_t* out = q + 128 * h + 32 * j;
      for (int r = 0; r < 32; ++r) out[r] = static_cast<int8_t>((in[r] >> (2 * j)) & 3);
    }
  }
}

// The 256 quants of a Q3_K block, -4..3.
static inline void unpack_q3_k_quants(const BlockQ3_K& block, int8_t* q) {
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      const uint8_t* in = block.qs + 32 * h;
      int8_t* out = q + 128 * h + 32 * j;
      const int bit = 4 * h + j;
      for (int r = 0; r < 32; ++r) {
        out[r] = static_cast<int8_t>(((in[r] >> (2 * j)) & 3) + 4 * ((block.hmask[r] >> bit) & 1) - 4);
      }
    }
  }
}

// The 256 quants of a Q5_K block, 0..31.
static inline void unpack_q5_k_quants(const BlockQ5_K& block, int8_t* q) {
  for (int j = 0; j < 8; ++j) {
    const uint8_t* in = block.qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    int8_t* out = q + 32 * j;
    for (int r = 0; r < 32; ++r)
      out[r] = static_cast<int8_t>(((in[r] >> shift) & 0x0F) | (((block.qh[r] >> j) & 1) << 4));
  }
}

}  // namespace darkbloom::engine::kernels
