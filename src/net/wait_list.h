// Coroutines waiting for something another coroutine is doing (a lookup or a hold on its way):
// wait() suspends until wake_all(). Network thread only.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "net/asio.h"
#include "net/clock.h"

namespace darkbloom::net {

class WaitList {
 public:
  explicit WaitList(Clock& clock) : clock_(clock) {}

  // Returns after wake_all() (or after a day, as a backstop).
  awaitable<void> wait() {
    const Executor executor = co_await asio::this_coro::executor;
    auto timer = std::make_shared<Timer>(clock_, executor);
    timer->expires_after(std::chrono::hours(24));
    timers_.push_back(timer);
    co_await timer->wait();
  }
  void wake_all() {
    auto timers = std::move(timers_);
    timers_.clear();
    for (const auto& timer : timers) timer->cancel();
  }
  size_t waiting() const { return timers_.size(); }

 private:
  Clock& clock_;
  std::vector<std::shared_ptr<Timer>> timers_;
};

}  // namespace darkbloom::net
