#include "base/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstring>

namespace darkbloom {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx & (1u << 27)) != 0;
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool ymm_state = (xcr0 & 0x6) == 0x6;                 // SSE and AVX registers saved by the OS
  const bool zmm_state = ymm_state && (xcr0 & 0xE0) == 0xE0;  // AVX-512 registers too
  f.avx = ymm_state && (ecx & (1u << 28)) != 0;
  f.fma = f.avx && (ecx & (1u << 12)) != 0;
  f.f16c = f.avx && (ecx & (1u << 29)) != 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = f.avx && (ebx & (1u << 5)) != 0;
    f.avx512f = zmm_state && (ebx & (1u << 16)) != 0;
    f.avx512bw = f.avx512f && (ebx & (1u << 30)) != 0;
    f.avx512vl = f.avx512f && (ebx & (1u << 31)) != 0;
    f.avx512vnni = f.avx512f && (ecx & (1u << 11)) != 0;
  }
  unsigned max_extended = __get_cpuid_max(0x80000000, nullptr);
  if (max_extended >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      unsigned regs[4];
      __get_cpuid(0x80000002 + i, &regs[0], &regs[1], &regs[2], &regs[3]);
      std::memcpy(brand + 16 * i, regs, 16);
    }
    f.brand = brand;
    const size_t first = f.brand.find_first_not_of(' ');
    f.brand = first == std::string::npos ? "" : f.brand.substr(first);
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  }
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace darkbloom
