#include "net/offload.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace darkbloom::net {
namespace {

// Runs `io` on this thread until `done` holds.
template <class Done>
void run_until(asio::io_context& io, Done done) {
  while (!done()) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(10));
  }
}

TEST(Offload, runs_the_work_on_a_worker_and_resumes_on_the_callers_thread) {
  asio::io_context io;
  Offload offload(1, 4);
  const auto network_thread = std::this_thread::get_id();
  std::optional<std::thread::id> worker;
  std::optional<std::thread::id> resumed_on;
  std::optional<int> value;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto job = [&worker]() noexcept {
          worker = std::this_thread::get_id();
          return 42;
        };
        std::optional<int> result = co_await offload.run(job);
        resumed_on = std::this_thread::get_id();
        value = result;
      },
      asio::detached);
  run_until(io, [&] { return value.has_value(); });
  EXPECT_EQ(*value, 42);
  ASSERT_TRUE(worker);
  EXPECT_NE(*worker, network_thread);
  EXPECT_EQ(*resumed_on, network_thread);
  EXPECT_EQ(offload.waiting(), 0u);
}

TEST(Offload, the_network_thread_keeps_running_while_a_job_works) {
  asio::io_context io;
  Offload offload(1, 4);
  std::mutex mutex;
  std::condition_variable changed;
  bool release = false;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto job = [&]() noexcept {
          std::unique_lock lock(mutex);
          changed.wait(lock, [&] { return release; });
          return 1;
        };
        (void)co_await offload.run(job);
        finished = true;
      },
      asio::detached);
  // While the job is blocked, other work on the network thread runs.
  bool other_ran = false;
  asio::post(io, [&] { other_ran = true; });
  run_until(io, [&] { return other_ran; });
  EXPECT_FALSE(finished);
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  run_until(io, [&] { return finished; });
}

TEST(Offload, refuses_at_once_when_max_waiting_jobs_are_queued_or_running) {
  asio::io_context io;
  Offload offload(1, 2);
  std::mutex mutex;
  std::condition_variable changed;
  bool release = false;
  int finished = 0;
  int refused = 0;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          auto job = [&]() noexcept {
            std::unique_lock lock(mutex);
            changed.wait(lock, [&] { return release; });
            return 1;
          };
          std::optional<int> result = co_await offload.run(job);
          if (result) {
            ++finished;
          } else {
            ++refused;
          }
        },
        asio::detached);
  }
  run_until(io, [&] { return refused == 1; });
  EXPECT_EQ(finished, 0);
  EXPECT_EQ(offload.waiting(), 2u);
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  run_until(io, [&] { return finished == 2; });
  EXPECT_EQ(offload.waiting(), 0u);
}

TEST(Offload, with_no_threads_runs_inline) {
  asio::io_context io;
  Offload offload(0, 0);
  std::optional<std::thread::id> worker;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto job = [&worker]() noexcept {
          worker = std::this_thread::get_id();
          return 7;
        };
        std::optional<int> result = co_await offload.run(job);
        done = result == 7;
      },
      asio::detached);
  run_until(io, [&] { return done; });
  EXPECT_EQ(*worker, std::this_thread::get_id());
}

TEST(Offload, an_exception_from_the_work_comes_back_to_the_caller) {
  asio::io_context io;
  Offload offload(1, 4);
  std::optional<std::string> caught;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto job = []() -> int { throw std::runtime_error("bad body"); };
        try {
          (void)co_await offload.run(job);
        } catch (const std::runtime_error& e) {
          caught = e.what();
        }
      },
      asio::detached);
  run_until(io, [&] { return caught.has_value(); });
  EXPECT_EQ(*caught, "bad body");
  EXPECT_EQ(offload.waiting(), 0u);
}

TEST(Offload, once_stopped_it_refuses_and_skips_what_was_still_queued) {
  asio::io_context io;
  Offload offload(0, 4);
  offload.hold(true);
  int ran = 0;
  std::vector<std::optional<int>> results;
  for (int i = 0; i < 2; ++i) {
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          auto job = [&ran] { return ++ran; };
          results.push_back(co_await offload.run(job));
        },
        asio::detached);
  }
  io.poll();
  ASSERT_EQ(offload.held(), 2u);
  offload.stop();
  offload.run_held();
  io.restart();
  io.poll();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_FALSE(results[0]);
  EXPECT_FALSE(results[1]);
  EXPECT_EQ(ran, 0);
  bool refused = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto job = [] { return 1; };
        refused = !(co_await offload.run(job));
      },
      asio::detached);
  io.restart();
  io.poll();
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace darkbloom::net
