#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/fp16.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/quantize.h"

namespace darkbloom::engine::kernels {
namespace {

constexpr GgmlType kWeightTypes[] = {GgmlType::f32,  GgmlType::f16,    GgmlType::bf16,  GgmlType::q8_0,
                                     GgmlType::q4_0, GgmlType::q4_1,   GgmlType::q5_0,  GgmlType::q5_1,
                                     GgmlType::q2_k, GgmlType::q3_k,   GgmlType::q4_k,  GgmlType::q5_k,
                                     GgmlType::q6_k, GgmlType::iq4_nl, GgmlType::iq4_xs};

std::vector<float> random_row(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> row(static_cast<size_t>(n));
  for (auto& v : row) v = normal(rng);
  return row;
}

std::vector<uint8_t> quantized(GgmlType type, const std::vector<float>& row) {
  std::vector<uint8_t> bytes(ggml_row_bytes(type, row.size()));
  quantize_row(type, row.data(), bytes.data(), static_cast<int64_t>(row.size()));
  return bytes;
}

// `count` activation rows of n elements in `set`'s format for `type`, `stride` bytes apart; row t
// is random_row(n, seed + t, 1 + t).
std::vector<uint8_t> activation_rows(const KernelSet& set, GgmlType type, int64_t n, int count, uint64_t seed,
                                     size_t* stride) {
  const ActivationFormat format = set.activation_format_for(type);
  *stride = activation_row_bytes(format, n);
  std::vector<uint8_t> rows(*stride * static_cast<size_t>(count));
  for (int t = 0; t < count; ++t) {
    const auto x = random_row(n, seed + static_cast<uint64_t>(t), 1.0f + static_cast<float>(t));
    set.quantize_activation(format, x.data(), rows.data() + *stride * static_cast<size_t>(t), n);
  }
  return rows;
}

float dot(const KernelSet& set, GgmlType type, const std::vector<uint8_t>& weights, const std::vector<float>& x) {
  const ActivationFormat format = set.activation_format_for(type);
  std::vector<uint8_t> activation(activation_row_bytes(format, static_cast<int64_t>(x.size())));
  set.quantize_activation(format, x.data(), activation.data(), static_cast<int64_t>(x.size()));
  return set.dot_for(type)(static_cast<int64_t>(x.size()), weights.data(), activation.data());
}

// Hardware conversions, compiled for F16C only inside these functions; callers check the CPU.
__attribute__((target("f16c"))) float hardware_fp16_to_fp32(uint16_t h) {
  return _cvtsh_ss(h);
}
__attribute__((target("f16c"))) uint16_t hardware_fp32_to_fp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

double exact_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

TEST(Fp16, software_conversion_matches_the_hardware_for_every_half) {
  if (avx2_kernels() == nullptr) GTEST_SKIP() << "no F16C on this CPU";
  for (uint32_t h = 0; h < 65536; ++h) {
    const float soft = fp16_to_fp32(static_cast<uint16_t>(h));
    const float hard = hardware_fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(hard)) {
      EXPECT_TRUE(std::isnan(soft)) << h;
    } else {
      EXPECT_EQ(float_to_bits(soft), float_to_bits(hard)) << h;
    }
  }
}

TEST(Fp16, software_rounding_matches_the_hardware) {
  if (avx2_kernels() == nullptr) GTEST_SKIP() << "no F16C on this CPU";
  std::mt19937 rng(3);
  for (int i = 0; i < 200000; ++i) {
    const float f = bits_to_float(rng());
    if (std::isnan(f)) continue;
    EXPECT_EQ(fp32_to_fp16(f), hardware_fp32_to_fp16(f)) << f;
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 6.1e-5f, 5.9604645e-8f, 2.9802322e-8f, 1e-10f}) {
    EXPECT_EQ(fp32_to_fp16(f), hardware_fp32_to_fp16(f)) << f;
  }
}

TEST(Bf16, round_trip_keeps_the_top_bits_and_rounds_to_nearest_even) {
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(fp32_to_bf16(bits_to_float(0x3F808000)), 0x3F80);  // tie, even stays
  EXPECT_EQ(fp32_to_bf16(bits_to_float(0x3F818000)), 0x3F82);  // tie, odd rounds up
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
}

