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

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float scales[8], mins[8];
    for (int j = 0; j < 8; ++j) {
      const float* sub = x + 32 * j;
      float lo = 0.0f, hi = 0.0f;  // the range always includes zero so mins stay non-negative
      for (int i = 0; i < 32; ++i) {
        lo = std::min(lo, sub[i]);
        hi = std::max(hi, sub[i]);
      }
      scales[j] = (hi - lo) / 15.0f;
      mins[j] = -lo;
    }
    const float max_scale = *std::max_element(scales, scales + 8);
    const float max_min = *std::max_element(mins, mins + 8);
    y[b].d = fp32_to_fp16(max_scale / 63.0f);
    y[b].dmin = fp32_to_fp16(max_min / 63.0f);
    const float d = fp16_to_fp32(y[b].d);
    const float dmin = fp16_to_fp32(y[b].dmin);
    uint8_t q_scales[8], q_mins[8];
    for (int j = 0; j < 8; ++j) {
      q_scales[j] = static_cast<uint8_t>(d > 0 ? std::clamp(nearest_int(scales[j] / d), 0, 63) : 0);
      q_mins[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(nearest_int(mins[j] / dmin), 0, 63) : 0);
    }
    pack_q4_k_scales(q_scales, q_mins, y[b].scales);
    uint8_t q[256];
    for (int j = 0; j < 8; ++j) {
      const float step = d * q_scales[j];
      const float offset = dmin * q_mins[j];
      for (int i = 0; i < 32; ++i) {
        q[32 * j + i] =
            static_cast<uint8_t>(step > 0 ? std::clamp(nearest_int((x[32 * j + i] + offset) / step), 0, 15) : 0);
      }
    }
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
    default:
      unsupported(type);
  }
}

ActivationFormat activation_format(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::q8_0:
    case GgmlType::q4_0:
      return ActivationFormat::q8_0;
    case GgmlType::q4_k:
    case GgmlType::q6_k:
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
      for (int64_t b = 0; b < n / 32; ++b, src += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(src[i]));
        const float d = amax / 127.0f;
        const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
        out[b].d = d;
        for (int i = 0; i < 32; ++i) out[b].qs[i] = static_cast<int8_t>(nearest_int(src[i] * inverse));
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
