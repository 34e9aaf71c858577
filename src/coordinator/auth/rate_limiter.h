// Request limits per account (SPEC §1): a token bucket of requests (default 20 per second, burst
// 40) and a cap on requests in flight (default 64), each 0 for unlimited; an admin can set an
// account's own. Network thread only. A refusal says when to retry, and every decision carries the
// x-ratelimit-* headers OpenAI clients read.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/clock.h"
#include "net/token_bucket.h"

namespace darkbloom::coordinator {

// requests_per_second 0: no rate limit (burst then means nothing); burst is at least 1.
struct RateLimits {
  int64_t requests_per_second = 20;
  int64_t burst = 40;
  int64_t max_concurrent = 64;
};

class RateLimiter {
 public:
  RateLimiter(net::Clock& clock, RateLimits defaults) : clock_(clock), defaults_(defaults) {}

  // An account's own limits, replacing the defaults for it.
  void set(const std::string& account, RateLimits limits);
  RateLimits limits_of(const std::string& account) const;

  // Holds one of the account's places in flight until destroyed.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(std::shared_ptr<int64_t> in_flight) : in_flight_(std::move(in_flight)) { ++*in_flight_; }
    Ticket(Ticket&&) = default;
    Ticket& operator=(Ticket&& other) noexcept {
      if (this != &other) {
        release();
        in_flight_ = std::move(other.in_flight_);
      }
      return *this;
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { release(); }

   private:
    void release() {
      if (in_flight_) --*in_flight_;
      in_flight_.reset();
    }

    std::shared_ptr<int64_t> in_flight_;
  };

  struct Decision {
    bool allowed = false;
    std::string reason;                                        // when refused
    int retry_after_seconds = 0;                               // when refused
    std::vector<std::pair<std::string, std::string>> headers;  // x-ratelimit-*; empty when unlimited
    Ticket ticket;                                             // when allowed
  };
  // Takes a request from the account's bucket and a place in flight, or says why not.
  Decision admit(const std::string& account);

 private:
  struct Account {
    std::optional<net::TokenBucket> bucket;  // made (full) for these limits; again when they change
    RateLimits bucket_limits;
    std::shared_ptr<int64_t> in_flight = std::make_shared<int64_t>(0);
  };

  net::Clock& clock_;
  RateLimits defaults_;
  std::unordered_map<std::string, RateLimits> overrides_;
  std::unordered_map<std::string, Account> accounts_;  // accounts that made requests (authenticated)
};

}  // namespace darkbloom::coordinator
