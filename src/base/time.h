// Wall-clock time as the store and the wire write it: whole seconds since the Unix epoch. Reading
// the time is the caller's business (an injected net::Clock in the coordinator); this only converts.
#pragma once

#include <chrono>
#include <cstdint>

namespace darkbloom {

inline int64_t unix_seconds(std::chrono::system_clock::time_point at) {
  return std::chrono::duration_cast<std::chrono::seconds>(at.time_since_epoch()).count();
}

// For code whose time is not injected (the stores stamp rows as they write them).
inline int64_t unix_seconds_now() {
  return unix_seconds(std::chrono::system_clock::now());
}

}  // namespace darkbloom
