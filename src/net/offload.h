// Runs CPU-heavy work (parsing and sealing a large request body) on worker threads, so the one
// network thread keeps serving everyone else meanwhile. Bounded: with `max_waiting` bounded calls
// queued or running, run() refuses at once (nullopt) and the caller answers "busy". An exception
// from the work is rethrown in the caller, as if it had run there. With zero threads (unit tests)
// calls run inline, or, after hold(true), wait until run_held() (to test what happens meanwhile).
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>

#include "net/asio.h"

namespace darkbloom::net {

class Offload {
 public:
  Offload(size_t threads, size_t max_waiting)
      : max_waiting_(max_waiting), pool_(threads > 0 ? std::make_unique<asio::thread_pool>(threads) : nullptr) {}
  ~Offload() { stop(); }
  Offload(const Offload&) = delete;
  Offload& operator=(const Offload&) = delete;

  enum class Bound { bounded, unbounded };
  // `function()` on a worker, resuming on the caller's executor with its value; nullopt when the
  // offload is stopped (also while the call waited), or for a bounded call when max_waiting bounded calls are queued or
  // running. Unbounded calls (whose number the caller bounds otherwise) are never refused for
  // that, nor counted.
  template <class Function>
  awaitable<std::optional<std::invoke_result_t<Function>>> run(Function function, Bound bound = Bound::bounded);

  size_t waiting() const { return waiting_.load(); }
  bool stopped() const { return stopped_.load(); }
  // Refuses later calls, skips the work of queued ones (their callers get nullopt) and joins the
  // threads.
  void stop() {
    stopped_ = true;
    if (pool_) pool_->join();
  }

  // Tests, with zero threads: hold(true) keeps calls queued until run_held() runs them.
  void hold(bool on) { hold_ = on; }
  void run_held() {
    auto held = std::move(held_);
    held_.clear();
    for (auto& job : held) job();
  }
  size_t held() const { return held_.size(); }

 private:
  size_t max_waiting_;
  std::atomic<size_t> waiting_{0};
  std::atomic<bool> stopped_{false};
  std::unique_ptr<asio::thread_pool> pool_;  // null: inline (or held)
  bool hold_ = false;
  std::deque<std::function<void()>> held_;
};

template <class Function>
awaitable<std::optional<std::invoke_result_t<Function>>> Offload::run(Function function, Bound bound) {
  using Value = std::invoke_result_t<Function>;
  if (stopped_) co_return std::nullopt;
  if (!pool_ && !hold_) co_return std::optional<Value>(function());
  const bool counted = bound == Bound::bounded;
  if (counted && waiting_.fetch_add(1) >= max_waiting_) {
    waiting_.fetch_sub(1);
    co_return std::nullopt;
  }
  auto executor = co_await asio::this_coro::executor;
  // Live in this coroutine's frame, which stays put while it is suspended below.
  std::optional<Value> result;
  std::exception_ptr failure;
  // Named, not a temporary in the co_await operand: GCC 12 destroys such temporaries twice.
  // (Asio runs it after this coroutine has suspended: were posting to throw, which only an
  // exhausted memory makes it do, the exception would leave io_context::run.)
  auto initiate = [this, &result, &failure, &function, counted, executor](auto handler) {
    // The caller's executor has work outstanding until the answer is back on it.
    auto job = [this, &result, &failure, &function, counted, guard = asio::make_work_guard(executor),
                handler = std::move(handler)]() mutable {
      if (!stopped_) {  // stopping: the answer would be thrown away
        try {
          result.emplace(function());
        } catch (...) {
          failure = std::current_exception();
        }
      }
      if (counted) waiting_.fetch_sub(1);
      asio::post(guard.get_executor(), std::move(handler));
    };
    if (pool_) {
      asio::post(*pool_, std::move(job));
    } else {  // held for a test; std::function needs a copyable callable
      held_.push_back([shared = std::make_shared<decltype(job)>(std::move(job))] { (*shared)(); });
    }
  };
  co_await asio::async_initiate<decltype(use_awaitable), void()>(std::move(initiate), use_awaitable);
  if (failure) std::rethrow_exception(failure);
  co_return result;
}

}  // namespace darkbloom::net