// Dequantized values must be close to the originals, within what each format can represent.
TEST(Quantize, round_trip_error_is_within_each_formats_resolution) {
  const std::vector<float> row = random_row(1024, 11);
  const std::pair<GgmlType, double> bounds[] = {
      {GgmlType::f32, 0.0},   {GgmlType::f16, 1e-3},  {GgmlType::bf16, 8e-3},   {GgmlType::q8_0, 0.01},
      {GgmlType::q4_0, 0.15}, {GgmlType::q4_k, 0.15}, {GgmlType::q6_k, 0.04},   {GgmlType::q4_1, 0.15},
      {GgmlType::q5_0, 0.08}, {GgmlType::q5_1, 0.08}, {GgmlType::iq4_nl, 0.15}, {GgmlType::q2_k, 0.45},
      {GgmlType::q3_k, 0.22}, {GgmlType::q5_k, 0.08}, {GgmlType::iq4_xs, 0.15},
  };
  for (const auto& [type, bound] : bounds) {
    std::vector<float> back(row.size());
    dequantize_row(type, quantized(type, row).data(), back.data(), static_cast<int64_t>(row.size()));
    double error = 0, energy = 0;
    for (size_t i = 0; i < row.size(); ++i) {
      error += (back[i] - row[i]) * (back[i] - row[i]);
      energy += row[i] * row[i];
    }
    EXPECT_LE(std::sqrt(error / energy), bound) << ggml_type_name(type);
  }
}

TEST(Quantize, q4_k_scale_packing_round_trips_all_six_bit_values) {
  uint8_t scales[8], mins[8], packed[12], scales_back[8], mins_back[8];
  for (int base = 0; base < 64; base += 7) {
    for (int j = 0; j < 8; ++j) {
      scales[j] = static_cast<uint8_t>((base + 5 * j) % 64);
      mins[j] = static_cast<uint8_t>((base + 11 * j + 3) % 64);
    }
    pack_q4_k_scales(scales, mins, packed);
    unpack_q4_k_scales(packed, scales_back, mins_back);
    for (int j = 0; j < 8; ++j) {
      EXPECT_EQ(scales_back[j], scales[j]);
      EXPECT_EQ(mins_back[j], mins[j]);
    }
  }
}

TEST(Quantize, q3_k_scale_packing_round_trips_all_six_bit_values) {
  uint8_t scales[16], packed[12], back[16];
  for (int base = 0; base < 64; base += 5) {
    for (int i = 0; i < 16; ++i) scales[i] = static_cast<uint8_t>((base + 7 * i) % 64);
    pack_q3_k_scales(scales, packed);
    unpack_q3_k_scales(packed, back);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(back[i], scales[i]) << base << " " << i;
  }
}

// A hand-built Q5_0 block: all low nibbles 0, only bit 17 of qh set, so element 17 is q = 16 (value
// 0) and every other element q = 0 (value -16 d).
TEST(Quantize, q5_0_fifth_bit_of_element_i_is_bit_i_of_qh) {
  BlockQ5_0 block{};
  block.d = fp32_to_fp16(0.5f);
  block.qh[2] = 0x02;  // bit 17 of the little-endian word
  float out[32];
  dequantize_row(GgmlType::q5_0, &block, out, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], i == 17 ? 0.0f : -8.0f) << i;
}

// A hand-built IQ4_XS block: sub-block j has six-bit scale 8j + 5 (multiplier 8j - 27; the high
// bits run through 0..3), every index 8 (level 1), d = 1: element e is 8 (e / 32) - 27.
TEST(Quantize, iq4_xs_sub_block_scales_split_into_low_and_high_bits) {
  BlockIQ4_XS block{};
  block.d = fp32_to_fp16(1.0f);
  for (int j = 0; j < 8; ++j) {
    const int ls = 8 * j + 5;
    block.scales_l[j / 2] = static_cast<uint8_t>(block.scales_l[j / 2] | ((ls & 0x0F) << (4 * (j % 2))));
    block.scales_h = static_cast<uint16_t>(block.scales_h | ((ls >> 4) << (2 * j)));
  }
  for (auto& q : block.qs) q = 0x88;
  float out[256];
  dequantize_row(GgmlType::iq4_xs, &block, out, 256);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(out[e], static_cast<float>(8 * (e / 32) - 27)) << e;
}

