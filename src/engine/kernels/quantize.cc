#include "engine/kernels/quantize.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/kernels/fp16.h"
#include "engine/kernels/quant_blocks.h"

namespace darkbloom::engine::kernels {
namespace {

int nearest_int(float x) {
  return static_cast<int>(std::lrintf(x));
}

// The value of largest magnitude, with its sign.
float signed_absmax(const float* x, int n) {
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > std::fabs(best)) best = x[i];
  }
  return best;
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const uint16_t d16 = fp32_to_fp16(amax / 127.0f);
    const float d = fp16_to_fp32(d16);
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d16;
    for (int i = 0; i < 32; ++i) y[b].qs[i] = static_cast<int8_t>(std::clamp(nearest_int(x[i] * inverse), -127, 127));
  }
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    // Scale so the largest-magnitude value maps to -8, the end of the range with the extra step.
    const uint16_t d16 = fp32_to_fp16(signed_absmax(x, 32) / -8.0f);
    const float d = fp16_to_fp32(d16);
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d16;
    for (int i = 0; i < 16; ++i) {
      const int lo = std::clamp(nearest_int(x[i] * inverse) + 8, 0, 15);
      const int hi = std::clamp(nearest_int(x[i + 16] * inverse) + 8, 0, 15);
      y[b].qs[i] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

// The scales and mins of the affine K-quants (Q2_K, Q4_K, Q5_K): each group of `size` values
// spans its range (zero included, so mins stay non-negative) in `levels` steps; the steps and
// minus the minimums are stored as integers up to `max_code` times two fp16 super-scales.
struct GroupScales {
  uint16_t d16 = 0, dmin16 = 0;
  float d = 0, dmin = 0;
  uint8_t scales[16] = {}, mins[16] = {};
};

GroupScales group_scales(const float* x, int groups, int size, int levels, int max_code) {
  float steps[16], mins[16];
  for (int g = 0; g < groups; ++g) {
    float lo = 0.0f, hi = 0.0f;
    for (int i = 0; i < size; ++i) {
      lo = std::min(lo, x[size * g + i]);
      hi = std::max(hi, x[size * g + i]);
    }
    steps[g] = (hi - lo) / static_cast<float>(levels - 1);
    mins[g] = -lo;
  }
  GroupScales out;
  out.d16 = fp32_to_fp16(*std::max_element(steps, steps + groups) / static_cast<float>(max_code));
  out.dmin16 = fp32_to_fp16(*std::max_element(mins, mins + groups) / static_cast<float>(max_code));
  out.d = fp16_to_fp32(out.d16);
  out.dmin = fp16_to_fp32(out.dmin16);
  for (int g = 0; g < groups; ++g) {
    out.scales[g] = static_cast<uint8_t>(out.d > 0 ? std::clamp(nearest_int(steps[g] / out.d), 0, max_code) : 0);
    out.mins[g] = static_cast<uint8_t>(out.dmin > 0 ? std::clamp(nearest_int(mins[g] / out.dmin), 0, max_code) : 0);
  }
  return out;
}

// The quant of x in a group with stored scale and min codes.
int affine_quant(float x, const GroupScales& s, int g, int levels) {
  const float step = s.d * s.scales[g];
  const float offset = s.dmin * s.mins[g];
  return step > 0 ? std::clamp(nearest_int((x + offset) / step), 0, levels - 1) : 0;
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    const GroupScales s = group_scales(x, 8, 32, 16, 63);
    y[b].d = s.d16;
    y[b].dmin = s.dmin16;
    pack_q4_k_scales(s.scales, s.mins, y[b].scales);
    uint8_t q[256];
    for (int e = 0; e < 256; ++e) q[e] = static_cast<uint8_t>(affine_quant(x[e], s, e / 32, 16));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        y[b].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float group_scales[16];
    float max_abs_scale = 0.0f;
    for (int g = 0; g < 16; ++g) {
      group_scales[g] = signed_absmax(x + 16 * g, 16) / -32.0f;
      max_abs_scale = std::max(max_abs_scale, std::fabs(group_scales[g]));
    }
    y[b].d = fp32_to_fp16(max_abs_scale / 127.0f);
    const float d = fp16_to_fp32(y[b].d);
    uint8_t q[256];
    for (int g = 0; g < 16; ++g) {
      const int sc = d > 0 ? std::clamp(nearest_int(group_scales[g] / d), -127, 127) : 0;
      y[b].scales[g] = static_cast<int8_t>(sc);
      const float step = d * static_cast<float>(sc);
      for (int i = 0; i < 16; ++i) {
        const int v = step != 0.0f ? std::clamp(nearest_int(x[16 * g + i] / step), -32, 31) : 0;
        q[16 * g + i] = static_cast<uint8_t>(v + 32);
      }
    }
    for (int h = 0; h < 2; ++h) {
      uint8_t* ql = y[b].ql + 64 * h;
      uint8_t* qh = y[b].qh + 32 * h;
      const uint8_t* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((qq[l] & 0x0F) | ((qq[l + 64] & 0x0F) << 4));
        ql[l + 32] = static_cast<uint8_t>((qq[l + 32] & 0x0F) | ((qq[l + 96] & 0x0F) << 4));
        qh[l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                                     ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, y += 32) {
    const float d = fp16_to_fp32(x[b].d);
    for (int i = 0; i < 32; ++i) y[i] = d * x[b].qs[i];
  }
}

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, y += 32) {
    const float d = fp16_to_fp32(x[b].d);
    for (int i = 0; i < 16; ++i) {
      y[i] = d * static_cast<float>((x[b].qs[i] & 0x0F) - 8);
      y[i + 16] = d * static_cast<float>((x[b].qs[i] >> 4) - 8);
    }
  }
}

