// Integer dot products of the weight types with per-block offsets, fifth bits, lookup grids or
// super-blocks: Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL against q8_1 activations; Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K and IQ4_XS against q8_k. Shared by the AVX2 and the AVX-512 sets: each includes this file
// and compiles it with its own instructions, and where AVX-512 VNNI is enabled the multiply-adds
// are single VPDPBUSD/VPDPWSSD instructions instead of their AVX2 pairs. The integer sums are the
// same either way, so both sets give the same numbers.
//
// Every kernel runs one weight row against T activation rows (T in [1, kMaxDotRows]): a weight
// block is loaded and unpacked once, then each activation row gets exactly the operations a
// single-row call gives it, so results never depend on the batch. Per-block float work is kept in
// vector accumulators and reduced once per row, not once per block.
//
// Include only from files compiled with AVX2/FMA/F16C enabled. Everything here sits in an
// anonymous namespace: each including file gets its own copy, so the linker can never hand the
// AVX-512 file's code to the AVX2 set.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/x86_blocks.h"

namespace darkbloom::engine::kernels::x86 {
namespace {  // one copy per instruction set, see above

// acc + eight lanes, each the sum of four products of unsigned bytes u with signed bytes s. With
// AVX2 the products are first added in pairs as 16-bit numbers: every caller keeps u * s pairs
// below 2^15 (u at most 63, or |u| and |s| at most 127).
inline __m256i dot_u8_s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// acc + eight lanes: the pairwise sums of u * s as 16-bit numbers, times the 16-bit scales, added in
// pairs (bounds as above; a scale is at most 63 in magnitude).
inline __m256i scaled_dot_u8_s8(__m256i acc, __m256i u, __m256i s, __m256i scales16) {
  const __m256i pairs = _mm256_maddubs_epi16(u, s);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpwssd_epi32(acc, pairs, scales16);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scales16));
#endif
}

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// The 32 nibbles of a block placed as Q4_0's (byte i: element i low, element i + 16 high), in
// element order.
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

// 16 in byte i where bit i of the little-endian word at qh is set, else 0.
inline __m256i fifth_bit_16s(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof bits);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  return _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(16));
#else
  // Byte i gets byte i / 8 of the word, then keeps bit i % 8.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(16));
#endif
}

// Bit `bit` (0..7) of each of 32 bytes, as 0 or 1.
inline __m256i bit_of_bytes(__m256i bytes, int bit) {
  return _mm256_and_si256(_mm256_srl_epi16(bytes, _mm_cvtsi32_si128(bit)), _mm256_set1_epi8(1));
}

// The IQ4 grid values of 32 indices (0..15).
inline __m256i iq4_values(__m256i indices) {
  const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
  return _mm256_shuffle_epi8(grid, indices);
}

// Two groups of 16 in one register: scales[g] on the lower 16 bytes, scales[g + 1] on the upper.
inline __m256i pair_scales(const int16_t* scales, int g) {
  return _mm256_set_m128i(_mm_set1_epi16(scales[g + 1]), _mm_set1_epi16(scales[g]));
}

template <class Block>
inline const Block* act_block(const uint8_t* a, size_t stride, int t, int64_t b) {
  return reinterpret_cast<const Block*>(a + stride * static_cast<size_t>(t)) + b;
}

// Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL against q8_1 activations. Per block:
//   Q4_1, Q5_1: d_a * (d * <q, a> + m * sum(a)), q unsigned;
//   Q4_0, Q5_0: d_a * d * (<q, a> - z * sum(a)) with z = 8 or 16: the weights stay unsigned and the
//               zero point is taken off once per activation block, in the integer sum, exactly;
//   IQ4_NL:     d_a * d * <grid[q], a>, the signed grid values through |v| and sign(a, v).
template <class Block>
struct Rows32 {
  static constexpr bool kFifthBit = requires(Block b) { b.qh; };
  static constexpr bool kOffset = requires(Block b) { b.m; };
  static constexpr bool kGrid = std::is_same_v<Block, BlockIQ4_NL>;
  static constexpr int kZero = std::is_same_v<Block, BlockQ4_0> ? 8 : std::is_same_v<Block, BlockQ5_0> ? 16 : 0;

  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const Block*>(w);
    __m256 acc[T];
    float offsets[T] = {};
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; ++b) {
      __m256i q = nibbles_32(x[b].qs);
      if constexpr (kFifthBit) q = _mm256_or_si256(q, fifth_bit_16s(x[b].qh));
      __m256i values = q;
      if constexpr (kGrid) {
        values = iq4_values(q);
        q = _mm256_sign_epi8(values, values);
      }
      const float dx = _cvtsh_ss(x[b].d);
      for (int t = 0; t < T; ++t) {
        const ActQ8_1* y = act_block<ActQ8_1>(a, stride, t, b);
        __m256i s = load256(y->qs);
        if constexpr (kGrid) s = _mm256_sign_epi8(s, values);
        const __m256i start = _mm256_setr_epi32(-kZero * y->sum, 0, 0, 0, 0, 0, 0, 0);
        const __m256i sums = dot_u8_s8(start, q, s);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y->d), _mm256_cvtepi32_ps(sums), acc[t]);
        if constexpr (kOffset) offsets[t] += _cvtsh_ss(x[b].m) * y->d * static_cast<float>(y->sum);
      }
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]) + offsets[t];
  }
};

// The eight six-bit scales and mins of a Q4_K/Q5_K block (see unpack_q4_k_scales), four at a
// time in 32-bit words: scales as 16-bit numbers, and the mins as 16 16-bit lanes with min j in
// lanes 2j and 2j + 1.
inline void q4_k_scales_and_mins(const uint8_t* packed, int16_t* scales16, __m256i& mins16) {
  uint32_t w[3];
  std::memcpy(w, packed, sizeof w);
  const uint32_t scales_low = w[0] & 0x3F3F3F3F, mins_low = w[1] & 0x3F3F3F3F;
  const uint32_t scales_high = (w[2] & 0x0F0F0F0F) | ((w[0] >> 2) & 0x30303030);
  const uint32_t mins_high = ((w[2] >> 4) & 0x0F0F0F0F) | ((w[1] >> 2) & 0x30303030);
  const __m128i scales8 = _mm_setr_epi32(static_cast<int>(scales_low), static_cast<int>(scales_high), 0, 0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(scales16), _mm_cvtepu8_epi16(scales8));
  const __m128i mins8 = _mm_setr_epi32(static_cast<int>(mins_low), static_cast<int>(mins_high), 0, 0);
  mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins8, mins8));
}

// The end of super-block b for the types with mins (Q4_K, Q5_K, Q2_K): acc_q[t] += d * d_a *
// sum_q[t] and acc_m[t] += dmin * d_a * (the activations' group sums times mins16).
template <int T>
inline void add_block_with_mins(__m256 acc_q[T], __m256 acc_m[T], const __m256i sum_q[T], const uint8_t* a,
                                size_t stride, int64_t b, float d, float dmin, __m256i mins16) {
  for (int t = 0; t < T; ++t) {
    const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
    const __m256i sum_mins = _mm256_madd_epi16(load256(y->bsums), mins16);
    acc_q[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y->d), _mm256_cvtepi32_ps(sum_q[t]), acc_q[t]);
    acc_m[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * y->d), _mm256_cvtepi32_ps(sum_mins), acc_m[t]);
  }
}