// A hand-built Q4_0 block: byte 0 = 0x1E holds element 0 (0xE - 8 = 6) and element 16 (1 - 8 = -7).
TEST(Quantize, q4_0_nibble_order_is_low_first_half_high_second_half) {
  BlockQ4_0 block{};
  block.d = fp32_to_fp16(0.5f);
  for (auto& q : block.qs) q = 0x88;  // zeros
  block.qs[0] = 0x1E;
  float out[32];
  dequantize_row(GgmlType::q4_0, &block, out, 32);
  EXPECT_EQ(out[0], 3.0f);
  EXPECT_EQ(out[16], -3.5f);
  EXPECT_EQ(out[1], 0.0f);
}

// A hand-built Q6_K block: q = 33 (value +1) everywhere, scales 1..16, d = 0.25. (The NumPy
// reference checks the full bit layout against files with random contents.)
TEST(Quantize, q6_k_scales_apply_to_groups_of_16) {
  BlockQ6_K block{};
  block.d = fp32_to_fp16(0.25f);
  for (int g = 0; g < 16; ++g) block.scales[g] = static_cast<int8_t>(g + 1);
  // q = 33 = 0b100001: low nibble 1, high bits 2.
  for (auto& b : block.ql) b = 0x11;
  for (auto& b : block.qh) b = 0xAA;  // 2 in every 2-bit field
  float out[256];
  dequantize_row(GgmlType::q6_k, &block, out, 256);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(out[e], 0.25f * static_cast<float>(e / 16 + 1)) << e;
}

TEST(Kernels, every_dot_product_approximates_the_exact_one) {
  const KernelSet& set = scalar_kernels();
  for (GgmlType type : kWeightTypes) {
    const std::vector<float> w = random_row(512, 21);
    const std::vector<float> x = random_row(512, 22);
    std::vector<float> w_back(w.size());
    const auto bytes = quantized(type, w);
    dequantize_row(type, bytes.data(), w_back.data(), 512);
    const double expected = exact_dot(w_back, x);
    const double magnitude = std::sqrt(exact_dot(w_back, w_back) * exact_dot(x, x));
    // 8-bit activations add about 1/127 of relative error per element, far less in the sum.
    EXPECT_NEAR(dot(set, type, bytes, x), expected, 0.01 * magnitude) << ggml_type_name(type);
    EXPECT_NEAR(dot(float_kernels(), type, bytes, x), expected, 1e-4 * magnitude) << ggml_type_name(type);
  }
}

// The activation row as the integer kernels see it (d * q per element).
std::vector<float> activation_values(ActivationFormat format, const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    switch (format) {
      case ActivationFormat::f32:
        std::memcpy(&out[i], bytes.data() + 4 * i, 4);
        break;
      case ActivationFormat::q8_0: {
        const auto* b = reinterpret_cast<const ActQ8_0*>(bytes.data()) + i / 32;
        out[i] = b->d * static_cast<float>(b->qs[i % 32]);
        break;
      }
      case ActivationFormat::q8_1: {
        const auto* b = reinterpret_cast<const ActQ8_1*>(bytes.data()) + i / 32;
        out[i] = b->d * static_cast<float>(b->qs[i % 32]);
        break;
      }
      case ActivationFormat::q8_k: {
        const auto* b = reinterpret_cast<const ActQ8_K*>(bytes.data()) + i / 256;
        out[i] = b->d * static_cast<float>(b->qs[i % 256]);
        break;
      }
    }
  }
  return out;
}

// The integer kernels against the dequantized weights times the rounded activations they were
// given: the same real number, so any scale, offset or group mixed up shows.
TEST(Kernels, integer_dot_products_equal_dequantized_weights_times_rounded_activations) {
  const KernelSet& set = scalar_kernels();
  for (GgmlType type : kWeightTypes) {
    const auto geometry = ggml_type_info(static_cast<uint32_t>(type));
    for (int64_t n : {256, 512, 768}) {
      if (geometry->block_elements == 32 && n == 768) n = 288;  // rows that only 32-blocks fit
      for (uint64_t seed = 0; seed < 8; ++seed) {
        const std::vector<float> w = random_row(n, 300 + seed, 0.5f + static_cast<float>(seed));
        const std::vector<float> x = random_row(n, 400 + seed, 1.0f + static_cast<float>(seed % 3));
        const auto bytes = quantized(type, w);
        std::vector<float> w_back(w.size());
        dequantize_row(type, bytes.data(), w_back.data(), n);
        const ActivationFormat format = set.activation_format_for(type);
        std::vector<uint8_t> activation(activation_row_bytes(format, n));
        set.quantize_activation(format, x.data(), activation.data(), n);
        const std::vector<float> a = activation_values(format, activation, static_cast<size_t>(n));
        double expected = 0, scale = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          expected += static_cast<double>(w_back[i]) * a[i];
          scale += std::fabs(static_cast<double>(w_back[i]) * a[i]);
        }
        EXPECT_NEAR(set.dot_for(type)(n, bytes.data(), activation.data()), expected, 1e-5 * scale)
            << ggml_type_name(type) << " n=" << n << " seed=" << seed;
      }
    }
  }
}

