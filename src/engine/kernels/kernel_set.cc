#include "engine/kernels/kernel_set.h"

#include <stdexcept>
#include <string>

#include "base/cpu_features.h"

namespace darkbloom::engine::kernels {

// Defined in kernels_avx2.cc, which is compiled with AVX2/FMA/F16C enabled; calling into it is
// only safe after the CPU check below.
const KernelSet* avx2_kernel_set_unchecked();
// Defined in kernels_avx512.cc (AVX-512 F/BW/VL/VNNI enabled there).
const KernelSet* avx512_kernel_set_unchecked();

VecDotFn KernelSet::dot_for(GgmlType weight_type) const {
  switch (weight_type) {
    case GgmlType::f32:
      return dot_f32;
    case GgmlType::f16:
      return dot_f16;
    case GgmlType::bf16:
      return dot_bf16;
    case GgmlType::q8_0:
      return dot_q8_0;
    case GgmlType::q4_0:
      return dot_q4_0;
    case GgmlType::q4_k:
      return dot_q4_k;
    case GgmlType::q6_k:
      return dot_q6_k;
    default:
      throw std::invalid_argument("no dot product for tensor type " + std::string(ggml_type_name(weight_type)));
  }
}

DotRowsFn KernelSet::rows_for(GgmlType weight_type) const {
  switch (weight_type) {
    case GgmlType::f32:
      return rows_f32;
    case GgmlType::f16:
      return rows_f16;
    case GgmlType::bf16:
      return rows_bf16;
    case GgmlType::q8_0:
      return rows_q8_0;
    case GgmlType::q4_0:
      return rows_q4_0;
    case GgmlType::q4_k:
      return rows_q4_k;
    case GgmlType::q6_k:
      return rows_q6_k;
    default:
      throw std::invalid_argument("no dot product for tensor type " + std::string(ggml_type_name(weight_type)));
  }
}

PackRowsFn KernelSet::pack_for(GgmlType weight_type) const {
  switch (weight_type) {
    case GgmlType::q8_0:
      return pack_q8_0;
    case GgmlType::q4_0:
      return pack_q4_0;
    default:
      return nullptr;
  }
}

PackedDotFn KernelSet::packed_for(GgmlType weight_type) const {
  switch (weight_type) {
    case GgmlType::q8_0:
      return packed_q8_0;
    case GgmlType::q4_0:
      return packed_q4_0;
    default:
      return nullptr;
  }
}

void KernelSet::quantize_activation(ActivationFormat format, const float* src, void* dst, int64_t n) const {
  switch (format) {
    case ActivationFormat::f32:
      quantize_activation_row(format, src, dst, n);
      return;
    case ActivationFormat::q8_0:
      quantize_q8_0(src, dst, n);
      return;
    case ActivationFormat::q8_k:
      quantize_q8_k(src, dst, n);
      return;
  }
}

const KernelSet* avx2_kernels() {
#if defined(__x86_64__)
  const CpuFeatures& cpu = cpu_features();
  return cpu.avx2 && cpu.fma && cpu.f16c ? avx2_kernel_set_unchecked() : nullptr;
#else
  return nullptr;
#endif
}

const KernelSet* avx512_kernels() {
#if defined(__x86_64__)
  const CpuFeatures& cpu = cpu_features();
  const bool avx512 = cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512vnni;
  return avx512 && avx2_kernels() != nullptr ? avx512_kernel_set_unchecked() : nullptr;
#else
  return nullptr;
#endif
}

const KernelSet& best_kernels() {
  if (const KernelSet* set = avx512_kernels()) return *set;
  if (const KernelSet* set = avx2_kernels()) return *set;
  return scalar_kernels();
}

const KernelSet* kernels_by_name(std::string_view name) {
  if (name == "auto") return &best_kernels();
  if (name == "scalar") return &scalar_kernels();
  if (name == "avx2") return avx2_kernels();
  if (name == "avx512") return avx512_kernels();
  if (name == "float") return &float_kernels();
  return nullptr;
}

std::vector<std::string_view> available_kernel_names() {
  std::vector<std::string_view> names{"scalar"};
  if (avx2_kernels() != nullptr) names.push_back("avx2");
  if (avx512_kernels() != nullptr) names.push_back("avx512");
  return names;
}

}  // namespace darkbloom::engine::kernels