// Q4_K and Q5_K: d_a * (d * sum_j scale_j <q_j, a_j> - dmin * sum_j min_j sum(a_j)) over the
// eight sub-blocks of 32. The mins meet the activation group sums in one 16-bit multiply-add.
template <class Block>
struct RowsQ4KLike {
  static constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5_K>;

  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const Block*>(w);
    const __m256i low_mask = _mm256_set1_epi8(0x0F);
    __m256 acc_q[T], acc_m[T];
    for (int t = 0; t < T; ++t) acc_q[t] = acc_m[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; ++b) {
      int16_t scales16[8];
      __m256i mins16;  // mins[j] twice, against group sums 2j and 2j + 1
      q4_k_scales_and_mins(x[b].scales, scales16, mins16);
      __m256i qh = _mm256_setzero_si256();
      if constexpr (kFifthBit) qh = load256(x[b].qh);
      __m256i sum_q[T];
      for (int t = 0; t < T; ++t) sum_q[t] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i packed = load256(x[b].qs + 32 * c);
        __m256i lo = _mm256_and_si256(packed, low_mask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
        if constexpr (kFifthBit) {
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(bit_of_bytes(qh, 2 * c), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(bit_of_bytes(qh, 2 * c + 1), 4));
        }
        const __m256i scale_lo = _mm256_set1_epi16(scales16[2 * c]);
        const __m256i scale_hi = _mm256_set1_epi16(scales16[2 * c + 1]);
        for (int t = 0; t < T; ++t) {
          const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
          sum_q[t] = scaled_dot_u8_s8(sum_q[t], lo, load256(y->qs + 64 * c), scale_lo);
          sum_q[t] = scaled_dot_u8_s8(sum_q[t], hi, load256(y->qs + 64 * c + 32), scale_hi);
        }
      }
      add_block_with_mins<T>(acc_q, acc_m, sum_q, a, stride, b, _cvtsh_ss(x[b].d), _cvtsh_ss(x[b].dmin), mins16);
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc_q[t]) - horizontal_sum(acc_m[t]);
  }
};

// The Q6_K quants (0..63) that 32 bytes of ql at l, 32 more at l + 32 and 32 of qh give: elements
// l, l + 32, l + 64 and l + 96 of a half (see BlockQ6_K), in q[0..3].
inline void q6_k_quants(__m256i ql0, __m256i ql1, __m256i qh, __m256i q[4]) {
  const __m256i low_mask = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(3);
  const __m256i nibbles[4] = {_mm256_and_si256(ql0, low_mask), _mm256_and_si256(ql1, low_mask),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask)};
  for (int i = 0; i < 4; ++i) {
    const __m256i high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * i)), two_bits);
    q[i] = _mm256_or_si256(nibbles[i], _mm256_slli_epi16(high, 4));
  }
}

// The end of super-block b for the types whose zero point meets the group scales (Q6_K: 32,
// shift 5; Q3_K: 4, shift 2): acc[t] += d * d_a * (sum_q[t] - (sum_g scales_g * group sum g) <<
// shift), the subtraction exact in integers.
template <int T>
inline void add_block(__m256 acc[T], const __m256i sum_q[T], const uint8_t* a, size_t stride, int64_t b, float d,
                      const int16_t* scales16, int shift) {
  const __m256i scales = load256(scales16);
  for (int t = 0; t < T; ++t) {
    const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
    const __m256i offset = _mm256_madd_epi16(load256(y->bsums), scales);
    const __m256i sums = _mm256_sub_epi32(sum_q[t], _mm256_sll_epi32(offset, _mm_cvtsi32_si128(shift)));
    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y->d), _mm256_cvtepi32_ps(sums), acc[t]);
  }
}

// Q6_K: d_a * d * sum_g scale_g (<q_g, a_g> - 32 sum(a_g)) over 16 groups of 16, q the stored
// 6-bit number (0..63); the offset of 32 is taken off the integer sum exactly.
struct RowsQ6K {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ6_K*>(w);
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; ++b) {
      int16_t scales16[16];
      // NOLINTNEXTLINE(bugprone-signed-char-misuse): Q6_K's scales are signed numbers
      for (int g = 0; g < 16; ++g) scales16[g] = static_cast<int16_t>(x[b].scales[g]);
      __m256i sum_q[T];
      for (int t = 0; t < T; ++t) sum_q[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load256(x[b].ql + 64 * h);
        const __m256i ql1 = load256(x[b].ql + 64 * h + 32);
        const __m256i qh = load256(x[b].qh + 32 * h);
        __m256i q[4];
        q6_k_quants(ql0, ql1, qh, q);
        for (int g = 0; g < 4; ++g) {
          const __m256i scale = pair_scales(scales16, 8 * h + 2 * g);
          for (int t = 0; t < T; ++t) {
            const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
            sum_q[t] = scaled_dot_u8_s8(sum_q[t], q[g], load256(y->qs + 128 * h + 32 * g), scale);
          }
        }
      }
      add_block<T>(acc, sum_q, a, stride, b, _cvtsh_ss(x[b].d), scales16, 5);
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]);
  }
};