// The SIMD sets this CPU runs.
std::vector<const KernelSet*> simd_sets() {
  std::vector<const KernelSet*> sets;
  for (const KernelSet* set : {avx2_kernels(), avx512_kernels()}) {
    if (set != nullptr) sets.push_back(set);
  }
  return sets;
}

// Every kernel a SIMD set has of its own. (Types it has none for use the scalar kernels, which
// would match here by construction; the activation bytes they are fed are checked below.)
TEST(Kernels, simd_matches_scalar_for_every_weight_type_the_set_implements) {
  if (simd_sets().empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (const KernelSet* simd : simd_sets()) {
    SCOPED_TRACE(simd->name);
    for (GgmlType type : kWeightTypes) {
      if (simd->dot_for(type) == scalar_kernels().dot_for(type)) continue;
      for (int64_t n : {256, 512, 2048, 4096}) {
        for (uint64_t seed = 0; seed < 5; ++seed) {
          const std::vector<float> w = random_row(n, seed * 2 + 100, 0.1f + static_cast<float>(seed));
          const std::vector<float> x = random_row(n, seed * 2 + 101, 1.0f + static_cast<float>(seed));
          const auto bytes = quantized(type, w);
          const float scalar = dot(scalar_kernels(), type, bytes, x);
          const float vector = dot(*simd, type, bytes, x);
          // Same integer sums; only float summation order differs.
          EXPECT_NEAR(vector, scalar, 1e-4 * (std::fabs(scalar) + std::sqrt(static_cast<double>(n))))
              << ggml_type_name(type) << " n=" << n << " seed=" << seed;
        }
      }
    }
  }
}

// Packed groups (kPackRows weight rows interleaved in a set's own layout): each row's result is
// its row kernel's up to summation order, and bit for bit the same whatever the number of
// activation rows it is computed with.
TEST(Kernels, packed_groups_match_the_row_kernels_and_do_not_depend_on_the_batch) {
  int checked = 0;
  for (const KernelSet* set : simd_sets()) {
    SCOPED_TRACE(set->name);
    for (GgmlType type : kWeightTypes) {
      if (set->pack_for(type) == nullptr) continue;
      for (int64_t n : {256, 288, 2816}) {
        if (n % ggml_type_info(static_cast<uint32_t>(type))->block_elements != 0) continue;
        const size_t row_bytes = ggml_row_bytes(type, static_cast<uint64_t>(n));
        std::vector<uint8_t> rows(row_bytes * kPackRows), group(rows.size());
        for (int i = 0; i < kPackRows; ++i) {
          const auto row = quantized(type, random_row(n, 900 + static_cast<uint64_t>(i), 0.5f + static_cast<float>(i)));
          std::memcpy(rows.data() + row_bytes * static_cast<size_t>(i), row.data(), row_bytes);
        }
        set->pack_for(type)(rows.data(), row_bytes, n, group.data());
        size_t stride = 0;
        const auto activations = activation_rows(*set, type, n, kMaxPackedDotRows, 950, &stride);
        float alone[kMaxPackedDotRows * kPackRows];
        for (int t = 0; t < kMaxPackedDotRows; ++t) {
          set->packed_for(type)(n, group.data(), activations.data() + stride * static_cast<size_t>(t), stride, 1,
                                alone + kPackRows * t);
          for (int i = 0; i < kPackRows; ++i) {
            const float row = set->dot_for(type)(n, rows.data() + row_bytes * static_cast<size_t>(i),
                                                 activations.data() + stride * static_cast<size_t>(t));
            EXPECT_NEAR(alone[kPackRows * t + i], row, 1e-4 * (std::fabs(row) + std::sqrt(static_cast<double>(n))))
                << ggml_type_name(type) << " n=" << n << " row " << i << " activation " << t;
            ++checked;
          }
        }
        for (int count = 2; count <= kMaxPackedDotRows; ++count) {
          float out[kMaxPackedDotRows * kPackRows];
          set->packed_for(type)(n, group.data(), activations.data(), stride, count, out);
          for (int k = 0; k < count * kPackRows; ++k) {
            EXPECT_EQ(float_to_bits(out[k]), float_to_bits(alone[k]))
                << ggml_type_name(type) << " n=" << n << " count=" << count << " at " << k;
          }
        }
      }
    }
  }
  // The avx512 set packs every quantized type but Q2_K and Q3_K (docs/engine.md).
  if (const KernelSet* set = avx512_kernels()) {
    for (GgmlType type : kWeightTypes) {
      const bool packs = type != GgmlType::f32 && type != GgmlType::f16 && type != GgmlType::bf16 &&
                         type != GgmlType::q2_k && type != GgmlType::q3_k;
      EXPECT_EQ(set->pack_for(type) != nullptr, packs) << ggml_type_name(type);
      EXPECT_EQ(set->packed_for(type) != nullptr, packs) << ggml_type_name(type);
    }
    EXPECT_GT(checked, 0);
  }
}

// A row's result must not depend on the rows it is computed with: every multi-row call gives bit
// for bit the single-row dot product of each row (row lengths with and without partial groups).
TEST(Kernels, multi_row_dot_products_equal_single_row_ones_bit_for_bit) {
  std::vector<const KernelSet*> sets = simd_sets();
  sets.push_back(&scalar_kernels());
  for (const KernelSet* set : sets) {
    SCOPED_TRACE(set->name);
    for (GgmlType type : kWeightTypes) {
      for (int64_t n : {256, 288, 768, 2816}) {
        if (n % ggml_type_info(static_cast<uint32_t>(type))->block_elements != 0) continue;
        const auto weights = quantized(type, random_row(n, 600 + static_cast<uint64_t>(n)));
        size_t stride = 0;
        const auto activations = activation_rows(*set, type, n, kMaxDotRows, 700, &stride);
        for (int count = 1; count <= kMaxDotRows; ++count) {
          float out[kMaxDotRows];
          set->rows_for(type)(n, weights.data(), activations.data(), stride, count, out);
          for (int t = 0; t < count; ++t) {
            const float single = set->dot_for(type)(n, weights.data(), activations.data() + stride * t);
            EXPECT_EQ(float_to_bits(out[t]), float_to_bits(single))
                << ggml_type_name(type) << " n=" << n << " count=" << count << " row " << t;
          }
        }
      }
    }
  }
}

// Float rows may have any length: the vector loops' tails must agree with the scalar path too.
TEST(Kernels, simd_matches_scalar_for_float_rows_of_any_length) {
  if (simd_sets().empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (const KernelSet* simd : simd_sets()) {
    SCOPED_TRACE(simd->name);
    for (GgmlType type : {GgmlType::f32, GgmlType::f16, GgmlType::bf16}) {
      for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 100, 129}) {
        const std::vector<float> w = random_row(n, 300 + static_cast<uint64_t>(n));
        const std::vector<float> x = random_row(n, 400 + static_cast<uint64_t>(n));
        const auto bytes = quantized(type, w);
        EXPECT_NEAR(dot(*simd, type, bytes, x), dot(scalar_kernels(), type, bytes, x), 1e-4 * std::sqrt(n))
            << ggml_type_name(type) << " n=" << n;
      }
    }
    for (GgmlType type : {GgmlType::q8_0, GgmlType::q4_0}) {
      for (int64_t n : {32, 96, 256 + 96, 512}) {
        const std::vector<float> w = random_row(n, 500);
        const std::vector<float> x = random_row(n, 501);
        const auto bytes = quantized(type, w);
        EXPECT_NEAR(dot(*simd, type, bytes, x), dot(scalar_kernels(), type, bytes, x), 1e-4 * std::sqrt(n))
            << ggml_type_name(type) << " n=" << n;
      }
    }
  }
}