void dequantize_q4_k(const BlockQ4_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, y += 256) {
    const float d = fp16_to_fp32(x[b].d);
    const float dmin = fp16_to_fp32(x[b].dmin);
    uint8_t scales[8], mins[8];
    unpack_q4_k_scales(x[b].scales, scales, mins);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = x[b].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d * scales[2 * c] * (q[l] & 0x0F) - dmin * mins[2 * c];
        y[64 * c + 32 + l] = d * scales[2 * c + 1] * (q[l] >> 4) - dmin * mins[2 * c + 1];
      }
    }
  }
}

void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, y += 256) {
    const float d = fp16_to_fp32(x[b].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[b].ql + 64 * h;
      const uint8_t* qh = x[b].qh + 32 * h;
      const int8_t* sc = x[b].scales + 8 * h;
      float* out = y + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * sc[s] * q0;
        out[l + 32] = d * sc[s + 2] * q1;
        out[l + 64] = d * sc[s + 4] * q2;
        out[l + 96] = d * sc[s + 6] * q3;
      }
    }
  }
}

// The 32 quants of a 4- or 5-bit block in Q4_0's placement (element i low nibble, i + 16 high
// nibble of byte i); the fifth bits, if any, go to the 32-bit word qh.
void pack_nibbles(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t high = 0;
  for (int i = 0; i < 16; ++i) {
    qs[i] = static_cast<uint8_t>((q[i] & 0x0F) | ((q[i + 16] & 0x0F) << 4));
    high |= static_cast<uint32_t>(q[i] >> 4) << i;
    high |= static_cast<uint32_t>(q[i + 16] >> 4) << (i + 16);
  }
  if (qh != nullptr) {
    for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(high >> (8 * k));
  }
}

