// Time as an injected dependency: wall time (for timestamps people read), monotonic time (for
// deadlines and durations) and timers that wait on that monotonic time. `SystemClock` is the
// real one; `ManualClock` stands still until a test advances it, so timeouts, schedules and
// evictions are tested in microseconds without sleeping. Not for the engine's hot loops.
#pragma once

#include <chrono>
#include <set>

#include "net/asio.h"

namespace darkbloom::net {

class Timer;

class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using Time = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;
  virtual WallTime wall_now() const = 0;
  virtual Time now() const = 0;

  // Microseconds since `start`, for per-phase timings.
  int64_t micros_since(Time start) const {
    return std::chrono::duration_cast<std::chrono::microseconds>(now() - start).count();
  }

 private:
  friend class Timer;
  // Makes the timer's wake-up fire no later than when this clock reaches its deadline.
  virtual void arm(Timer& timer) = 0;
  // The timer no longer waits (woken, cancelled or destroyed).
  virtual void disarm(Timer& timer) = 0;
};

// The operating system's clocks; Asio's steady timer does the waiting.
class SystemClock final : public Clock {
 public:
  WallTime wall_now() const override { return std::chrono::system_clock::now(); }
  Time now() const override { return std::chrono::steady_clock::now(); }

 private:
  void arm(Timer& timer) override;
  void disarm(Timer&) override {}
};

// The one real clock, for code that is handed no other (it holds no state).
Clock& system_clock();

// Time that moves only when told. Timers whose deadline is reached by `advance` wake; their
// coroutines then run when the test polls the io_context. Single-threaded, like the code it drives.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(WallTime wall_start = WallTime{} + std::chrono::hours(24 * 365 * 56))
      : wall_start_(wall_start) {}
  WallTime wall_now() const override { return wall_start_ + (now_ - Time{}); }
  Time now() const override { return now_; }
  void advance(Duration by);
  size_t armed_timers() const { return armed_.size(); }

 private:
  void arm(Timer& timer) override;
  void disarm(Timer& timer) override { armed_.erase(&timer); }

  WallTime wall_start_;
  Time now_{std::chrono::hours(1)};  // away from zero, which the code uses as "never"
  std::set<Timer*> armed_;
};

// A one-shot wait on a Clock's monotonic time. Like Asio's steady_timer, except that the
// outcome is a plain bool and cancel() is remembered until the pending wait sees it.
class Timer {
 public:
  Timer(Clock& clock, Executor executor) : clock_(clock), wake_(std::move(executor)) {}
  ~Timer() { clock_.disarm(*this); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void expires_at(Clock::Time deadline) { deadline_ = deadline; }
  void expires_after(Clock::Duration duration) { deadline_ = clock_.now() + duration; }
  Clock::Time expiry() const { return deadline_; }

  // True once the clock reaches the deadline; false when cancel() came first.
  awaitable<bool> wait();
  // Ends a pending wait (which returns false); no effect when nothing waits.
  void cancel();

 private:
  friend class SystemClock;
  friend class ManualClock;

  Clock& clock_;
  asio::steady_timer wake_;
  Clock::Time deadline_{};
  bool waiting_ = false;
  bool cancelled_ = false;
};

}  // namespace darkbloom::net
