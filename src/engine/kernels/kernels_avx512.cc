// AVX-512 VNNI kernels: one VPDPBUSD does what VPSIGNB + VPMADDUBSW + VPMADDWD do in the AVX2
// set. Here: Q8_0 rows with the per-block scaling done eight blocks at a time (256-bit registers,
// AVX512VL), packed groups of eight rows for every quantized type but Q2_K and Q3_K (512-bit
// registers), and this file's own copy of x86_quant_dots.h (the row kernels of
// the other types). The float and attention kernels are the AVX2 set's. This file alone is
// compiled with these instructions enabled; nothing here may run before kernel_set.cc has
// checked the CPU.
//
// Activations in this set (ActivationFormat::q8_0, same size as ActQ8_0 rows): each run of eight
// blocks is stored as a Q8Group (eight scales, then eight blocks of 32 quants), so the scales of
// a group load as one vector; the remaining (n / 32) % 8 blocks follow as ActQ8_0. Quants are
// stored plus 128 (as unsigned bytes) for VPDPBUSD.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/x86_blocks.h"
#include "engine/kernels/x86_quant_dots.h"

namespace darkbloom::engine::kernels {

const KernelSet* avx2_kernel_set_unchecked();

namespace {

constexpr int kGroupBlocks = 8;
constexpr size_t kPrefetchBytes = 4096;
// The unmasked forms of some 512-bit intrinsics start from _mm512_undefined_*, which GCC 12
// reports as maybe-uninitialized: the zero-masking forms with every lane set are the same
// instructions.
constexpr __mmask8 kAll8 = 0xFF;
constexpr __mmask16 kAll16 = 0xFFFF;
constexpr __mmask32 kAll32 = 0xFFFFFFFF;
constexpr __mmask64 kAll64 = ~__mmask64{0};
constexpr __mmask16 kEvenLanes = 0x5555;

struct Q8Group {
  float d[kGroupBlocks];
  uint8_t qs[kGroupBlocks][32];  // q + 128
};
static_assert(sizeof(Q8Group) == kGroupBlocks * sizeof(ActQ8_0));

using x86::horizontal_sum;
using x86::signed_quants;

// The scalar quantizer's numbers, quants stored + 128 (see SignedWeights); |q| <= 127, so q + 128
// fits a byte.
inline void quantize_block(const float* src, float* d, uint8_t* qs) {
  const __m256i quants = x86::quantize_q8_0_block(src, d);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), _mm256_xor_si256(quants, _mm256_set1_epi8(-128)));
}

void quantize_q8_0_grouped(const float* src, void* dst, int64_t n) {
  const int64_t blocks = n / 32, groups = blocks / kGroupBlocks;
  auto* group = static_cast<Q8Group*>(dst);
  for (int64_t g = 0; g < groups; ++g) {
    for (int j = 0; j < kGroupBlocks; ++j, src += 32) quantize_block(src, &group[g].d[j], group[g].qs[j]);
  }
  auto* tail = reinterpret_cast<ActQ8_0*>(group + groups);
  for (int64_t b = groups * kGroupBlocks; b < blocks; ++b, ++tail, src += 32) {
    quantize_block(src, &tail->d, reinterpret_cast<uint8_t*>(tail->qs));
  }
}

// VPDPBUSD multiplies unsigned by signed bytes, so activations are stored as q + 128 and each
// weight block carries the correction -128 * (sum of its bytes) per lane, computed once and used
// for every activation row: sum((q + 128) * x) - 128 * sum(x) = sum(q * x), exactly.
struct SignedWeights {
  __m256i x;
  __m256i correction;
  explicit SignedWeights(__m256i weights)
      : x(weights),
        correction(_mm256_sub_epi32(_mm256_setzero_si256(),
                                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), weights))) {}
  // 8 lanes, each the sum of 4 products.
  __m256i dot(__m256i biased_activations) const { return _mm256_dpbusd_epi32(correction, biased_activations, x); }
};