// Attention over cache rows: scores and weighted sums of value rows, for f32 and f16 rows, head
// sizes with and without the vector paths, grouped query heads, partial blocks.
TEST(Kernels, simd_attention_matches_scalar) {
  for (const KernelSet* simd : simd_sets()) {
    SCOPED_TRACE(simd->name);
    for (int head_dim : {64, 128, 40}) {
      for (int n_q : {1, 2, 3, 5}) {
        for (int n : {1, 3, 4, 16}) {
          const size_t stride = static_cast<size_t>(head_dim) + 8;  // rows are padded in the cache
          const std::vector<float> rows = random_row(static_cast<int64_t>(stride) * n, 800 + n);
          std::vector<uint16_t> rows16(rows.size());
          for (size_t i = 0; i < rows.size(); ++i) rows16[i] = fp32_to_fp16(rows[i]);
          const std::vector<float> q = random_row(int64_t{n_q} * head_dim, 900 + n_q);
          const std::vector<float> weights = random_row(int64_t{n_q} * 16, 950);
          std::vector<float> expected_scores(static_cast<size_t>(n_q) * 16), scores(expected_scores.size());
          std::vector<float> expected_out = random_row(int64_t{n_q} * head_dim, 990), out = expected_out;
          const std::vector<float> start = expected_out;
          const std::string what =
              "head_dim " + std::to_string(head_dim) + " n_q " + std::to_string(n_q) + " n " + std::to_string(n);
          for (bool half : {false, true}) {
            const void* data = half ? static_cast<const void*>(rows16.data()) : rows.data();
            const auto score = half ? &KernelSet::scores_f16 : &KernelSet::scores_f32;
            const auto accumulate = half ? &KernelSet::accumulate_f16 : &KernelSet::accumulate_f32;
            (scalar_kernels().*score)(data, stride, n, q.data(), n_q, head_dim, 0.125f, expected_scores.data(), 16);
            (simd->*score)(data, stride, n, q.data(), n_q, head_dim, 0.125f, scores.data(), 16);
            for (int g = 0; g < n_q; ++g) {
              for (int p = 0; p < n; ++p) {
                const size_t i = static_cast<size_t>(g) * 16 + p;
                EXPECT_NEAR(scores[i], expected_scores[i], 1e-5 * head_dim) << what << " half " << half;
              }
            }
            expected_out = start;
            out = start;
            (scalar_kernels().*accumulate)(data, stride, n, weights.data(), 16, n_q, head_dim, expected_out.data());
            (simd->*accumulate)(data, stride, n, weights.data(), 16, n_q, head_dim, out.data());
            for (size_t i = 0; i < out.size(); ++i) {
              EXPECT_NEAR(out[i], expected_out[i], 1e-5 * n) << what << " half " << half << " at " << i;
            }
          }
        }
      }
    }
  }
}

