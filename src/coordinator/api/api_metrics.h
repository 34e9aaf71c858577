// What the coordinator's HTTP side counts for /metrics: requests by route and status class, the
// X-Timing phases and time to first token as histograms, and tokens billed. Owned by the
// Coordinator, which registers these with the other parts' counters (coordinator.cc).
#pragma once

#include <array>
#include <string>

#include "base/metrics.h"
#include "coordinator/api/request_timing.h"

namespace darkbloom::coordinator {

struct ApiMetrics {
  static constexpr std::array<const char*, 7> kPhases{"parse",   "reserve",  "route",   "queue",
                                                      "encrypt", "dispatch", "provider"};

  metrics::CounterFamily requests;  // route, status_class
  std::array<metrics::Histogram, kPhases.size()> phases{
      metrics::Histogram(metrics::latency_buckets()), metrics::Histogram(metrics::latency_buckets()),
      metrics::Histogram(metrics::latency_buckets()), metrics::Histogram(metrics::latency_buckets()),
      metrics::Histogram(metrics::latency_buckets()), metrics::Histogram(metrics::latency_buckets()),
      metrics::Histogram(metrics::latency_buckets())};
  metrics::Histogram time_to_first_token{metrics::latency_buckets()};
  metrics::Counter prompt_tokens;
  metrics::Counter completion_tokens;

  // A request that reached a provider: its phases, and the time from its arrival to the first chunk.
  void record(const RequestTiming& timing) {
    const int64_t us[] = {timing.parse_us,   timing.reserve_us,  timing.route_us,   timing.queue_us,
                          timing.encrypt_us, timing.dispatch_us, timing.provider_us};
    int64_t total = 0;
    for (size_t i = 0; i < phases.size(); ++i) {
      phases[i].observe(static_cast<double>(us[i]) / 1e6);
      total += us[i];
    }
    time_to_first_token.observe(static_cast<double>(total) / 1e6);
  }

  void count_request(std::string_view route, unsigned status) {
    requests.at({{"route", std::string(route)}, {"status_class", std::to_string(status / 100) + "xx"}}).add();
  }
};

}  // namespace darkbloom::coordinator