inline __m256i load_i8x32(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// The eight fp16 scales of a weight group, 34 or 18 bytes apart.
template <class Block>
inline __m256 group_scales(const Block* x) {
  const __m128i halves =
      _mm_setr_epi16(static_cast<int16_t>(x[0].d), static_cast<int16_t>(x[1].d), static_cast<int16_t>(x[2].d),
                     static_cast<int16_t>(x[3].d), static_cast<int16_t>(x[4].d), static_cast<int16_t>(x[5].d),
                     static_cast<int16_t>(x[6].d), static_cast<int16_t>(x[7].d));
  return _mm256_cvtph_ps(halves);
}

// One weight row against T activation rows. Per group of eight blocks each row's eight integer
// block sums are reduced into one vector (lane j = block j), converted once and scaled by the
// eight products of scales with one multiply-add. Each row gets the same operations whatever T
// is, so a result never depends on what it is batched with.
template <class Block, int T>
void rows_t(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
  const auto* x = static_cast<const Block*>(w);
  const int64_t blocks = n / 32, groups = blocks / kGroupBlocks;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const Block* xg = x + g * kGroupBlocks;
    __m256i quarter[2][T];  // blocks 0-3 and 4-7, pairwise reduced
    for (int half = 0; half < 2; ++half) {
      __m256i pair[2][T];
      for (int p = 0; p < 2; ++p) {
        const int j = 4 * half + 2 * p;
        const SignedWeights w0(signed_quants(xg[j])), w1(signed_quants(xg[j + 1]));
        for (int t = 0; t < T; ++t) {
          const auto* y = reinterpret_cast<const Q8Group*>(a + stride * static_cast<size_t>(t)) + g;
          pair[p][t] = _mm256_hadd_epi32(w0.dot(load_i8x32(y->qs[j])), w1.dot(load_i8x32(y->qs[j + 1])));
        }
      }
      for (int t = 0; t < T; ++t) quarter[half][t] = _mm256_hadd_epi32(pair[0][t], pair[1][t]);
    }
    const __m256 dx = group_scales(xg);
    for (int t = 0; t < T; ++t) {
      // Each 128-bit half of quarter[h] holds half of the lanes of blocks 4h..4h+3: add the halves.
      const __m256i low = _mm256_permute2x128_si256(quarter[0][t], quarter[1][t], 0x20);
      const __m256i high = _mm256_permute2x128_si256(quarter[0][t], quarter[1][t], 0x31);
      const __m256 sums = _mm256_cvtepi32_ps(_mm256_add_epi32(low, high));
      const auto* y = reinterpret_cast<const Q8Group*>(a + stride * static_cast<size_t>(t)) + g;
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dx, _mm256_loadu_ps(y->d)), sums, acc[t]);
    }
  }
  for (int64_t b = groups * kGroupBlocks; b < blocks; ++b) {
    const SignedWeights wb(signed_quants(x[b]));
    const float dx = _cvtsh_ss(x[b].d);
    for (int t = 0; t < T; ++t) {
      const auto* tail = reinterpret_cast<const ActQ8_0*>(
                             reinterpret_cast<const Q8Group*>(a + stride * static_cast<size_t>(t)) + groups) +
                         (b - groups * kGroupBlocks);
      const __m256 sums = _mm256_cvtepi32_ps(wb.dot(load_i8x32(tail->qs)));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * tail->d), sums, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = horizontal_sum(acc[t]);
}

struct GroupedRowsQ8_0 {
  template <int T>
  static void run(int64_t n, const void* w, const uint8_t* a, size_t stride, float* out) {
    rows_t<BlockQ8_0, T>(n, w, a, stride, out);
  }
};

// Packed weights: eight rows interleaved per block, so that one VPDPBUSD multiplies eight
// elements of all eight rows by the same eight activations (broadcast): row i's first four in
// 32-bit lane 2i, the other four in lane 2i + 1. The sixteen lanes end as the rows' half sums,
// and each row's two lanes are added once, at the end of the row (store_pair_sums).
//   Q8_0: d[8] (row i's scale), then qs[k][i][j] = row i's element 8k + j       (272 = 8 x 34 bytes)
//   Q4_0: d[8], then qs[k][i][j] = row i's packed byte 8k + j: its low nibble is element 8k + j,
//         its high nibble element 16 + 8k + j                                    (144 = 8 x 18 bytes)
// Both as 8 bytes a row: one 512-bit register holds row i's first four in lane 2i and the other
// four in lane 2i + 1, so one 8-byte broadcast of the activations feeds all 16 lanes, and row i's
// result is the sum of its two lanes.
// Q8_0 meets this set's biased q8_0 activations; Q4_0 meets q8_1 activations, its nibbles stay
// unsigned and the zero point 8 is taken off once per activation block through the block's sum.
struct PackedQ8_0 {
  uint16_t d[kPackRows];
  int8_t qs[4][kPackRows][8];
};
static_assert(sizeof(PackedQ8_0) == kPackRows * sizeof(BlockQ8_0));
struct PackedQ4_0 {
  uint16_t d[kPackRows];
  uint8_t qs[2][kPackRows][8];
};
static_assert(sizeof(PackedQ4_0) == kPackRows * sizeof(BlockQ4_0));
// The other 32-element types keep Q4_0's nibble layout and add, per row, an offset m (Q4_1,
// Q5_1) and the fifth bits (Q5_0, Q5_1) as four 64-bit masks, one per vector of the block (the
// low nibbles of qs[0] and qs[1], then their high nibbles): bit 8i + j of high[v] is the fifth
// bit of row i's element 8v + j, the element that byte of vector v holds. IQ4_NL is Q4_0's
// layout with grid indices.
//   Q5_0: d[8], high[4], qs                                                      (176 = 8 x 22 bytes)
//   Q4_1: d[8], m[8], qs                                                         (160 = 8 x 20 bytes)
//   Q5_1: d[8], m[8], high[4], qs                                                (192 = 8 x 24 bytes)
struct PackedQ5_0 {
  uint16_t d[kPackRows];
  uint64_t high[4];
  uint8_t qs[2][kPackRows][8];
};
static_assert(sizeof(PackedQ5_0) == kPackRows * sizeof(BlockQ5_0));
struct PackedQ4_1 {
  uint16_t d[kPackRows];
  uint16_t m[kPackRows];
  uint8_t qs[2][kPackRows][8];
};
static_assert(sizeof(PackedQ4_1) == kPackRows * sizeof(BlockQ4_1));
struct PackedQ5_1 {
  uint16_t d[kPackRows];
  uint16_t m[kPackRows];
  uint64_t high[4];
  uint8_t qs[2][kPackRows][8];
};
static_assert(sizeof(PackedQ5_1) == kPackRows * sizeof(BlockQ5_1));
struct PackedIQ4_NL {
  uint16_t d[kPackRows];
  uint8_t qs[2][kPackRows][8];
};
static_assert(sizeof(PackedIQ4_NL) == kPackRows * sizeof(BlockIQ4_NL));

