// A queue of values handed from any thread to one coroutine on an Asio executor: push() is
// thread-safe (it posts to the executor), pop() suspends until a value arrives or a deadline
// passes. Used to carry engine output and provider frames to the coroutine answering a client.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "http/asio.h"

namespace darkbloom::http {

template <class T>
class AsyncQueue : public std::enable_shared_from_this<AsyncQueue<T>> {
 public:
  explicit AsyncQueue(net::any_io_executor executor) : executor_(executor), wake_(executor) {}

  // From any thread.
  void push(T value) {
    net::post(executor_, [self = this->shared_from_this(), value = std::move(value)]() mutable {
      self->push_here(std::move(value));
    });
  }

  // On the executor's thread only (no hop).
  void push_here(T value) {
    items_.push_back(std::move(value));
    wake_.cancel();
  }

  // The next value, or nullopt when `deadline` passes first.
  awaitable<std::optional<T>> pop_until(std::chrono::steady_clock::time_point deadline) {
    auto self = this->shared_from_this();
    while (items_.empty()) {
      if (std::chrono::steady_clock::now() >= deadline) co_return std::nullopt;
      wake_.expires_at(deadline);
      co_await wake_.async_wait(as_tuple_awaitable);
    }
    T value = std::move(items_.front());
    items_.pop_front();
    co_return value;
  }

  awaitable<T> pop() {
    auto value = co_await pop_until(std::chrono::steady_clock::time_point::max());
    co_return std::move(*value);
  }

  bool empty() const { return items_.empty(); }

 private:
  net::any_io_executor executor_;
  net::steady_timer wake_;
  std::deque<T> items_;
};

}  // namespace darkbloom::http