// Softmax: every element (tails too) within 1e-6 relative of the scalar set's, 0 where the
// exponential underflows, and the whole summing to 1.
TEST(Kernels, simd_softmax_matches_the_scalar_one) {
  for (const KernelSet* simd : simd_sets()) {
    SCOPED_TRACE(simd->name);
    for (int64_t n : {1, 7, 8, 13, 64, 1000}) {
      std::vector<float> x = random_row(n, 1234 + static_cast<uint64_t>(n), 20.0f);
      x[0] = -200.0f;                         // underflows when there is anything larger
      x[static_cast<size_t>(n) / 2] = 25.0f;  // the maximum, in a vector lane or in the tail
      std::vector<float> expected = x, got = x;
      scalar_kernels().softmax(expected.data(), n);
      simd->softmax(got.data(), n);
      if (n > 1) {
        EXPECT_EQ(got[0], 0.0f);
      }
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(got[i], expected[i], 1e-6 * expected[i] + 1e-37) << i;
        total += got[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-5) << n;
    }
  }
}

// The AVX-512 set's Q8_0 activation layout (kernels_avx512.cc): runs of 8 blocks as 8 scales then
// 8 x 32 quants stored + 128, the rest as ActQ8_0 with quants + 128. Back to plain ActQ8_0 rows.
std::vector<uint8_t> plain_q8_0_from_avx512(const std::vector<uint8_t>& grouped, int64_t n) {
  std::vector<uint8_t> plain(grouped.size());
  const int64_t blocks = n / 32, groups = blocks / 8;
  for (int64_t b = 0; b < blocks; ++b) {
    ActQ8_0 block;
    const uint8_t* quants;
    if (b < groups * 8) {
      const uint8_t* group = grouped.data() + 288 * (b / 8);
      std::memcpy(&block.d, group + 4 * (b % 8), 4);
      quants = group + 32 + 32 * (b % 8);
    } else {
      const uint8_t* tail = grouped.data() + 288 * groups + 36 * (b - groups * 8);
      std::memcpy(&block.d, tail, 4);
      quants = tail + 4;
    }
    for (int i = 0; i < 32; ++i) block.qs[i] = static_cast<int8_t>(quants[i] ^ 0x80);
    std::memcpy(plain.data() + 36 * b, &block, 36);
  }
  return plain;
}