void pack_rows_q8_0(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  auto* out = reinterpret_cast<PackedQ8_0*>(group);
  for (int64_t b = 0; b < n / 32; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      const BlockQ8_0& in = reinterpret_cast<const BlockQ8_0*>(rows + row_bytes * static_cast<size_t>(i))[b];
      out[b].d[i] = in.d;
      for (int k = 0; k < 4; ++k) __builtin_memcpy(out[b].qs[k][i], in.qs + 8 * k, 8);
    }
  }
}

// The 32-element nibble types (see PackedQ4_0 and PackedQ5_0).
template <class Block, class Packed>
void pack_rows(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  static_assert(sizeof(Block::qs) == 16 && sizeof(Packed::qs) == 2 * kPackRows * 8);
  auto* out = reinterpret_cast<Packed*>(group);
  for (int64_t b = 0; b < n / 32; ++b) {
    if constexpr (requires { out[b].high; }) {
      for (uint64_t& mask : out[b].high) mask = 0;
    }
    for (int i = 0; i < kPackRows; ++i) {
      const Block& in = reinterpret_cast<const Block*>(rows + row_bytes * static_cast<size_t>(i))[b];
      out[b].d[i] = in.d;
      if constexpr (requires { in.m; }) out[b].m[i] = in.m;
      for (int k = 0; k < 2; ++k) __builtin_memcpy(out[b].qs[k][i], in.qs + 8 * k, 8);
      if constexpr (requires { in.qh; }) {
        uint32_t bits;
        __builtin_memcpy(&bits, in.qh, sizeof bits);
        for (int v = 0; v < 4; ++v) out[b].high[v] |= static_cast<uint64_t>((bits >> (8 * v)) & 0xFF) << (8 * i);
      }
    }
  }
}

// The four vectors of a packed nibble block: vector v holds elements 8v..8v+7 of every row (the
// low nibbles of qs[0], qs[1], then their high nibbles), unsigned, plus 16 where the fifth bit is
// set (Q5_0, Q5_1), or the IQ4 grid values plus 128 (IQ4_NL).
template <class Packed>
inline void unpack_packed(const Packed& block, __m512i w[4]) {
  const __m512i low_mask = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
  for (int k = 0; k < 2; ++k) {
    const __m512i packed = _mm512_loadu_si512(block.qs[k]);
    w[k] = _mm512_and_si512(packed, low_mask);
    w[k + 2] = _mm512_and_si512(_mm512_maskz_srli_epi16(kAll32, packed, 4), low_mask);
  }
  for (int v = 0; v < 4; ++v) {
    if constexpr (requires { block.high; }) w[v] = _mm512_or_si512(w[v], _mm512_maskz_mov_epi8(block.high[v], sixteen));
    if constexpr (std::is_same_v<Packed, PackedIQ4_NL>) {
      const __m512i grid = _mm512_add_epi8(
          _mm512_maskz_broadcast_i32x4(kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues))),
          _mm512_set1_epi8(-128));
      w[v] = _mm512_maskz_shuffle_epi8(kAll64, grid, w[v]);
    }
  }
}

template <class Packed>
inline void prefetch_ahead(const Packed* block) {
  // Weights stream from memory (the next rows follow this group): ask for them ahead of use, into
  // L2 (a T0 prefetch holds a line-fill buffer until the line reaches L1, and with every buffer
  // taken the prefetches stall the kernel: decode ran 25-30 % slower with T0).
  const auto first = (reinterpret_cast<uintptr_t>(block) + kPrefetchBytes) & ~uintptr_t{63};
  const uintptr_t end = reinterpret_cast<uintptr_t>(block) + kPrefetchBytes + sizeof(Packed);
  for (uintptr_t line = first; line < end; line += 64) _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
}

// Eight activation bytes (at any alignment) in every pair of lanes, loaded straight from memory:
// a broadcast from a general register would take the shuffle port the multiply-adds need.
inline __m512i broadcast_pair(const uint8_t* p) {
  return _mm512_maskz_broadcastq_epi64(kAll8, _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Row i's f16 value (of eight) in lanes 2i and 2i + 1 (lanes `mask`, the others 0).
inline __m512 paired_f16(const uint16_t* halves, __mmask16 mask = kAll16) {
  const __m256i paired =
      _mm256_permutexvar_epi16(_mm256_setr_epi16(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
                               _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(halves))));
  return _mm512_maskz_cvtph_ps(mask, paired);
}

// out[i] = lane 2i + lane 2i + 1 of acc (i < 8): row i's two halves.
inline void store_pair_sums(__m512 acc, float* out) {
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512 sums =
      _mm512_add_ps(_mm512_maskz_permutexvar_ps(kAll16, evens, acc), _mm512_maskz_permutexvar_ps(kAll16, odds, acc));
  _mm512_mask_storeu_ps(out, 0x00FF, sums);  // lanes 0..7
}

// One packed Q8_0 block against T activation blocks: biased quants q[t], scales *s[t]. acc[t]
// holds row i's sum in lanes 2i and 2i + 1 (each half of the row's elements).
template <int T>
inline void packed_q8_0_block(const PackedQ8_0& block, const uint8_t* const q[T], const float* const s[T],
                              __m512 acc[T]) {
  prefetch_ahead(&block);
  __m512i w[4];
  for (int k = 0; k < 4; ++k) w[k] = _mm512_loadu_si512(block.qs[k]);
  // Each lane: -128 * (sum of its 16 weight bytes), the activations' bias to take off (see
  // SignedWeights).
  const __m512i bias = _mm512_set1_epi8(-128);
  const __m512i first = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w[0]), bias, w[2]);
  const __m512i second = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w[1]), bias, w[3]);
  const __m512i correction = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_add_epi32(first, second));
  const __m512 dx = paired_f16(block.d);
  for (int t = 0; t < T; ++t) {
    // One chain: the rows' chains overlap one another, and batched steps are short of vector
    // instructions issued, not of latency.
    __m512i sum = correction;
    for (int k = 0; k < 4; ++k) sum = _mm512_dpbusd_epi32(sum, broadcast_pair(q[t] + 8 * k), w[k]);
    const __m512 sums = _mm512_maskz_cvtepi32_ps(kAll16, sum);
    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, _mm512_set1_ps(*s[t])), sums, acc[t]);
  }
}

