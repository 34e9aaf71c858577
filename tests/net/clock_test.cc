#include "net/clock.h"

#include <gtest/gtest.h>

#include "net/async_queue.h"

namespace darkbloom::net {
namespace {

using namespace std::chrono_literals;

struct Polled {
  ManualClock clock;
  asio::io_context io;
  void run() {
    io.restart();
    io.poll();
  }
};

TEST(ManualClock, a_timer_fires_only_when_the_clock_reaches_its_deadline) {
  Polled p;
  Timer timer(p.clock, p.io.get_executor());
  std::optional<bool> reached;
  timer.expires_after(5s);
  asio::co_spawn(
      p.io, [&]() -> awaitable<void> { reached = co_await timer.wait(); }, asio::detached);
  p.run();
  EXPECT_FALSE(reached);
  p.clock.advance(4999ms);
  p.run();
  EXPECT_FALSE(reached);
  p.clock.advance(1ms);
  p.run();
  ASSERT_TRUE(reached);
  EXPECT_TRUE(*reached);
  EXPECT_EQ(p.clock.armed_timers(), 0u);
}

TEST(ManualClock, a_cancelled_wait_returns_false_at_once) {
  Polled p;
  Timer timer(p.clock, p.io.get_executor());
  std::optional<bool> reached;
  timer.expires_after(1h);
  asio::co_spawn(
      p.io, [&]() -> awaitable<void> { reached = co_await timer.wait(); }, asio::detached);
  p.run();
  timer.cancel();
  p.run();
  ASSERT_TRUE(reached);
  EXPECT_FALSE(*reached);
  timer.cancel();  // nothing waits: no effect on the next wait
  reached.reset();
  timer.expires_after(1s);
  asio::co_spawn(
      p.io, [&]() -> awaitable<void> { reached = co_await timer.wait(); }, asio::detached);
  p.clock.advance(1s);
  p.run();
  EXPECT_EQ(reached, std::optional<bool>(true));
}

TEST(ManualClock, wall_time_moves_with_monotonic_time) {
  ManualClock clock;
  const auto wall = clock.wall_now();
  clock.advance(90s);
  EXPECT_EQ(clock.wall_now() - wall, std::chrono::system_clock::duration(90s));
}

TEST(AsyncQueue, pop_until_returns_a_value_or_nothing_at_the_deadline) {
  Polled p;
  auto queue = std::make_shared<AsyncQueue<int>>(p.io.get_executor(), p.clock);
  std::vector<std::optional<int>> popped;
  auto pop_twice = [&]() -> awaitable<void> {
    popped.push_back(co_await queue->pop_until(p.clock.now() + 10s));
    popped.push_back(co_await queue->pop_until(p.clock.now() + 10s));
  };
  asio::co_spawn(p.io, pop_twice(), asio::detached);
  p.run();
  queue->push_here(7);
  p.run();
  ASSERT_EQ(popped.size(), 1u);
  EXPECT_EQ(popped[0], 7);
  p.clock.advance(10s);
  p.run();
  ASSERT_EQ(popped.size(), 2u);
  EXPECT_EQ(popped[1], std::nullopt);
}

}  // namespace
}  // namespace darkbloom::net