TEST(Kernels, avx512_activation_quantization_has_the_scalar_numbers_in_its_layout) {
  const KernelSet* avx512 = avx512_kernels();
  if (avx512 == nullptr) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  for (int64_t n : {1024, 256 + 96, 64}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      std::vector<float> x = random_row(n, seed, 0.01f + static_cast<float>(seed));
      if (seed == 3) std::fill(x.begin(), x.begin() + 32, 0.0f);  // an all-zero block
      std::vector<uint8_t> a(activation_row_bytes(ActivationFormat::q8_0, n)), b(a.size());
      scalar_kernels().quantize_activation(ActivationFormat::q8_0, x.data(), a.data(), n);
      avx512->quantize_activation(ActivationFormat::q8_0, x.data(), b.data(), n);
      EXPECT_EQ(plain_q8_0_from_avx512(b, n), a) << "n " << n << " seed " << seed;
    }
  }
}

// Every set must write the scalar set's bytes for the formats it shares with it: q8_1 and q8_k in
// every set (the scalar kernels of types a set lacks read them), q8_0 in all but avx512, which lays
// it out its own way (checked above).
TEST(Kernels, simd_activation_quantization_is_byte_identical_to_scalar) {
  if (simd_sets().empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (const KernelSet* simd : simd_sets()) {
    SCOPED_TRACE(simd->name);
    for (ActivationFormat format : {ActivationFormat::q8_0, ActivationFormat::q8_1, ActivationFormat::q8_k}) {
      if (format == ActivationFormat::q8_0 && simd == avx512_kernels()) continue;
      for (uint64_t seed = 0; seed < 20; ++seed) {
        std::vector<float> x = random_row(1024, seed, 0.01f + static_cast<float>(seed));
        if (seed == 3) std::fill(x.begin(), x.begin() + 256, 0.0f);  // an all-zero block
        std::vector<uint8_t> a(activation_row_bytes(format, 1024)), b(a.size());
        scalar_kernels().quantize_activation(format, x.data(), a.data(), 1024);
        simd->quantize_activation(format, x.data(), b.data(), 1024);
        EXPECT_EQ(a, b) << "format " << static_cast<int>(format) << " seed " << seed;
      }
    }
  }
}

TEST(Kernels, q8_1_activation_blocks_carry_the_sum_of_their_quants) {
  const std::vector<float> x = random_row(64, 6);
  ActQ8_1 blocks[2];
  scalar_kernels().quantize_activation(ActivationFormat::q8_1, x.data(), blocks, 64);
  for (const ActQ8_1& block : blocks) {
    int sum = 0;
    for (int8_t q : block.qs) sum += q;
    EXPECT_EQ(block.sum, sum);
    EXPECT_NE(block.d, 0.0f);
  }
}

TEST(Kernels, k_quant_activation_group_sums_match_the_quants) {
  const std::vector<float> x = random_row(256, 5);
  ActQ8_K block;
  scalar_kernels().quantize_activation(ActivationFormat::q8_k, x.data(), &block, 256);
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += block.qs[16 * g + i];
    EXPECT_EQ(block.bsums[g], sum);
  }
}

TEST(Kernels, names_select_sets_and_unknown_names_are_rejected) {
  EXPECT_EQ(kernels_by_name("scalar"), &scalar_kernels());
  EXPECT_EQ(kernels_by_name("float"), &float_kernels());
  EXPECT_EQ(kernels_by_name("auto"), &best_kernels());
  EXPECT_EQ(kernels_by_name("neon"), nullptr);
  EXPECT_EQ(kernels_by_name("avx512"), avx512_kernels());
  if (avx512_kernels() != nullptr) {
    EXPECT_EQ(&best_kernels(), avx512_kernels());
  }
}

}  // namespace
}  // namespace darkbloom::engine::kernels
