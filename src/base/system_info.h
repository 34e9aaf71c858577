// Facts about the machine that sizing decisions need (memory today; more as diagnostics grow).
#pragma once

#include <cstdint>

namespace darkbloom {

// Installed physical memory in bytes; 0 when unknown.
uint64_t physical_memory_bytes();

}  // namespace darkbloom
