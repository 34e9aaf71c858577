// A token bucket on a net::Clock: `capacity` tokens, refilled at `per_second`, full at the start.
// The one rate-limiting shape the coordinator uses (request limits, failed admin attempts, a
// provider's log lines and late frames). Not thread-safe: each user keeps it on one thread.
#pragma once

#include <algorithm>
#include <chrono>

#include "net/clock.h"

namespace darkbloom::net {

class TokenBucket {
 public:
  TokenBucket(double capacity, double per_second) : capacity_(capacity), per_second_(per_second), tokens_(capacity) {}

  // Tokens there now, after the refill since the last look.
  double level(Clock::Time now) {
    if (started_)
      tokens_ = std::min(capacity_, tokens_ + std::chrono::duration<double>(now - refilled_).count() * per_second_);
    started_ = true;
    refilled_ = now;
    return tokens_;
  }
  // Takes one token if there is one.
  bool take(Clock::Time now) {
    if (level(now) < 1) return false;
    tokens_ -= 1;
    return true;
  }
  // Takes one whether or not there is one (never below zero).
  void spend(Clock::Time now) { tokens_ = std::max(0.0, level(now) - 1); }
  // Seconds until one token is there; 0 when one is.
  double seconds_to_next(Clock::Time now) { return std::max(0.0, (1 - level(now)) / per_second_); }
  // Seconds until full.
  double seconds_to_full(Clock::Time now) { return (capacity_ - level(now)) / per_second_; }
  // Full again by `now` (without looking, so it can be asked of a const bucket).
  bool full_by(Clock::Time now) const {
    return !started_ || tokens_ + std::chrono::duration<double>(now - refilled_).count() * per_second_ >= capacity_;
  }

 private:
  double capacity_;
  double per_second_;
  double tokens_;
  bool started_ = false;
  Clock::Time refilled_{};
};

}  // namespace darkbloom::net
