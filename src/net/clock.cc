#include "net/clock.h"

#include <algorithm>
#include <vector>

namespace darkbloom::net {

void SystemClock::arm(Timer& timer) {
  timer.wake_.expires_at(timer.deadline_);
}

Clock& system_clock() {
  static SystemClock clock;
  return clock;
}

void ManualClock::arm(Timer& timer) {
  // Only advance() wakes it.
  timer.wake_.expires_at(asio::steady_timer::time_point::max());
  armed_.insert(&timer);
}

void ManualClock::advance(Duration by) {
  now_ += by;
  std::vector<Timer*> due;
  for (Timer* timer : armed_) {
    if (timer->deadline_ <= now_) due.push_back(timer);
  }
  // Earliest deadline first, so that their waiters resume in the order real time would wake them.
  std::sort(due.begin(), due.end(), [](const Timer* a, const Timer* b) { return a->deadline_ < b->deadline_; });
  for (Timer* timer : due) {
    armed_.erase(timer);
    timer->wake_.cancel();  // the wait re-checks the time and returns true
  }
}

awaitable<bool> Timer::wait() {
  waiting_ = true;
  cancelled_ = false;
  while (!cancelled_ && clock_.now() < deadline_) {
    clock_.arm(*this);
    co_await wake_.async_wait(as_tuple_awaitable);
    clock_.disarm(*this);
  }
  waiting_ = false;
  const bool reached = !cancelled_;
  cancelled_ = false;
  co_return reached;
}

void Timer::cancel() {
  if (!waiting_) return;
  cancelled_ = true;
  wake_.cancel();
}

}  // namespace darkbloom::net
