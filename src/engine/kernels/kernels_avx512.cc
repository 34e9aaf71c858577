// AVX-512 VNNI kernels for Q8_0 and Q4_0 weights, on 256-bit registers (AVX512VL): one
// VPDPBUSD does what VPSIGNB + VPMADDUBSW + VPMADDWD do in the AVX2 set, and the per-block scaling is done eight blocks
// at a time instead of once per block. Every other kernel is the AVX2 set's. This file alone is compiled with these
// instructions enabled; nothing here may run before kernel_set.cc has checked the CPU.
//
// Activations in this set (ActivationFormat::q8_0, same size as ActQ8_0 rows): each run of eight
// blocks is stored as a Q8Group (eight scales, then eight blocks of 32 quants), so the scales of
// a group load as one vector; the remaining (n / 32) % 8 blocks follow as ActQ8_0. Quants are
// stored plus 128 (as unsigned bytes) for VPDPBUSD.
#include <immintrin.h>

#include <cstdint>

#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/x86_blocks.h"

namespace darkbloom::engine::kernels {

const KernelSet* avx2_kernel_set_unchecked();

namespace {

constexpr int kGroupBlocks = 8;
constexpr size_t kPrefetchBytes = 4096;

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

template <class Block>
void rows(int64_t n, const void* w, const void* a, size_t stride, int count, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(a);
  switch (count) {
    case 1:
      return rows_t<Block, 1>(n, w, bytes, stride, out);
    case 2:
      return rows_t<Block, 2>(n, w, bytes, stride, out);
    case 3:
      return rows_t<Block, 3>(n, w, bytes, stride, out);
    default:
      return rows_t<Block, 4>(n, w, bytes, stride, out);
  }
}

template <class Block>
float dot(int64_t n, const void* w, const void* a) {
  float out;
  rows_t<Block, 1>(n, w, static_cast<const uint8_t*>(a), 0, &out);
  return out;
}

// Packed weights: eight rows interleaved per block, so that one VPDPBUSD multiplies four
// elements of all eight rows by the same four activations (broadcast) and the eight lanes end as
// the eight rows' block sums: no horizontal reduction at all.
//   Q8_0: d[8] (row i's scale), then qs[k][i][j] = row i's element 4k + j       (272 = 8 x 34 bytes)
//   Q4_0: d[8], then qs[k][i][j] = row i's packed byte 4k + j: its low nibble is element 4k + j,
//         its high nibble element 16 + 4k + j                                    (144 = 8 x 18 bytes)
struct PackedQ8_0 {
  uint16_t d[kPackRows];
  int8_t qs[8][kPackRows][4];
};
static_assert(sizeof(PackedQ8_0) == kPackRows * sizeof(BlockQ8_0));
struct PackedQ4_0 {
  uint16_t d[kPackRows];
  uint8_t qs[4][kPackRows][4];
};
static_assert(sizeof(PackedQ4_0) == kPackRows * sizeof(BlockQ4_0));

template <class Block, class Packed>
void pack_rows(const uint8_t* rows, size_t row_bytes, int64_t n, uint8_t* group) {
  constexpr int kWords = sizeof(Block::qs) / 4;  // 4-byte words per block and row: 8 or 4
  static_assert(sizeof(Packed::qs) == kWords * kPackRows * 4);
  auto* out = reinterpret_cast<Packed*>(group);
  for (int64_t b = 0; b < n / 32; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      const Block& in = reinterpret_cast<const Block*>(rows + row_bytes * static_cast<size_t>(i))[b];
      out[b].d[i] = in.d;
      for (int k = 0; k < kWords; ++k) __builtin_memcpy(out[b].qs[k][i], in.qs + 4 * k, 4);
    }
  }
}

// The eight (Q8_0) or eight unpacked (Q4_0) vectors of a packed block as signed bytes: vector k
// holds elements 4k..4k+3 of every row.
inline void unpack_packed(const PackedQ8_0& block, __m256i w[8]) {
  for (int k = 0; k < 8; ++k) w[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.qs[k]));
}
inline void unpack_packed(const PackedQ4_0& block, __m256i w[8]) {
  const __m256i low_mask = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (int k = 0; k < 4; ++k) {
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.qs[k]));
    w[k] = _mm256_sub_epi8(_mm256_and_si256(packed, low_mask), eight);
    w[k + 4] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask), eight);
  }
}

