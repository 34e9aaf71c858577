#include "coordinator/gateway/provider_session.h"

namespace darkbloom::coordinator {

bool ProviderSession::serves(const std::string& model) const {
  for (const auto& m : info_.models) {
    if (m.id == model) return true;
  }
  return false;
}

bool ProviderSession::may_log(net::Clock::Time now, uint64_t* suppressed) {
  if (log_refilled_ == net::Clock::Time{}) log_refilled_ = now;
  const double refill = std::chrono::duration<double>(now - log_refilled_) / kLogRefill;
  log_tokens_ = std::min(kLogBurst, log_tokens_ + refill);
  log_refilled_ = now;
  if (log_tokens_ < 1) {
    ++log_suppressed_;
    return false;
  }
  log_tokens_ -= 1;
  *suppressed = log_suppressed_;
  log_suppressed_ = 0;
  return true;
}

bool ProviderSession::take_late_frame(net::Clock::Time now) {
  if (late_frames_refilled_ == net::Clock::Time{}) late_frames_refilled_ = now;
  const double seconds = std::chrono::duration<double>(now - late_frames_refilled_).count();
  late_frames_left_ = std::min(kLateFrameBurst, late_frames_left_ + seconds * kLateFramesPerSecond);
  late_frames_refilled_ = now;
  if (late_frames_left_ < 1) return false;
  late_frames_left_ -= 1;
  return true;
}

int64_t ProviderSession::queued_tokens() const {
  int64_t total = 0;
  for (const auto& [id, attempt] : in_flight_) total += attempt->max_tokens;
  return total;
}

}  // namespace darkbloom::coordinator