// The integer sums of Q2_K and Q3_K: for each of the 16 groups of 16, the scaled dot product of
// its quants with the activations. Quants are the two-bit fields j of the 32 bytes at
// qs + 32h (elements 128h + 32j + l), passed through quants(fields, h, j) (Q3_K adds its high
// bit there).
template <int T, class Quants>
inline void two_bit_group_sums(const uint8_t* qs, const int16_t* scales16, const uint8_t* a, size_t stride, int64_t b,
                               const Quants& quants, __m256i sum_q[T]) {
  for (int t = 0; t < T; ++t) sum_q[t] = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {
    const __m256i packed = load256(qs + 32 * h);
    for (int j = 0; j < 4; ++j) {
      const __m256i fields = _mm256_and_si256(_mm256_srl_epi16(packed, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(3));
      const __m256i q = quants(fields, h, j);
      const __m256i scale = pair_scales(scales16, 8 * h + 2 * j);
      for (int t = 0; t < T; ++t) {
        const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
        sum_q[t] = scaled_dot_u8_s8(sum_q[t], q, load256(y->qs + 128 * h + 32 * j), scale);
      }
    }
  }
}

// Q2_K: d_a * (d * sum_g (scales_g & 15) <q_g, a_g> - dmin * sum_g (scales_g >> 4) sum(a_g)),
// q two bits.
struct RowsQ2K {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ2_K*>(w);
    __m256 acc_q[T], acc_m[T];
    for (int t = 0; t < T; ++t) acc_q[t] = acc_m[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; ++b) {
      int16_t scales16[16];
      for (int g = 0; g < 16; ++g) scales16[g] = static_cast<int16_t>(x[b].scales[g] & 0x0F);
      const __m256i mins16 =
          _mm256_srli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].scales))), 4);
      __m256i sum_q[T];
      two_bit_group_sums<T>(
          x[b].qs, scales16, a, stride, b, [](__m256i fields, int, int) { return fields; }, sum_q);
      add_block_with_mins<T>(acc_q, acc_m, sum_q, a, stride, b, _cvtsh_ss(x[b].d), _cvtsh_ss(x[b].dmin), mins16);
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc_q[t]) - horizontal_sum(acc_m[t]);
  }
};

// Q3_K: d_a * d * sum_g s_g (<u_g, a_g> - 4 sum(a_g)), with u = low two bits + 4 * high bit
// (0..7) and s_g the six-bit scale minus 32; the offset of 4 is taken off the integer sum exactly.
struct RowsQ3K {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ3_K*>(w);
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; ++b) {
      uint8_t scales[16];
      unpack_q3_k_scales(x[b].scales, scales);
      int16_t scales16[16];
      for (int g = 0; g < 16; ++g) scales16[g] = static_cast<int16_t>(scales[g] - 32);
      const __m256i high_bits = load256(x[b].hmask);
      __m256i sum_q[T];
      auto with_high_bit = [high_bits](__m256i low, int h, int j) {
        return _mm256_or_si256(low, _mm256_slli_epi16(bit_of_bytes(high_bits, 4 * h + j), 2));
      };
      two_bit_group_sums<T>(x[b].qs, scales16, a, stride, b, with_high_bit, sum_q);
      add_block<T>(acc, sum_q, a, stride, b, _cvtsh_ss(x[b].d), scales16, 2);
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]);
  }
};

