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
    refill(it->second);
    if (it->second.left >= 1) return 0;
    return std::max(1, static_cast<int>(std::ceil((1 - it->second.left) * static_cast<double>(kRefill.count()))));
  }
  void failed(const std::string& address) {
    if (burst_ <= 0) return;
    if (budgets_.size() >= kMaxAddresses && budgets_.count(address) == 0) {
      const auto now = clock_.now();
      const double burst = burst_;
      std::erase_if(budgets_, [now, burst](const auto& entry) {  // those that would be full again anyway
        return entry.second.left + std::chrono::duration<double>(now - entry.second.refilled) / kRefill >= burst;
      });
    }
    auto [it, fresh] = budgets_.try_emplace(key_for(address), Budget{burst_, clock_.now()});
    refill(it->second);
    it->second.left = std::max(0.0, it->second.left - 1);
  }

 private:
  struct Budget {
    double left = 0;
    net::Clock::Time refilled{};
  };
  // While the table is full, addresses it does not know share one budget: a flood from many
  // addresses neither grows it nor clears anyone's throttle.
  std::string key_for(const std::string& address) const {
    if (budgets_.size() < kMaxAddresses || budgets_.count(address) != 0) return address;
    return "(others)";
  }
  void refill(Budget& budget) {
    const auto now = clock_.now();
    budget.left = std::min(burst_, budget.left + std::chrono::duration<double>(now - budget.refilled) / kRefill);
    budget.refilled = now;
  }

  net::Clock& clock_;
  double burst_;
  std::unordered_map<std::string, Budget> budgets_;
};

}  // namespace darkbloom::coordinator