// Affine 32-element blocks (Q4_1, Q5_1): value = d * q + m over [min, max], q in [0, levels).
template <class Block>
void quantize_affine(const float* x, Block* y, int64_t n, int levels) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    const float lo = *std::min_element(x, x + 32);
    const float hi = *std::max_element(x, x + 32);
    y[b].d = fp32_to_fp16((hi - lo) / static_cast<float>(levels - 1));
    y[b].m = fp32_to_fp16(lo);
    const float d = fp16_to_fp32(y[b].d);
    const float m = fp16_to_fp32(y[b].m);
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int i = 0; i < 32; ++i)
      q[i] = static_cast<uint8_t>(std::clamp(nearest_int((x[i] - m) * inverse), 0, levels - 1));
    pack_nibbles(q, y[b].qs, fifth_bits(y[b]));
  }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    const uint16_t d16 = fp32_to_fp16(signed_absmax(x, 32) / -16.0f);
    const float d = fp16_to_fp32(d16);
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d16;
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(std::clamp(nearest_int(x[i] * inverse) + 16, 0, 31));
    pack_nibbles(q, y[b].qs, y[b].qh);
  }
}

// Index of the IQ4_NL level nearest to v.
uint8_t nearest_iq4nl(float v) {
  int best = 0;
  for (int k = 1; k < 16; ++k) {
    if (std::fabs(v - kIq4nlValues[k]) < std::fabs(v - kIq4nlValues[best])) best = k;
  }
  return static_cast<uint8_t>(best);
}

// IQ4 levels for `n` values at scale d (the largest magnitude maps to the end of the grid), then
// the scale refitted by least squares for those levels. Returns the refitted scale.
float iq4_levels(const float* x, int n, uint8_t* q) {
  const float d = signed_absmax(x, n) / static_cast<float>(kIq4nlValues[0]);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  float sum_xl = 0.0f, sum_ll = 0.0f;
  for (int i = 0; i < n; ++i) {
    q[i] = nearest_iq4nl(x[i] * inverse);
    const float level = kIq4nlValues[q[i]];
    sum_xl += x[i] * level;
    sum_ll += level * level;
  }
  return sum_ll > 0.0f ? sum_xl / sum_ll : 0.0f;
}

void quantize_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    uint8_t q[32];
    y[b].d = fp32_to_fp16(iq4_levels(x, 32, q));
    pack_nibbles(q, y[b].qs, nullptr);
  }
}

void quantize_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float sub_scales[8];
    for (int j = 0; j < 8; ++j) {
      uint8_t ignored[32];
      sub_scales[j] = iq4_levels(x + 32 * j, 32, ignored);
    }
    // Six-bit signed sub-scales: the one of largest magnitude maps to -32.
    const uint16_t d16 = fp32_to_fp16(signed_absmax(sub_scales, 8) / -32.0f);
    const float d = fp16_to_fp32(d16);
    y[b].d = d16;
    y[b].scales_h = 0;
    std::memset(y[b].scales_l, 0, sizeof(y[b].scales_l));
    for (int j = 0; j < 8; ++j) {
      const int l = d != 0.0f ? std::clamp(nearest_int(sub_scales[j] / d), -32, 31) : 0;
      const int ls = l + 32;
      y[b].scales_l[j / 2] = static_cast<uint8_t>(y[b].scales_l[j / 2] | ((ls & 0x0F) << (4 * (j % 2))));
      y[b].scales_h = static_cast<uint16_t>(y[b].scales_h | ((ls >> 4) << (2 * j)));
      const float step = d * static_cast<float>(l);
      const float inverse = step != 0.0f ? 1.0f / step : 0.0f;
      uint8_t q[32];
      for (int i = 0; i < 32; ++i) q[i] = nearest_iq4nl(x[32 * j + i] * inverse);
      pack_nibbles(q, y[b].qs + 16 * j, nullptr);
    }
  }
}

// Places 256 two-bit values as Q2_K/Q3_K store them: element e in bits 2j of byte 32h + r.
void pack_two_bits(const uint8_t* q, uint8_t* qs) {
  std::memset(qs, 0, 64);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = e % 128 / 32, r = e % 32;
    qs[32 * h + r] = static_cast<uint8_t>(qs[32 * h + r] | ((q[e] & 3) << (2 * j)));
  }
}