// IQ4_XS: d_a * d * sum_j (ls_j - 32) <grid[q_j], a_j> over eight sub-blocks of 32.
struct RowsIQ4XS {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockIQ4_XS*>(w);
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; ++b) {
      __m256i sum_q[T];
      for (int t = 0; t < T; ++t) sum_q[t] = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i values = iq4_values(nibbles_32(x[b].qs + 16 * j));
        const __m256i magnitudes = _mm256_sign_epi8(values, values);
        const __m256i scale = _mm256_set1_epi16(static_cast<int16_t>(iq4_xs_scale(x[b], j)));
        for (int t = 0; t < T; ++t) {
          const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
          const __m256i s = _mm256_sign_epi8(load256(y->qs + 32 * j), values);
          sum_q[t] = scaled_dot_u8_s8(sum_q[t], magnitudes, s, scale);
        }
      }
      const float d = _cvtsh_ss(x[b].d);
      for (int t = 0; t < T; ++t) {
        const ActQ8_K* y = act_block<ActQ8_K>(a, stride, t, b);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y->d), _mm256_cvtepi32_ps(sum_q[t]), acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]);
  }
};

// The scalar quantizer's q8_1 bytes: a Q8_0 block and the sum of its quants.
inline void quantize_q8_1(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<ActQ8_1*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, src += 32) {
    const __m256i quants = quantize_q8_0_block(src, &out[b].d);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), quants);
    // Sums of |q + 128 - 0| per 8 bytes, less 32 * 128.
    const __m256i biased = _mm256_sad_epu8(_mm256_xor_si256(quants, _mm256_set1_epi8(-128)), _mm256_setzero_si256());
    const __m128i halves = _mm_add_epi64(_mm256_castsi256_si128(biased), _mm256_extracti128_si256(biased, 1));
    out[b].sum =
        static_cast<int32_t>(_mm_cvtsi128_si64(_mm_add_epi64(halves, _mm_unpackhi_epi64(halves, halves)))) - 32 * 128;
  }
}

// A kernel's entry points: count in [1, kMaxDotRows] picks the instance; the single-row dot
// product is the T = 1 instance.
template <class Kernel>
void rows_of(int64_t n, const void* w, const void* a, size_t stride, int count, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(a);
  switch (count) {
    case 1:
      return Kernel::template run<1>(n, w, bytes, stride, out);
    case 2:
      return Kernel::template run<2>(n, w, bytes, stride, out);
    case 3:
      return Kernel::template run<3>(n, w, bytes, stride, out);
    default:
      return Kernel::template run<4>(n, w, bytes, stride, out);
  }
}

template <class Kernel>
float dot_of(int64_t n, const void* w, const void* a) {
  float out;
  Kernel::template run<1>(n, w, static_cast<const uint8_t*>(a), 0, &out);
  return out;
}

template <class Kernel>
void set_kernel(VecDotFn& dot, DotRowsFn& rows) {
  dot = dot_of<Kernel>;
  rows = rows_of<Kernel>;
}

// Puts this file's kernels into `set`.
inline void add_quant_dots(KernelSet& set) {
  set_kernel<Rows32<BlockQ4_0>>(set.dot_q4_0, set.rows_q4_0);
  set_kernel<Rows32<BlockQ4_1>>(set.dot_q4_1, set.rows_q4_1);
  set_kernel<Rows32<BlockQ5_0>>(set.dot_q5_0, set.rows_q5_0);
  set_kernel<Rows32<BlockQ5_1>>(set.dot_q5_1, set.rows_q5_1);
  set_kernel<Rows32<BlockIQ4_NL>>(set.dot_iq4_nl, set.rows_iq4_nl);
  set_kernel<RowsQ2K>(set.dot_q2_k, set.rows_q2_k);
  set_kernel<RowsQ3K>(set.dot_q3_k, set.rows_q3_k);
  set_kernel<RowsQ4KLike<BlockQ4_K>>(set.dot_q4_k, set.rows_q4_k);
  set_kernel<RowsQ4KLike<BlockQ5_K>>(set.dot_q5_k, set.rows_q5_k);
  set_kernel<RowsQ6K>(set.dot_q6_k, set.rows_q6_k);
  set_kernel<RowsIQ4XS>(set.dot_iq4_xs, set.rows_iq4_xs);
  set.quantize_q8_1 = quantize_q8_1;
}

}  // namespace
}  // namespace darkbloom::engine::kernels::x86