// The activation rows in this set's grouped layout: whole groups of eight blocks first, then the
// remaining blocks one by one.
template <int T>
void packed_q8_0_t(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
  const auto* blocks = static_cast<const PackedQ8_0*>(group);
  const int64_t n_blocks = n / 32, groups = n_blocks / kGroupBlocks;
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  const uint8_t* q[T];
  const float* s[T];
  for (int64_t g = 0; g < groups; ++g) {
    for (int j = 0; j < kGroupBlocks; ++j) {
      for (int t = 0; t < T; ++t) {
        const Q8Group& y = reinterpret_cast<const Q8Group*>(a + stride * static_cast<size_t>(t))[g];
        q[t] = y.qs[j];
        s[t] = &y.d[j];
      }
      packed_q8_0_block<T>(blocks[g * kGroupBlocks + j], q, s, acc);
    }
  }
  for (int64_t b = groups * kGroupBlocks; b < n_blocks; ++b) {
    for (int t = 0; t < T; ++t) {
      const ActQ8_0& y = reinterpret_cast<const ActQ8_0*>(
          reinterpret_cast<const Q8Group*>(a + stride * static_cast<size_t>(t)) + groups)[b - groups * kGroupBlocks];
      q[t] = reinterpret_cast<const uint8_t*>(y.qs);
      s[t] = &y.d;
    }
    packed_q8_0_block<T>(blocks[b], q, s, acc);
  }
  for (int t = 0; t < T; ++t) store_pair_sums(acc[t], out + kPackRows * t);
}

// The 32-element nibble types against q8_1 rows: per block and activation row, four
// multiply-adds that start from -z * (sum of the activation block) in row i's lane 2i, z the zero
// point (8 for Q4_0, 16 for Q5_0, 128 for IQ4_NL's shifted grid, 0 for Q4_1 and Q5_1, whose
// offsets m add m * d_a * sum(a), also in lane 2i only). Lane 2i thus holds its half's products
// less z times the other half's activation sum, which lane 2i + 1 holds in excess; both are
// integers below 2^24, so they convert exactly, and they cancel when the lanes are added.
template <class Packed, int T>
void packed_q4_0_t(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
  constexpr int kZero = std::is_same_v<Packed, PackedQ4_0>     ? 8
                        : std::is_same_v<Packed, PackedQ5_0>   ? 16
                        : std::is_same_v<Packed, PackedIQ4_NL> ? 128
                                                               : 0;
  const auto* blocks = static_cast<const Packed*>(group);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    prefetch_ahead(blocks + b);
    __m512i w[4];
    unpack_packed(blocks[b], w);
    const __m512 dx = paired_f16(blocks[b].d);
    __m512 m = _mm512_setzero_ps();
    if constexpr (requires { blocks[b].m; }) m = paired_f16(blocks[b].m, kEvenLanes);
    for (int t = 0; t < T; ++t) {
      const auto* y = reinterpret_cast<const ActQ8_1*>(a + stride * static_cast<size_t>(t)) + b;
      const auto* q = reinterpret_cast<const uint8_t*>(y->qs);
      __m512i sum = _mm512_maskz_set1_epi32(kEvenLanes, -kZero * y->sum);
      for (int v = 0; v < 4; ++v) sum = _mm512_dpbusd_epi32(sum, w[v], broadcast_pair(q + 8 * v));
      const __m512 sums = _mm512_maskz_cvtepi32_ps(kAll16, sum);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, _mm512_set1_ps(y->d)), sums, acc[t]);
      if constexpr (requires { blocks[b].m; }) {
        acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(y->d * static_cast<float>(y->sum)), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) store_pair_sums(acc[t], out + kPackRows * t);
}

// Packed Q4_K and Q5_K: eight rows interleaved per super-block of 256, same size as eight BlockQ4_K.
//   d[8], dmin[8]: row i's super-scales;
//   scales[k][i]:  byte k of row i's packed six-bit scales and mins (see unpack_q4_k_scales), so
//                  that the eight rows' scale j unpacks as one vector;
//   qs[c][k][i]:   row i's bytes 32c + 8k .. 32c + 8k + 7: low nibbles are elements 64c + 8k + j
//                  (sub-block 2c), high nibbles elements 64c + 32 + 8k + j (sub-block 2c + 1).
//                  As for Q8_0, 8 bytes a row: row i's halves in lanes 2i and 2i + 1.
struct PackedQ4_K {
  uint16_t d[kPackRows];
  uint16_t dmin[kPackRows];
  uint8_t scales[12][kPackRows];
  uint8_t qs[4][4][kPackRows][8];
};
static_assert(sizeof(PackedQ4_K) == kPackRows * sizeof(BlockQ4_K));

