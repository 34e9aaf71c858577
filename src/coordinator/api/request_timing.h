// Per-phase timing of one request, reported to the client as the X-Timing header: a JSON
// object of integer microseconds.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace darkbloom::coordinator {

struct RequestTiming {
  int64_t parse_us = 0;     // body read → validated, key checked
  int64_t reserve_us = 0;   // credit reservation
  int64_t route_us = 0;     // choosing a provider
  int64_t queue_us = 0;     // waiting for capacity
  int64_t encrypt_us = 0;   // sealing the body to the provider
  int64_t dispatch_us = 0;  // handing the sealed request to the provider's connection
  int64_t provider_us = 0;  // dispatch → first chunk

  std::string header() const {
    return fmt::format(
        R"({{"parse_us":{},"reserve_us":{},"route_us":{},"queue_us":{},"encrypt_us":{},"dispatch_us":{},"provider_us":{}}})",
        parse_us, reserve_us, route_us, queue_us, encrypt_us, dispatch_us, provider_us);
  }
};

}  // namespace darkbloom::coordinator
