#include "engine/kernels/kernel_set.h"

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "base/cpu_features.h"

namespace darkbloom::engine::kernels {

// Defined in kernels_avx2.cc, which is compiled with AVX2/FMA/F16C enabled; calling into it is
// only safe after the CPU check below.
const KernelSet* avx2_kernel_set_unchecked();
// Defined in kernels_avx512.cc (AVX-512 F/BW/VL/VNNI enabled there).
const KernelSet* avx512_kernel_set_unchecked();

namespace {

// The function a set keeps for a weight type (nullptr if none).
template <class Fn>
Fn for_type(GgmlType type, std::initializer_list<std::pair<GgmlType, Fn>> table) {
  for (const auto& [t, fn] : table) {
    if (t == type) return fn;
  }
  throw std::invalid_argument("no dot product for tensor type " + std::string(ggml_type_name(type)));
}

}  // namespace

VecDotFn KernelSet::dot_for(GgmlType weight_type) const {
  const VecDotFn fn = for_type<VecDotFn>(weight_type, {{GgmlType::f32, dot_f32},
                                                       {GgmlType::f16, dot_f16},
                                                       {GgmlType::bf16, dot_bf16},
                                                       {GgmlType::q8_0, dot_q8_0},
                                                       {GgmlType::q4_0, dot_q4_0},
                                                       {GgmlType::q4_k, dot_q4_k},
                                                       {GgmlType::q6_k, dot_q6_k},
                                                       {GgmlType::q4_1, dot_q4_1},
                                                       {GgmlType::q5_0, dot_q5_0},
                                                       {GgmlType::q5_1, dot_q5_1},
                                                       {GgmlType::iq4_nl, dot_iq4_nl},
                                                       {GgmlType::q2_k, dot_q2_k},
                                                       {GgmlType::q3_k, dot_q3_k},
                                                       {GgmlType::q5_k, dot_q5_k},
                                                       {GgmlType::iq4_xs, dot_iq4_xs}});
  return fn != nullptr || float_activations || this == &scalar_kernels() ? fn : scalar_kernels().dot_for(weight_type);
}

DotRowsFn KernelSet::rows_for(GgmlType weight_type) const {
  const DotRowsFn fn = for_type<DotRowsFn>(weight_type, {{GgmlType::f32, rows_f32},
                                                         {GgmlType::f16, rows_f16},
                                                         {GgmlType::bf16, rows_bf16},
                                                         {GgmlType::q8_0, rows_q8_0},
                                                         {GgmlType::q4_0, rows_q4_0},
                                                         {GgmlType::q4_k, rows_q4_k},
                                                         {GgmlType::q6_k, rows_q6_k},
                                                         {GgmlType::q4_1, rows_q4_1},
                                                         {GgmlType::q5_0, rows_q5_0},
                                                         {GgmlType::q5_1, rows_q5_1},
                                                         {GgmlType::iq4_nl, rows_iq4_nl},
                                                         {GgmlType::q2_k, rows_q2_k},
                                                         {GgmlType::q3_k, rows_q3_k},
                                                         {GgmlType::q5_k, rows_q5_k},
                                                         {GgmlType::iq4_xs, rows_iq4_xs}});
  return fn != nullptr || float_activations || this == &scalar_kernels() ? fn : scalar_kernels().rows_for(weight_type);
}

PackRowsFn KernelSet::pack_for(GgmlType weight_type) const {
  switch (weight_type) {
    case GgmlType::q8_0:
      return pack_q8_0;
    case GgmlType::q4_0:
      return pack_q4_0;
    case GgmlType::q5_0:
      return pack_q5_0;
    case GgmlType::q4_1:
      return pack_q4_1;
    case GgmlType::q5_1:
      return pack_q5_1;
    case GgmlType::iq4_nl:
      return pack_iq4_nl;
    case GgmlType::q4_k:
      return pack_q4_k;
    case GgmlType::q5_k:
      return pack_q5_k;
    case GgmlType::q6_k:
      return pack_q6_k;
    case GgmlType::iq4_xs:
      return pack_iq4_xs;
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
    case GgmlType::q5_0:
      return packed_q5_0;
    case GgmlType::q4_1:
      return packed_q4_1;
    case GgmlType::q5_1:
      return packed_q5_1;
    case GgmlType::iq4_nl:
      return packed_iq4_nl;
    case GgmlType::q4_k:
      return packed_q4_k;
    case GgmlType::q5_k:
      return packed_q5_k;
    case GgmlType::q6_k:
      return packed_q6_k;
    case GgmlType::iq4_xs:
      return packed_iq4_xs;
    default:
      return nullptr;
  }
}

void KernelSet::quantize_activation(ActivationFormat format, const float* src, void* dst, int64_t n) const {
  switch (format) {
    case ActivationFormat::f32:
      quantize_activation_row(format, src, dst, n);
      return;
    case ActivationFormat::q8_1:
      if (quantize_q8_1 != nullptr) {
        quantize_q8_1(src, dst, n);
      } else {
        quantize_activation_row(format, src, dst, n);
      }
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
