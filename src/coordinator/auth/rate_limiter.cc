#include "coordinator/auth/rate_limiter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace darkbloom::coordinator {
namespace {

// "1s", "250ms": how x-ratelimit-reset-requests writes a duration.
std::string duration_text(double seconds) {
  if (seconds >= 1) return fmt::format("{}s", static_cast<int64_t>(std::ceil(seconds)));
  return fmt::format("{}ms", static_cast<int64_t>(std::ceil(seconds * 1000)));
}

}  // namespace

void RateLimiter::set(const std::string& account, RateLimits limits) {
  overrides_[account] = limits;
}

RateLimits RateLimiter::limits_of(const std::string& account) const {
  const auto it = overrides_.find(account);
  return it == overrides_.end() ? defaults_ : it->second;
}

RateLimiter::Decision RateLimiter::admit(const std::string& account) {
  const RateLimits limits = limits_of(account);
  Account& state = accounts_[account];
  const auto now = clock_.now();
  Decision decision;
  const bool rate_limited = limits.requests_per_second > 0;
  const double burst = static_cast<double>(std::max<int64_t>(1, limits.burst));
  const double rate = static_cast<double>(limits.requests_per_second);
  if (rate_limited && (!state.bucket || state.bucket_limits.requests_per_second != limits.requests_per_second ||
                       state.bucket_limits.burst != limits.burst)) {
    state.bucket.emplace(burst, rate);
    state.bucket_limits = limits;
  }
  const bool at_cap = limits.max_concurrent > 0 && *state.in_flight >= limits.max_concurrent;
  const bool out_of_tokens = rate_limited && state.bucket->level(now) < 1;
  if (rate_limited && !at_cap && !out_of_tokens) state.bucket->take(now);
  if (rate_limited) {
    decision.headers = {
        {"x-ratelimit-limit-requests", std::to_string(static_cast<int64_t>(burst))},
        {"x-ratelimit-remaining-requests", std::to_string(static_cast<int64_t>(state.bucket->level(now)))},
        {"x-ratelimit-reset-requests", duration_text(state.bucket->seconds_to_full(now))}};
  }
  if (out_of_tokens) {
    const double wait = state.bucket->seconds_to_next(now);
    decision.reason = fmt::format("Rate limit reached: {} requests per second (burst {}) for this account; retry in {}",
                                  limits.requests_per_second, static_cast<int64_t>(burst), duration_text(wait));
    decision.retry_after_seconds = static_cast<int>(std::max(1.0, std::ceil(wait)));
    return decision;
  }
  if (at_cap) {
    decision.reason = fmt::format("This account has {} requests in flight, its limit; retry when one finishes",
                                  limits.max_concurrent);
    decision.retry_after_seconds = 1;
    return decision;
  }
  decision.allowed = true;
  decision.ticket = Ticket(state.in_flight);
  return decision;
}

}  // namespace darkbloom::coordinator
