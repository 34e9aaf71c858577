// What the CPU can run, read with CPUID (and XGETBV, so features the OS does not save state for
// count as absent). Used to pick compute kernels and reported by diagnostics.
#pragma once

#include <string>

namespace darkbloom {

struct CpuFeatures {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  std::string brand;  // "AMD EPYC ...", empty when unknown
};

// Detected once per process.
const CpuFeatures& cpu_features();

}  // namespace darkbloom