// Activation block b of a row in this set's grouped layout: its scale and its 32 biased quants.
inline const float* activation_scale(const uint8_t* row, int64_t b, int64_t groups) {
  if (b < groups * kGroupBlocks) return &reinterpret_cast<const Q8Group*>(row)[b / kGroupBlocks].d[b % kGroupBlocks];
  return &(reinterpret_cast<const ActQ8_0*>(reinterpret_cast<const Q8Group*>(row) + groups) +
           (b - groups * kGroupBlocks))
              ->d;
}
inline const uint8_t* activation_quants(const uint8_t* row, int64_t b, int64_t groups) {
  if (b < groups * kGroupBlocks) return reinterpret_cast<const Q8Group*>(row)[b / kGroupBlocks].qs[b % kGroupBlocks];
  return reinterpret_cast<const uint8_t*>(
      (reinterpret_cast<const ActQ8_0*>(reinterpret_cast<const Q8Group*>(row) + groups) + (b - groups * kGroupBlocks))
          ->qs);
}

template <class Packed, int T>
void packed_t(int64_t n, const void* group, const uint8_t* a, size_t stride, float* out) {
  const auto* blocks = static_cast<const Packed*>(group);
  const int64_t n_blocks = n / 32, groups = n_blocks / kGroupBlocks;
  const __m256i bias = _mm256_set1_epi8(-128);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < n_blocks; ++b) {
    // Weights stream from memory (the next rows follow this group): ask for them ahead of use.
    const char* ahead = reinterpret_cast<const char*>(blocks + b) + kPrefetchBytes;
    for (size_t line = 0; line < sizeof(Packed); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
    __m256i w[8];
    unpack_packed(blocks[b], w);
    // Lane i: 128 * (sum of row i's block), the activations' bias to take off (see SignedWeights).
    __m256i sum_even = _mm256_setzero_si256(), sum_odd = _mm256_setzero_si256();
    for (int k = 0; k < 8; k += 2) {
      sum_even = _mm256_dpbusd_epi32(sum_even, bias, w[k]);
      sum_odd = _mm256_dpbusd_epi32(sum_odd, bias, w[k + 1]);
    }
    const __m256i correction = _mm256_add_epi32(sum_even, sum_odd);  // subtracted below
    const __m256 dx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[b].d)));
    for (int t = 0; t < T; ++t) {
      const uint8_t* row = a + stride * static_cast<size_t>(t);
      const uint8_t* q = activation_quants(row, b, groups);
      int32_t words[8];
      __builtin_memcpy(words, q, sizeof words);
      // Two chains of four, so the multiply-adds of one block overlap.
      __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
      for (int k = 0; k < 8; k += 2) {
        even = _mm256_dpbusd_epi32(even, _mm256_set1_epi32(words[k]), w[k]);
        odd = _mm256_dpbusd_epi32(odd, _mm256_set1_epi32(words[k + 1]), w[k + 1]);
      }
      const __m256 sums = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_add_epi32(even, odd), correction));
      const __m256 scale = _mm256_mul_ps(dx, _mm256_broadcast_ss(activation_scale(row, b, groups)));
      acc[t] = _mm256_fmadd_ps(scale, sums, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out + kPackRows * t, acc[t]);
}

template <class Packed>
void packed_rows(int64_t n, const void* group, const void* a, size_t stride, int count, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(a);
  switch (count) {
    case 1:
      return packed_t<Packed, 1>(n, group, bytes, stride, out);
    case 2:
      return packed_t<Packed, 2>(n, group, bytes, stride, out);
    case 3:
      return packed_t<Packed, 3>(n, group, bytes, stride, out);
    default:
      return packed_t<Packed, 4>(n, group, bytes, stride, out);
  }
}

KernelSet make_set() {
  KernelSet set = *avx2_kernel_set_unchecked();
  set.name = "avx512";
  set.quantize_q8_0 = quantize_q8_0_grouped;
  set.dot_q8_0 = dot<BlockQ8_0>;
  set.dot_q4_0 = dot<BlockQ4_0>;
  set.rows_q8_0 = rows<BlockQ8_0>;
  set.rows_q4_0 = rows<BlockQ4_0>;
  set.pack_q8_0 = pack_rows<BlockQ8_0, PackedQ8_0>;
  set.pack_q4_0 = pack_rows<BlockQ4_0, PackedQ4_0>;
  set.packed_q8_0 = packed_rows<PackedQ8_0>;
  set.packed_q4_0 = packed_rows<PackedQ4_0>;
  return set;
}

}  // namespace

const KernelSet* avx512_kernel_set_unchecked() {
  static const KernelSet set = make_set();
  return &set;
}

}  // namespace darkbloom::engine::kernels