void quantize_q2_k(const float* x, BlockQ2_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    const GroupScales s = group_scales(x, 16, 16, 4, 15);
    y[b].d = s.d16;
    y[b].dmin = s.dmin16;
    for (int g = 0; g < 16; ++g) y[b].scales[g] = static_cast<uint8_t>(s.scales[g] | (s.mins[g] << 4));
    uint8_t q[256];
    for (int e = 0; e < 256; ++e) q[e] = static_cast<uint8_t>(affine_quant(x[e], s, e / 16, 4));
    pack_two_bits(q, y[b].qs);
  }
}

void quantize_q3_k(const float* x, BlockQ3_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float group_scales[16];
    for (int g = 0; g < 16; ++g) group_scales[g] = signed_absmax(x + 16 * g, 16) / -4.0f;
    y[b].d = fp32_to_fp16(signed_absmax(group_scales, 16) / -32.0f);
    const float d = fp16_to_fp32(y[b].d);
    uint8_t stored_scales[16];
    uint8_t q[256];
    std::memset(y[b].hmask, 0, sizeof(y[b].hmask));
    for (int g = 0; g < 16; ++g) {
      const int l = d != 0.0f ? std::clamp(nearest_int(group_scales[g] / d), -32, 31) : 0;
      stored_scales[g] = static_cast<uint8_t>(l + 32);
      const float step = d * static_cast<float>(l);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * g + i;
        const int v = step != 0.0f ? std::clamp(nearest_int(x[e] / step), -4, 3) + 4 : 4;  // 0..7
        q[e] = static_cast<uint8_t>(v & 3);
        if (v >= 4) {
          const int h = e / 128, j = e % 128 / 32, r = e % 32;
          y[b].hmask[r] = static_cast<uint8_t>(y[b].hmask[r] | (1 << (4 * h + j)));
        }
      }
    }
    pack_q3_k_scales(stored_scales, y[b].scales);
    pack_two_bits(q, y[b].qs);
  }
}

void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    const GroupScales s = group_scales(x, 8, 32, 32, 63);
    y[b].d = s.d16;
    y[b].dmin = s.dmin16;
    pack_q4_k_scales(s.scales, s.mins, y[b].scales);
    std::memset(y[b].qh, 0, sizeof(y[b].qh));
    std::memset(y[b].qs, 0, sizeof(y[b].qs));
    for (int e = 0; e < 256; ++e) {
      const int j = e / 32, r = e % 32;
      const int q = affine_quant(x[e], s, j, 32);
      y[b].qs[32 * (j / 2) + r] = static_cast<uint8_t>(y[b].qs[32 * (j / 2) + r] | ((q & 0x0F) << (4 * (j % 2))));
      y[b].qh[r] = static_cast<uint8_t>(y[b].qh[r] | ((q >> 4) << j));
    }
  }
}

template <class Block>
void dequantize_affine(const Block* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, y += 32) {
    const float d = fp16_to_fp32(x[b].d);
    const float m = fp16_to_fp32(x[b].m);
    int8_t q[32];
    unpack_32_quants(x[b].qs, fifth_bits(x[b]), q);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]) + m;
  }
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, y += 32) {
    const float d = fp16_to_fp32(x[b].d);
    int8_t q[32];
    unpack_32_quants(x[b].qs, x[b].qh, q);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i] - 16);
  }
}

void dequantize_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, y += 32) {
    const float d = fp16_to_fp32(x[b].d);
    int8_t q[32];
    unpack_32_quants(x[b].qs, nullptr, q);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(kIq4nlValues[q[i]]);
  }
}

void dequantize_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) {
    const float d = fp16_to_fp32(x[b].d);
    for (int j = 0; j < 8; ++j, y += 32) {
      const float step = d * static_cast<float>(iq4_xs_scale(x[b], j));
      int8_t q[32];
      unpack_32_quants(x[b].qs + 16 * j, nullptr, q);
      for (int i = 0; i < 32; ++i) y[i] = step * static_cast<float>(kIq4nlValues[q[i]]);
    }
  }
}

