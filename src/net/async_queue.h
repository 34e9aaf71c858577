// A queue of values handed from any thread to one coroutine on an Asio executor: push() is
// thread-safe (it posts to the executor), pop_until() suspends until a value arrives or the
// clock reaches a deadline. Carries engine output and provider frames to the coroutine answering
// a client.
#pragma once

#include <deque>
#include <memory>
#include <optional>

#include "net/clock.h"

namespace darkbloom::net {

template <class T>
class AsyncQueue : public std::enable_shared_from_this<AsyncQueue<T>> {
 public:
  AsyncQueue(Executor executor, Clock& clock = system_clock())
      : executor_(executor), clock_(clock), wake_(clock, executor) {}

  // From any thread.
  void push(T value) {
    asio::post(executor_, [self = this->shared_from_this(), value = std::move(value)]() mutable {
      self->push_here(std::move(value));
    });
  }

  // On the executor's thread only (no hop).
  void push_here(T value) {
    items_.push_back(std::move(value));
    wake_.cancel();
  }

  // The next value, or nullopt when the clock reaches `deadline` first.
  awaitable<std::optional<T>> pop_until(Clock::Time deadline) {
    auto self = this->shared_from_this();
    while (items_.empty()) {
      if (clock_.now() >= deadline) co_return std::nullopt;
      wake_.expires_at(deadline);
      co_await wake_.wait();
    }
    T value = std::move(items_.front());
    items_.pop_front();
    co_return value;
  }

  awaitable<T> pop() {
    auto value = co_await pop_until(Clock::Time::max());
    co_return std::move(*value);
  }

  // The next value if one is there, without waiting (on the executor's thread).
  std::optional<T> try_pop() {
    if (items_.empty()) return std::nullopt;
    T value = std::move(items_.front());
    items_.pop_front();
    return value;
  }

  bool empty() const { return items_.empty(); }

 private:
  Executor executor_;
  Clock& clock_;
  Timer wake_;
  std::deque<T> items_;
};

}  // namespace darkbloom::net