// Packed Q5_K: PackedQ4_K's fields plus qh[k][i] = row i's qh bytes 8k .. 8k + 7, whose bit 2c
// (2c + 1) is the fifth bit of the low (high) nibble at the same place of qs[c][k][i].
struct PackedQ5_K {
  uint16_t d[kPackRows];
  uint16_t dmin[kPackRows];
  uint8_t scales[12][kPackRows];
  uint8_t qh[4][kPackRows][8];
  uint8_t qs[4][4][kPackRows][8];
};
static_assert(sizeof(PackedQ5_K) == kPackRows * sizeof(BlockQ5_K));

template <class Block, class Packed>
void pack_rows_q4_k_like(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  auto* out = reinterpret_cast<Packed*>(group);
  for (int64_t b = 0; b < n / 256; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      const Block& in = reinterpret_cast<const Block*>(rows + row_bytes * static_cast<size_t>(i))[b];
      out[b].d[i] = in.d;
      out[b].dmin[i] = in.dmin;
      for (int k = 0; k < 12; ++k) out[b].scales[k][i] = in.scales[k];
      for (int c = 0; c < 4; ++c) {
        for (int k = 0; k < 4; ++k) __builtin_memcpy(out[b].qs[c][k][i], in.qs + 32 * c + 8 * k, 8);
      }
      if constexpr (std::is_same_v<Block, BlockQ5_K>) {
        for (int k = 0; k < 4; ++k) __builtin_memcpy(out[b].qh[k][i], in.qh + 8 * k, 8);
      }
    }
  }
}

// The eight rows' d * scale_j in lanes 2i and 2i + 1, and dmin * min_j in lane 2i (row i's min
// term is taken once).
template <class Packed>
inline void packed_q4_k_scales(const Packed& block, __m512 scales[8], __m512 mins[8]) {
  __m512i bytes[12];
  for (int k = 0; k < 12; ++k) {
    const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block.scales[k]));
    bytes[k] = _mm512_maskz_cvtepu8_epi32(kAll16, _mm_unpacklo_epi8(eight, eight));
  }
  const __m512i six = _mm512_set1_epi32(63), four = _mm512_set1_epi32(15);
  const __m512 d = paired_f16(block.d);
  const __m512 dmin = paired_f16(block.dmin, kEvenLanes);
  auto to_float = [](__m512i x) { return _mm512_maskz_cvtepi32_ps(kAll16, x); };
  auto top_two_bits = [](__m512i x) {
    return _mm512_maskz_slli_epi32(kAll16, _mm512_maskz_srli_epi32(kAll16, x, 6), 4);
  };
  for (int j = 0; j < 4; ++j) {
    scales[j] = _mm512_mul_ps(d, to_float(_mm512_and_si512(bytes[j], six)));
    mins[j] = _mm512_mul_ps(dmin, to_float(_mm512_and_si512(bytes[j + 4], six)));
    const __m512i scale_high = _mm512_or_si512(_mm512_and_si512(bytes[j + 8], four), top_two_bits(bytes[j]));
    const __m512i min_high =
        _mm512_or_si512(_mm512_maskz_srli_epi32(kAll16, bytes[j + 8], 4), top_two_bits(bytes[j + 4]));
    scales[j + 4] = _mm512_mul_ps(d, to_float(scale_high));
    mins[j + 4] = _mm512_mul_ps(dmin, to_float(min_high));
  }
}

// Per activation row and super-block: d_a * (sum_j d scale_j <q_j, a_j> - sum_j dmin min_j
// sum(a_j)), each sub-block's integer dot product from four VPDPBUSD of the nibbles with
// broadcast activation pairs. A pair of sub-blocks is unpacked once (eight registers) for all T
// (up to 8) rows, so the scales and the unpacking are paid once per call, not once per row.
template <class Packed, int T>
void packed_q4_k_t(int64_t n, const Packed* blocks, const uint8_t* a, size_t stride, float* out) {
  constexpr bool kFifthBit = std::is_same_v<Packed, PackedQ5_K>;
  const __m512i low_mask = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 256; ++b) {
    const Packed& block = blocks[b];
    prefetch_ahead(&block);
    __m512 scales[8], mins[8];
    packed_q4_k_scales(block, scales, mins);
    const ActQ8_K* y[T];
    __m512 sum[T];
    for (int t = 0; t < T; ++t) {
      y[t] = reinterpret_cast<const ActQ8_K*>(a + stride * static_cast<size_t>(t)) + b;
      sum[t] = _mm512_setzero_ps();
    }
    for (int c = 0; c < 4; ++c) {
      // Sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles).
      __m512i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) {
        const __m512i packed = _mm512_loadu_si512(block.qs[c][k]);
        lo[k] = _mm512_and_si512(packed, low_mask);
        hi[k] = _mm512_and_si512(_mm512_maskz_srli_epi16(kAll32, packed, 4), low_mask);
        if constexpr (kFifthBit) {
          const __m512i high_bits = _mm512_loadu_si512(block.qh[k]);
          const auto bit = [&](int i) {
            return _mm512_test_epi8_mask(high_bits, _mm512_set1_epi8(static_cast<char>(1 << i)));
          };
          lo[k] = _mm512_or_si512(lo[k], _mm512_maskz_mov_epi8(bit(2 * c), sixteen));
          hi[k] = _mm512_or_si512(hi[k], _mm512_maskz_mov_epi8(bit(2 * c + 1), sixteen));
        }
      }
      for (int t = 0; t < T; ++t) {
        const auto* q = reinterpret_cast<const uint8_t*>(y[t]->qs) + 64 * c;
        __m512i lo_sum = _mm512_setzero_si512(), hi_sum = _mm512_setzero_si512();
        for (int k = 0; k < 4; ++k) {
          lo_sum = _mm512_dpbusd_epi32(lo_sum, lo[k], broadcast_pair(q + 8 * k));
          hi_sum = _mm512_dpbusd_epi32(hi_sum, hi[k], broadcast_pair(q + 32 + 8 * k));
        }
        sum[t] = _mm512_fmadd_ps(scales[2 * c], _mm512_maskz_cvtepi32_ps(kAll16, lo_sum), sum[t]);
        sum[t] = _mm512_fmadd_ps(scales[2 * c + 1], _mm512_maskz_cvtepi32_ps(kAll16, hi_sum), sum[t]);
      }
    }
    for (int t = 0; t < T; ++t) {
      // The activation sums of the eight 32-element sub-blocks (pairs of bsums), in vector code:
      // scalar conversions here cost as much as the multiply-adds above.
      alignas(32) float pairs[8];
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t]->bsums));
      _mm256_store_ps(pairs, _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, _mm256_set1_epi16(1))));
      __m512 min_sum = _mm512_setzero_ps();
      for (int j = 0; j < 8; ++j) min_sum = _mm512_fmadd_ps(mins[j], _mm512_set1_ps(pairs[j]), min_sum);
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t]->d), _mm512_sub_ps(sum[t], min_sum), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) store_pair_sums(acc[t], out + kPackRows * t);
}

