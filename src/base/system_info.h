// Facts about the machine that sizing decisions need (memory today; more as diagnostics grow).
#pragma once

#include <cstdint>

namespace darkbloom {

// Installed physical memory in bytes; 0 when unknown.
uint64_t physical_memory_bytes();

// Raises this process's open-file limit (RLIMIT_NOFILE) to its hard limit and returns the limit
// now in force (0 when unknown). Servers size their connection caps from it.
uint64_t raise_descriptor_limit();

}  // namespace darkbloom