void dequantize_q2_k(const BlockQ2_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, y += 256) {
    const float d = fp16_to_fp32(x[b].d);
    const float dmin = fp16_to_fp32(x[b].dmin);
    int8_t q[256];
    unpack_q2_k_quants(x[b], q);
    for (int e = 0; e < 256; ++e) {
      const uint8_t sc = x[b].scales[e / 16];
      y[e] = d * static_cast<float>(sc & 0x0F) * static_cast<float>(q[e]) - dmin * static_cast<float>(sc >> 4);
    }
  }
}

void dequantize_q3_k(const BlockQ3_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, y += 256) {
    const float d = fp16_to_fp32(x[b].d);
    uint8_t scales[16];
    unpack_q3_k_scales(x[b].scales, scales);
    int8_t q[256];
    unpack_q3_k_quants(x[b], q);
    for (int e = 0; e < 256; ++e) y[e] = d * static_cast<float>(scales[e / 16] - 32) * static_cast<float>(q[e]);
  }
}

void dequantize_q5_k(const BlockQ5_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, y += 256) {
    const float d = fp16_to_fp32(x[b].d);
    const float dmin = fp16_to_fp32(x[b].dmin);
    uint8_t scales[8], mins[8];
    unpack_q4_k_scales(x[b].scales, scales, mins);
    int8_t q[256];
    unpack_q5_k_quants(x[b], q);
    for (int e = 0; e < 256; ++e) y[e] = d * scales[e / 32] * static_cast<float>(q[e]) - dmin * mins[e / 32];
  }
}

// 32 activations as int8 at scale amax / 127.
void quantize_activation_block(const float* src, float* d, int8_t* qs) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(src[i]));
  const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
  *d = amax / 127.0f;
  for (int i = 0; i < 32; ++i) qs[i] = static_cast<int8_t>(nearest_int(src[i] * inverse));
}

[[noreturn]] void unsupported(GgmlType type) {
  throw std::invalid_argument("no conversion for tensor type " + std::string(ggml_type_name(type)));
}

}  // namespace

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case GgmlType::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::f16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_fp16(src[i]);
      return;
    }
    case GgmlType::bf16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_bf16(src[i]);
      return;
    }
    case GgmlType::q8_0:
      quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), n);
      return;
    case GgmlType::q4_0:
      quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), n);
      return;
    case GgmlType::q4_k:
      quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), n);
      return;
    case GgmlType::q6_k:
      quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), n);
      return;
    case GgmlType::q4_1:
      quantize_affine(src, static_cast<BlockQ4_1*>(dst), n, 16);
      return;
    case GgmlType::q5_0:
      quantize_q5_0(src, static_cast<BlockQ5_0*>(dst), n);
      return;
    case GgmlType::q5_1:
      quantize_affine(src, static_cast<BlockQ5_1*>(dst), n, 32);
      return;
    case GgmlType::iq4_nl:
      quantize_iq4_nl(src, static_cast<BlockIQ4_NL*>(dst), n);
      return;
    case GgmlType::q2_k:
      quantize_q2_k(src, static_cast<BlockQ2_K*>(dst), n);
      return;
    case GgmlType::q3_k:
      quantize_q3_k(src, static_cast<BlockQ3_K*>(dst), n);
      return;
    case GgmlType::q5_k:
      quantize_q5_k(src, static_cast<BlockQ5_K*>(dst), n);
      return;
    case GgmlType::iq4_xs:
      quantize_iq4_xs(src, static_cast<BlockIQ4_XS*>(dst), n);
      return;
    default:
      unsupported(type);
  }
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::f16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(in[i]);
      return;
    }
    case GgmlType::bf16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(in[i]);
      return;
    }
    case GgmlType::q8_0:
      dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
      return;
    case GgmlType::q4_0:
      dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, n);
      return;
    case GgmlType::q4_k:
      dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, n);
      return;
    case GgmlType::q6_k:
      dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, n);
      return;
    case GgmlType::q4_1:
      dequantize_affine(static_cast<const BlockQ4_1*>(src), dst, n);
      return;
    case GgmlType::q5_0:
      dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, n);
      return;
    case GgmlType::q5_1:
      dequantize_affine(static_cast<const BlockQ5_1*>(src), dst, n);
      return;
    case GgmlType::iq4_nl:
      dequantize_iq4_nl(static_cast<const BlockIQ4_NL*>(src), dst, n);
      return;
    case GgmlType::q2_k:
      dequantize_q2_k(static_cast<const BlockQ2_K*>(src), dst, n);
      return;
    case GgmlType::q3_k:
      dequantize_q3_k(static_cast<const BlockQ3_K*>(src), dst, n);
      return;
    case GgmlType::q5_k:
      dequantize_q5_k(static_cast<const BlockQ5_K*>(src), dst, n);
      return;
    case GgmlType::iq4_xs:
      dequantize_iq4_xs(static_cast<const BlockIQ4_XS*>(src), dst, n);
      return;
    default:
      unsupported(type);
  }
}