// Packed Q6_K: eight rows interleaved per super-block, same size as eight BlockQ6_K.
//   ql[h][k][i]: row i's ql bytes 64h + 8k .. + 7 (k < 8);
//   qh[h][k][i]: row i's qh bytes 32h + 8k .. + 7 (k < 4);
//   scales[g][i], d[i]: row i's group scales and super-scale.
// For half h and l = 8k + m (k < 4), ql[h][k] and ql[h][k + 4] with qh[h][k] give elements
// 128h + l, + 32, + 64 and + 96 (see BlockQ6_K): four vectors of 6-bit numbers 0..63, 8 bytes a
// row (halves in lanes 2i and 2i + 1, as for Q8_0).
struct PackedQ6_K {
  uint8_t ql[2][8][kPackRows][8];
  uint8_t qh[2][4][kPackRows][8];
  int8_t scales[16][kPackRows];
  uint16_t d[kPackRows];
};
static_assert(sizeof(PackedQ6_K) == kPackRows * sizeof(BlockQ6_K));

void pack_rows_q6_k(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  auto* out = reinterpret_cast<PackedQ6_K*>(group);
  for (int64_t b = 0; b < n / 256; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      const BlockQ6_K& in = reinterpret_cast<const BlockQ6_K*>(rows + row_bytes * static_cast<size_t>(i))[b];
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 8; ++k) __builtin_memcpy(out[b].ql[h][k][i], in.ql + 64 * h + 8 * k, 8);
        for (int k = 0; k < 4; ++k) __builtin_memcpy(out[b].qh[h][k][i], in.qh + 32 * h + 8 * k, 8);
      }
      for (int g = 0; g < 16; ++g) out[b].scales[g][i] = in.scales[g];
      out[b].d[i] = in.d;
    }
  }
}

// The 6-bit numbers of a packed Q6_K vector pair: q[set] holds elements 128h + 32 set + l.
inline void q6_k_quants_512(__m512i ql0, __m512i ql1, __m512i qh, __m512i q[4]) {
  const __m512i low_mask = _mm512_set1_epi8(0x0F), two_bits = _mm512_set1_epi8(3);
  const __m512i nibbles[4] = {_mm512_and_si512(ql0, low_mask), _mm512_and_si512(ql1, low_mask),
                              _mm512_and_si512(_mm512_maskz_srli_epi16(kAll32, ql0, 4), low_mask),
                              _mm512_and_si512(_mm512_maskz_srli_epi16(kAll32, ql1, 4), low_mask)};
  for (int set = 0; set < 4; ++set) {
    const __m512i high = _mm512_and_si512(_mm512_maskz_srl_epi16(kAll32, qh, _mm_cvtsi32_si128(2 * set)), two_bits);
    q[set] = _mm512_or_si512(nibbles[set], _mm512_maskz_slli_epi16(kAll32, high, 4));
  }
}

// Per activation row and super-block: d_a * sum_g d scale_g (<q_g, a_g> - 32 sum(a_g)) over the
// 16 groups of 16, the offset of 32 started in the integer sum (lane 2i only). A group pair's
// vectors are unpacked once for all T (up to 8) rows.
template <int T>
void packed_q6_k_t(int64_t n, const PackedQ6_K* blocks, const uint8_t* a, size_t stride, float* out) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 256; ++b) {
    const PackedQ6_K& block = blocks[b];
    prefetch_ahead(&block);
    const __m512 d = paired_f16(block.d);
    const ActQ8_K* y[T];
    __m512 sum[T];
    for (int t = 0; t < T; ++t) {
      y[t] = reinterpret_cast<const ActQ8_K*>(a + stride * static_cast<size_t>(t)) + b;
      sum[t] = _mm512_setzero_ps();
    }
    for (int h = 0; h < 2; ++h) {
      for (int half = 0; half < 2; ++half) {
        // Groups 8h + 2 set + half for the element sets (+0, +32, +64, +96), from k = 2 half, 2 half + 1.
        __m512i q[2][4];
        for (int j = 0; j < 2; ++j) {
          const int k = 2 * half + j;
          q6_k_quants_512(_mm512_loadu_si512(block.ql[h][k]), _mm512_loadu_si512(block.ql[h][k + 4]),
                          _mm512_loadu_si512(block.qh[h][k]), q[j]);
        }
        for (int set = 0; set < 4; ++set) {
          const int g = 8 * h + 2 * set + half;
          const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block.scales[g]));
          const __m512 scale = _mm512_mul_ps(
              d, _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, _mm_unpacklo_epi8(eight, eight))));
          for (int t = 0; t < T; ++t) {
            const auto* act = reinterpret_cast<const uint8_t*>(y[t]->qs) + 128 * h + 32 * set + 16 * half;
            __m512i group_sum = _mm512_maskz_set1_epi32(kEvenLanes, -32 * y[t]->bsums[g]);
            group_sum = _mm512_dpbusd_epi32(group_sum, q[0][set], broadcast_pair(act));
            group_sum = _mm512_dpbusd_epi32(group_sum, q[1][set], broadcast_pair(act + 8));
            sum[t] = _mm512_fmadd_ps(scale, _mm512_maskz_cvtepi32_ps(kAll16, group_sum), sum[t]);
          }
        }
      }
    }
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t]->d), sum[t], acc[t]);
  }
  for (int t = 0; t < T; ++t) store_pair_sums(acc[t], out + kPackRows * t);
}

