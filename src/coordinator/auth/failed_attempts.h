// Failed admin-token attempts per address: a few are mistakes, many are someone guessing. Each
// address may fail `burst` times (--max-admin-failures), then once per kRefill; while it is over,
// every admin request from it is refused (429), right token or not, so guessing does not go on.
// Network thread only; at most kMaxAddresses (plus one shared budget) are remembered.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <unordered_map>

#include "net/clock.h"
#include "net/token_bucket.h"

namespace darkbloom::coordinator {

class FailedAttempts {
 public:
  static constexpr std::chrono::seconds kRefill{6};  // one more try every 6 s
  static constexpr size_t kMaxAddresses = 10'000;

  // `burst` failures per address before the throttle; 0 turns it off.
  FailedAttempts(net::Clock& clock, int64_t burst = 10) : clock_(clock), burst_(static_cast<double>(burst)) {}

  // Seconds until `address` may try again; 0 when it may now.
  int wait_seconds(const std::string& address) {
    if (burst_ <= 0) return 0;
    const auto it = budgets_.find(key_for(address));
    if (it == budgets_.end()) return 0;
    const double wait = it->second.seconds_to_next(clock_.now());
    return wait <= 0 ? 0 : std::max(1, static_cast<int>(std::ceil(wait)));
  }
  void failed(const std::string& address) {
    if (burst_ <= 0) return;
    const auto now = clock_.now();
    if (budgets_.size() >= kMaxAddresses && budgets_.count(address) == 0) {
      std::erase_if(budgets_, [now](const auto& entry) { return entry.second.full_by(now); });  // forgotten anyway
    }
    auto it = budgets_.try_emplace(key_for(address), burst_, 1.0 / static_cast<double>(kRefill.count())).first;
    it->second.spend(now);
  }

 private:
  // While the table is full, addresses it does not know share one budget: a flood from many
  // addresses neither grows it nor clears anyone's throttle.
  std::string key_for(const std::string& address) const {
    if (budgets_.size() < kMaxAddresses || budgets_.count(address) != 0) return address;
    return "(others)";
  }

  net::Clock& clock_;
  double burst_;
  std::unordered_map<std::string, net::TokenBucket> budgets_;
};

}  // namespace darkbloom::coordinator
