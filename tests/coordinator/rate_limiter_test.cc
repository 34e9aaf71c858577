// Request limits per account: a token bucket (rate, burst) and a cap on requests in flight, each
// 0 for unlimited, an account's own replacing the defaults; refusals say when to retry. And
// failed admin-token attempts per address.
#include "coordinator/auth/rate_limiter.h"
#include "coordinator/auth/failed_attempts.h"

#include <gtest/gtest.h>

namespace darkbloom::coordinator {
namespace {

using namespace std::chrono_literals;

std::string header(const RateLimiter::Decision& decision, const std::string& name) {
  for (const auto& [key, value] : decision.headers) {
    if (key == name) return value;
  }
  return {};
}

TEST(RateLimiter, a_burst_then_the_rate_then_429_with_when_to_retry) {
  net::ManualClock clock;
  RateLimiter limiter(clock, RateLimits{20, 40, 0});
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(limiter.admit("acct_a").allowed) << i;
  RateLimiter::Decision refused = limiter.admit("acct_a");
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_seconds, 1);
  EXPECT_EQ(header(refused, "x-ratelimit-limit-requests"), "40");
  EXPECT_EQ(header(refused, "x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(header(refused, "x-ratelimit-reset-requests"), "2s");
  EXPECT_TRUE(limiter.admit("acct_b").allowed) << "accounts do not share a bucket";
  clock.advance(100ms);  // 2 requests' worth at 20 per second
  EXPECT_TRUE(limiter.admit("acct_a").allowed);
  EXPECT_TRUE(limiter.admit("acct_a").allowed);
  EXPECT_FALSE(limiter.admit("acct_a").allowed);
}

TEST(RateLimiter, requests_in_flight_are_capped_until_their_tickets_end) {
  net::ManualClock clock;
  RateLimiter limiter(clock, RateLimits{0, 0, 2});
  auto first = limiter.admit("acct_a");
  auto second = limiter.admit("acct_a");
  ASSERT_TRUE(first.allowed && second.allowed);
  auto third = limiter.admit("acct_a");
  EXPECT_FALSE(third.allowed);
  EXPECT_NE(third.reason.find("in flight"), std::string::npos);
  EXPECT_TRUE(third.headers.empty()) << "no rate limit, no rate headers";
  { RateLimiter::Ticket done = std::move(first.ticket); }
  EXPECT_TRUE(limiter.admit("acct_a").allowed);
}

TEST(RateLimiter, an_accounts_own_limits_replace_the_defaults_and_zero_is_unlimited) {
  net::ManualClock clock;
  RateLimiter limiter(clock, RateLimits{1, 1, 1});
  limiter.set("acct_big", RateLimits{0, 0, 0});
  std::vector<RateLimiter::Ticket> held;
  for (int i = 0; i < 500; ++i) {
    auto decision = limiter.admit("acct_big");
    ASSERT_TRUE(decision.allowed);
    held.push_back(std::move(decision.ticket));
  }
  EXPECT_TRUE(limiter.admit("acct_small").allowed);
  EXPECT_FALSE(limiter.admit("acct_small").allowed);
  // A burst of 0 with a rate is a burst of 1, not "unlimited".
  limiter.set("acct_zero_burst", RateLimits{5, 0, 0});
  EXPECT_TRUE(limiter.admit("acct_zero_burst").allowed);
  EXPECT_FALSE(limiter.admit("acct_zero_burst").allowed);
}

TEST(RateLimiter, a_request_refused_for_the_in_flight_cap_costs_no_token) {
  net::ManualClock clock;
  RateLimiter limiter(clock, RateLimits{1, 2, 1});
  auto running = limiter.admit("acct_a");
  ASSERT_TRUE(running.allowed);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.admit("acct_a").allowed);
  { RateLimiter::Ticket done = std::move(running.ticket); }
  EXPECT_TRUE(limiter.admit("acct_a").allowed) << "the one token left was not spent on refusals";
}

TEST(FailedAttempts, an_address_that_keeps_failing_waits_and_others_do_not) {
  net::ManualClock clock;
  FailedAttempts failures(clock);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(failures.wait_seconds("10.0.0.1"), 0) << i;
    failures.failed("10.0.0.1");
  }
  EXPECT_EQ(failures.wait_seconds("10.0.0.1"), FailedAttempts::kRefill.count());
  EXPECT_EQ(failures.wait_seconds("10.0.0.2"), 0);
  clock.advance(FailedAttempts::kRefill);
  EXPECT_EQ(failures.wait_seconds("10.0.0.1"), 0);  // one more try
  failures.failed("10.0.0.1");
  EXPECT_GT(failures.wait_seconds("10.0.0.1"), 0);
  FailedAttempts off(clock, 0);
  for (int i = 0; i < 100; ++i) off.failed("10.0.0.1");
  EXPECT_EQ(off.wait_seconds("10.0.0.1"), 0);
}

}  // namespace
}  // namespace darkbloom::coordinator