template <int T>
struct PackedQ6_KKernel {
  static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
    packed_q6_k_t<T>(n, static_cast<const PackedQ6_K*>(group), a, stride, out);
  }
};

// Packed IQ4_XS: eight rows interleaved per super-block, same size as eight BlockIQ4_XS.
//   d[i], scales_h[i], scales_l[q][i]: row i's super-scale and packed sub-block scales;
//   qs[j][k][i]: row i's bytes 16j + 8k .. + 7 (sub-block j): low nibbles index elements
//                32j + 8k + m, high nibbles 32j + 16 + 8k + m (8 bytes a row, halves in lanes 2i
//                and 2i + 1, as for Q8_0).
// The grid values go in plus 128 (unsigned, 1..241, for VPDPBUSD); each sub-block's sum starts at
// -128 * (sum of its activations) in lane 2i, so the two lanes' integer sums add up to the grid's
// exactly.
struct PackedIQ4_XS {
  uint16_t d[kPackRows];
  uint16_t scales_h[kPackRows];
  uint8_t scales_l[4][kPackRows];
  uint8_t qs[8][2][kPackRows][8];
};
static_assert(sizeof(PackedIQ4_XS) == kPackRows * sizeof(BlockIQ4_XS));

void pack_rows_iq4_xs(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  auto* out = reinterpret_cast<PackedIQ4_XS*>(group);
  for (int64_t b = 0; b < n / 256; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      const BlockIQ4_XS& in = reinterpret_cast<const BlockIQ4_XS*>(rows + row_bytes * static_cast<size_t>(i))[b];
      out[b].d[i] = in.d;
      out[b].scales_h[i] = in.scales_h;
      for (int q = 0; q < 4; ++q) out[b].scales_l[q][i] = in.scales_l[q];
      for (int j = 0; j < 8; ++j) {
        for (int k = 0; k < 2; ++k) __builtin_memcpy(out[b].qs[j][k][i], in.qs + 16 * j + 8 * k, 8);
      }
    }
  }
}

// Per activation row and super-block: d_a * sum_j d (ls_j - 32) <grid[q_j], a_j>. A sub-block is
// unpacked once (four registers) for all T rows.
template <int T>
void packed_iq4_xs_t(int64_t n, const PackedIQ4_XS* blocks, const uint8_t* a, size_t stride, float* out) {
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i grid = _mm512_add_epi8(
      _mm512_maskz_broadcast_i32x4(kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues))),
      _mm512_set1_epi8(-128));
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 256; ++b) {
    const PackedIQ4_XS& block = blocks[b];
    prefetch_ahead(&block);
    const __m512 d = paired_f16(block.d);
    const __m128i high_words = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block.scales_h));
    const __m512i high = _mm512_maskz_cvtepu16_epi32(
        kAll16, _mm256_permutexvar_epi16(_mm256_setr_epi16(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
                                         _mm256_castsi128_si256(high_words)));
    const ActQ8_K* y[T];
    __m512 sum[T];
    // -128 * (sum of sub-block j's activations), per row.
    alignas(32) int32_t offsets[T][8];
    for (int t = 0; t < T; ++t) {
      y[t] = reinterpret_cast<const ActQ8_K*>(a + stride * static_cast<size_t>(t)) + b;
      sum[t] = _mm512_setzero_ps();
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t]->bsums));
      _mm256_store_si256(reinterpret_cast<__m256i*>(offsets[t]),
                         _mm256_mullo_epi32(_mm256_madd_epi16(bsums, _mm256_set1_epi16(1)), _mm256_set1_epi32(-128)));
    }
    for (int j = 0; j < 8; ++j) {
      const __m128i low_bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block.scales_l[j / 2]));
      const __m512i low = _mm512_maskz_cvtepu8_epi32(kAll16, _mm_unpacklo_epi8(low_bytes, low_bytes));
      const __m512i ls = _mm512_or_si512(
          _mm512_and_si512(_mm512_maskz_srli_epi32(kAll16, low, 4 * (j % 2)), _mm512_set1_epi32(15)),
          _mm512_maskz_slli_epi32(
              kAll16, _mm512_and_si512(_mm512_maskz_srli_epi32(kAll16, high, 2 * j), _mm512_set1_epi32(3)), 4));
      const __m512 scale =
          _mm512_mul_ps(d, _mm512_maskz_cvtepi32_ps(kAll16, _mm512_sub_epi32(ls, _mm512_set1_epi32(32))));
      __m512i w[4];
      for (int k = 0; k < 2; ++k) {
        const __m512i packed = _mm512_loadu_si512(block.qs[j][k]);
        w[k] = _mm512_maskz_shuffle_epi8(kAll64, grid, _mm512_and_si512(packed, low_mask));
        w[k + 2] = _mm512_maskz_shuffle_epi8(kAll64, grid,
                                             _mm512_and_si512(_mm512_maskz_srli_epi16(kAll32, packed, 4), low_mask));
      }
      for (int t = 0; t < T; ++t) {
        const auto* q = reinterpret_cast<const uint8_t*>(y[t]->qs) + 32 * j;
        __m512i sub_sum = _mm512_maskz_set1_epi32(kEvenLanes, offsets[t][j]);
        for (int v = 0; v < 4; ++v) sub_sum = _mm512_dpbusd_epi32(sub_sum, w[v], broadcast_pair(q + 8 * v));
        sum[t] = _mm512_fmadd_ps(scale, _mm512_maskz_cvtepi32_ps(kAll16, sub_sum), sum[t]);
      }
    }
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t]->d), sum[t], acc[t]);
  }
  for (int t = 0; t < T; ++t) store_pair_sums(acc[t], out + kPackRows * t);
}

