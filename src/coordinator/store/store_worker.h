// Runs the store's blocking calls (SQLite, PostgreSQL) on a worker thread, so the coordinator's
// one network thread never waits for the database. Bounded: while `max_waiting` calls are queued
// or running, or while one call has been running longer than `stall_after` (a database that
// stopped answering), new calls are refused at once with Errc::unavailable, which the API answers
// as a fast 503 with Retry-After. With zero threads (unit tests) calls run inline, in order.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>

#include "base/metrics.h"
#include "base/result.h"
#include "net/asio.h"
#include "net/clock.h"

namespace darkbloom::coordinator {

struct StoreWorkerOptions {
  size_t threads = 1;  // the stores serialise on one connection; more would only queue there
  size_t max_waiting = 256;
  std::chrono::milliseconds stall_after{5000};
};

class StoreWorker {
 public:
  StoreWorker(net::Clock& clock, StoreWorkerOptions options);
  ~StoreWorker();
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // Runs `function` (returning a Result) on the worker and resumes on the caller's executor with
  // its result; Errc::unavailable at once when the worker is not available().
  template <class Function>
  net::awaitable<std::invoke_result_t<Function>> run(Function function);

  // Neither full nor stuck on a call.
  bool available() const;
  // Why not, for an error message ("" when available).
  std::string unavailable_reason() const;
  // Calls queued or running.
  size_t waiting() const { return waiting_.load(); }
  // Finishes the queued calls and joins the threads; later calls are refused. False (nothing
  // joined) when a call is stuck: the database stopped answering, and waiting for it would hang
  // the shutdown. The caller must then leave the worker and the store alone (and let the process
  // end): a start returns whatever the escrow still holds.
  bool stop();
  // One call has been running longer than stall_after.
  bool stalled() const;

  // For /metrics: how long calls took on the worker, those the database failed (I/O, unavailable,
  // internal errors; not refusals such as a short balance), and those refused at once
  // (worker full or stuck, or stopping).
  const metrics::Histogram& call_seconds() const { return call_seconds_; }
  const metrics::Counter& errors() const { return errors_; }
  const metrics::Counter& refused() const { return refused_; }

 private:
  // Marks a call running (for stall detection) and returns its ticket.
  uint64_t started();
  void finished(uint64_t ticket);

  net::Clock& clock_;
  StoreWorkerOptions options_;
  std::unique_ptr<net::asio::thread_pool> pool_;  // null: inline
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> waiting_{0};
  mutable std::mutex mutex_;
  uint64_t next_ticket_ = 0;
  std::map<uint64_t, net::Clock::Time> running_;  // ticket -> start, oldest first
  metrics::Histogram call_seconds_{metrics::latency_buckets()};
  metrics::Counter errors_;
  metrics::Counter refused_;
};

template <class Function>
net::awaitable<std::invoke_result_t<Function>> StoreWorker::run(Function function) {
  using Value = std::invoke_result_t<Function>;
  static_assert(std::is_constructible_v<Value, Error>, "StoreWorker runs functions that return a Result");
  if (!available()) {
    refused_.add();
    co_return Value(make_error(Errc::unavailable, unavailable_reason()));
  }
  if (stopped_) {
    refused_.add();
    co_return Value(make_error(Errc::unavailable, "the coordinator is stopping"));
  }
  if (!pool_) co_return function();
  waiting_.fetch_add(1);
  auto executor = co_await net::asio::this_coro::executor;
  // Lives in this coroutine's frame, which stays put while it is suspended below.
  std::optional<Value> result;
  // Named, not a temporary in the co_await operand: GCC 12 destroys such temporaries twice.
  auto initiate = [this, &result, &function, executor](auto handler) {
    net::asio::post(*pool_, [this, &result, &function, executor, handler = std::move(handler)]() mutable {
      const uint64_t ticket = started();
      const auto began = std::chrono::steady_clock::now();
      try {
        result.emplace(function());
      } catch (const std::exception& e) {
        result.emplace(make_error(Errc::internal, e.what()));
      }
      call_seconds_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
      // Failures of the database, not answers such as "not enough balance" or "not found".
      if (!*result) {
        const Errc code = result->error().code;
        if (code == Errc::io_error || code == Errc::unavailable || code == Errc::internal) errors_.add();
      }
      // Posted before the count drops: whoever sees the worker idle finds the answer queued.
      net::asio::post(executor, std::move(handler));
      finished(ticket);
    });
  };
  co_await net::asio::async_initiate<decltype(net::use_awaitable), void()>(std::move(initiate), net::use_awaitable);
  co_return std::move(*result);
}

}  // namespace darkbloom::coordinator
