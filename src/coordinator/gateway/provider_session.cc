#include "coordinator/gateway/provider_session.h"

namespace darkbloom::coordinator {

bool ProviderSession::serves(const std::string& model) const {
  for (const auto& m : info_.models) {
    if (m.id == model) return true;
  }
  return false;
}

bool ProviderSession::may_log(net::Clock::Time now, uint64_t* suppressed) {
  if (!log_budget_.take(now)) {
    ++log_suppressed_;
    return false;
  }
  *suppressed = log_suppressed_;
  log_suppressed_ = 0;
  return true;
}

bool ProviderSession::take_late_frame(net::Clock::Time now) {
  return late_frames_.take(now);
}

int ProviderSession::sequences_in_flight() const {
  int total = 0;
  for (const auto& [id, attempt] : in_flight_) total += attempt->choices;
  return total;
}

int64_t ProviderSession::queued_tokens() const {
  int64_t total = 0;
  for (const auto& [id, attempt] : in_flight_) total += attempt->max_tokens;
  return total;
}

}  // namespace darkbloom::coordinator