ActivationFormat activation_format(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::q8_0:
      return ActivationFormat::q8_0;
    case GgmlType::q4_0:
    case GgmlType::q4_1:
    case GgmlType::q5_0:
    case GgmlType::q5_1:
    case GgmlType::iq4_nl:
      return ActivationFormat::q8_1;
    case GgmlType::q2_k:
    case GgmlType::q3_k:
    case GgmlType::q4_k:
    case GgmlType::q5_k:
    case GgmlType::q6_k:
    case GgmlType::iq4_xs:
      return ActivationFormat::q8_k;
    default:
      return ActivationFormat::f32;
  }
}

size_t activation_row_bytes(ActivationFormat format, int64_t n) {
  switch (format) {
    case ActivationFormat::f32:
      return static_cast<size_t>(n) * sizeof(float);
    case ActivationFormat::q8_0:
      return static_cast<size_t>(n / 32) * sizeof(ActQ8_0);
    case ActivationFormat::q8_1:
      return static_cast<size_t>(n / 32) * sizeof(ActQ8_1);
    case ActivationFormat::q8_k:
      return static_cast<size_t>(n / 256) * sizeof(ActQ8_K);
  }
  return 0;
}

void quantize_activation_row(ActivationFormat format, const float* src, void* dst, int64_t n) {
  switch (format) {
    case ActivationFormat::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case ActivationFormat::q8_0: {
      auto* out = static_cast<ActQ8_0*>(dst);
      for (int64_t b = 0; b < n / 32; ++b, src += 32) quantize_activation_block(src, &out[b].d, out[b].qs);
      return;
    }
    case ActivationFormat::q8_1: {
      auto* out = static_cast<ActQ8_1*>(dst);
      for (int64_t b = 0; b < n / 32; ++b, src += 32) {
        quantize_activation_block(src, &out[b].d, out[b].qs);
        int sum = 0;
        for (int i = 0; i < 32; ++i) sum += out[b].qs[i];
        out[b].sum = sum;
      }
      return;
    }
    case ActivationFormat::q8_k: {
      auto* out = static_cast<ActQ8_K*>(dst);
      for (int64_t b = 0; b < n / 256; ++b, src += 256) {
        float amax = 0.0f;
        for (int i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(src[i]));
        const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
        out[b].d = amax / 127.0f;
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int i = 0; i < 16; ++i) {
            const int q = nearest_int(src[16 * g + i] * inverse);
            out[b].qs[16 * g + i] = static_cast<int8_t>(q);
            sum += q;
          }
          out[b].bsums[g] = static_cast<int16_t>(sum);
        }
      }
      return;
    }
  }
}

}  // namespace darkbloom::engine::kernels