template <int T>
struct PackedIQ4_XSKernel {
  static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
    packed_iq4_xs_t<T>(n, static_cast<const PackedIQ4_XS*>(group), a, stride, out);
  }
};

// count in [1, kMaxPackedDotRows] picks the instance.
template <template <int> class Kernel>
void packed_rows(int64_t n, const void* group, const void* a, size_t stride, int count, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(a);
  switch (count) {
    case 1:
      return Kernel<1>::run(n, group, bytes, stride, out);
    case 2:
      return Kernel<2>::run(n, group, bytes, stride, out);
    case 3:
      return Kernel<3>::run(n, group, bytes, stride, out);
    case 4:
      return Kernel<4>::run(n, group, bytes, stride, out);
    case 5:
      return Kernel<5>::run(n, group, bytes, stride, out);
    case 6:
      return Kernel<6>::run(n, group, bytes, stride, out);
    case 7:
      return Kernel<7>::run(n, group, bytes, stride, out);
    default:
      static_assert(kMaxPackedDotRows == 8);
      return Kernel<8>::run(n, group, bytes, stride, out);
  }
}

template <int T>
struct PackedQ8_0Kernel {
  static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
    packed_q8_0_t<T>(n, group, a, stride, out);
  }
};
template <int T>
struct PackedQ4_KKernel {
  static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
    packed_q4_k_t<PackedQ4_K, T>(n, static_cast<const PackedQ4_K*>(group), a, stride, out);
  }
};
template <int T>
struct PackedQ5_KKernel {
  static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
    packed_q4_k_t<PackedQ5_K, T>(n, static_cast<const PackedQ5_K*>(group), a, stride, out);
  }
};
template <class Packed>
struct Packed32 {
  template <int T>
  struct Kernel {
    static void run(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
      packed_q4_0_t<Packed, T>(n, group, a, stride, out);
    }
  };
};

KernelSet make_set() {
  KernelSet set = *avx2_kernel_set_unchecked();
  set.name = "avx512";
  set.quantize_q8_0 = quantize_q8_0_grouped;
  set.dot_q8_0 = x86::dot_of<GroupedRowsQ8_0>;
  set.rows_q8_0 = x86::rows_of<GroupedRowsQ8_0>;
  set.pack_q8_0 = pack_rows_q8_0;
  set.pack_q4_0 = pack_rows<BlockQ4_0, PackedQ4_0>;
  set.packed_q8_0 = packed_rows<PackedQ8_0Kernel>;
  set.packed_q4_0 = packed_rows<Packed32<PackedQ4_0>::Kernel>;
  set.pack_q5_0 = pack_rows<BlockQ5_0, PackedQ5_0>;
  set.packed_q5_0 = packed_rows<Packed32<PackedQ5_0>::Kernel>;
  set.pack_q4_1 = pack_rows<BlockQ4_1, PackedQ4_1>;
  set.packed_q4_1 = packed_rows<Packed32<PackedQ4_1>::Kernel>;
  set.pack_q5_1 = pack_rows<BlockQ5_1, PackedQ5_1>;
  set.packed_q5_1 = packed_rows<Packed32<PackedQ5_1>::Kernel>;
  set.pack_iq4_nl = pack_rows<BlockIQ4_NL, PackedIQ4_NL>;
  set.packed_iq4_nl = packed_rows<Packed32<PackedIQ4_NL>::Kernel>;
  set.pack_q4_k = pack_rows_q4_k_like<BlockQ4_K, PackedQ4_K>;
  set.packed_q4_k = packed_rows<PackedQ4_KKernel>;
  set.pack_q5_k = pack_rows_q4_k_like<BlockQ5_K, PackedQ5_K>;
  set.packed_q5_k = packed_rows<PackedQ5_KKernel>;
  set.pack_q6_k = pack_rows_q6_k;
  set.packed_q6_k = packed_rows<PackedQ6_KKernel>;
  set.pack_iq4_xs = pack_rows_iq4_xs;
  set.packed_iq4_xs = packed_rows<PackedIQ4_XSKernel>;
  x86::add_quant_dots(set);  // this file's copy, with VPDPBUSD/VPDPWSSD
  return set;
}

}  // namespace

const KernelSet* avx512_kernel_set_unchecked() {
  static const KernelSet set = make_set();
  return &set;
}

}  // namespace darkbloom::engine::kernels
