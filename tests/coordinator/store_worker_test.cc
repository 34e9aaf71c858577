// The network thread never waits for the database: store calls run on the StoreWorker, which
// refuses at once when it is full or stuck, and unknown API keys are remembered (bounded, for a
// while) so a flood of made-up keys costs no store call.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include "coordinator/coordinator_harness.h"

namespace darkbloom::coordinator {
namespace {

using namespace std::chrono_literals;
using testing::CoordinatorHarness;

std::string unknown_key(char fill) {
  return "Bearer db-" + std::string(64, fill);
}

TEST(ApiKeys, an_unknown_key_is_remembered_for_a_while_and_costs_no_store_call) {
  CoordinatorHarness h;
  // A worker that refuses every call: whatever still answers did not need the store.
  StoreWorker refusing(h.clock, StoreWorkerOptions{0, 0, 3000ms});
  auto first = h.finish(h.keys.authenticate(unknown_key('a'), h.store_worker));
  ASSERT_TRUE(first);
  EXPECT_FALSE(*first);
  auto remembered = h.finish(h.keys.authenticate(unknown_key('a'), refusing));
  ASSERT_TRUE(remembered) << remembered.error().message;
  EXPECT_FALSE(*remembered);
  h.clock.advance(ApiKeys::kUnknownTtl);
  auto expired = h.finish(h.keys.authenticate(unknown_key('a'), refusing));
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().code, Errc::unavailable);

  // A known key is cached too, and malformed ones never reach the store.
  auto created = h.keys.create_account_key("alice");
  ASSERT_TRUE(created);
  auto known = h.finish(h.keys.authenticate("Bearer " + created->api_key, refusing));
  ASSERT_TRUE(known);
  EXPECT_EQ(*known, std::optional<std::string>(created->account_id));
  auto malformed = h.finish(h.keys.authenticate("Bearer db-short", refusing));
  ASSERT_TRUE(malformed);
  EXPECT_FALSE(*malformed);
}

TEST(ApiKeys, the_unknown_key_cache_is_bounded_and_cleared_when_a_key_is_created) {
  CoordinatorHarness h;
  for (size_t i = 0; i <= ApiKeys::kMaxUnknown + 10; ++i) {
    const std::string key = fmt::format("db-{:064x}", i);
    ASSERT_TRUE(h.finish(h.keys.authenticate_key(key, h.store_worker)));
    ASSERT_LE(h.keys.unknown_cached(), ApiKeys::kMaxUnknown);
  }
  EXPECT_GT(h.keys.unknown_cached(), 0u);
  ASSERT_TRUE(h.keys.create_account_key("bob"));
  EXPECT_EQ(h.keys.unknown_cached(), 0u);
}

// A thousand streams opened at once with a key not yet cached cost one store call, not one each:
// with a worker that takes two calls at a time, every one of 50 lookups of the same key succeeds.
TEST(ApiKeys, concurrent_lookups_of_one_new_key_share_one_store_call) {
  CoordinatorHarness h;
  auto created = h.keys.create_account_key("carol");
  ASSERT_TRUE(created);
  ApiKeys fresh(h.store(), h.clock, h.random);  // nothing cached yet
  StoreWorker worker(h.clock, StoreWorkerOptions{1, 2, 5000ms});
  const std::string header = "Bearer " + created->api_key;
  std::vector<std::optional<Result<std::optional<std::string>>>> answers(50);
  for (auto& answer : answers) {
    net::asio::co_spawn(
        h.io, [&]() -> net::awaitable<void> { answer = co_await fresh.authenticate(header, worker); },
        net::asio::detached);
  }
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::any_of(answers.begin(), answers.end(), [](const auto& a) { return !a; }) &&
         std::chrono::steady_clock::now() < deadline) {
    h.io.restart();
    h.io.run_one_for(10ms);
  }
  for (const auto& answer : answers) {
    ASSERT_TRUE(answer);
    ASSERT_TRUE(*answer) << answer->error().message;
    EXPECT_EQ(**answer, std::optional<std::string>(created->account_id));
  }
  worker.stop();
}

TEST(StoreWorker, calls_run_off_the_caller_and_a_stuck_or_full_worker_refuses_at_once) {
  net::ManualClock clock;
  net::asio::io_context io;
  StoreWorker worker(clock, StoreWorkerOptions{1, 2, 5000ms});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // Whatever fails below, the blocked call is let go, or the worker's join would hang the test.
  struct Release {
    std::promise<void>& promise;
    bool done = false;
    void now() {
      if (!done) promise.set_value();
      done = true;
    }
    ~Release() { now(); }
  } let_go{release};
  std::optional<Status> stuck;
  std::optional<Status> queued;
  std::optional<Status> refused;
  std::thread::id ran_on;
  std::atomic<bool> running{false};
  auto block = [&released, &ran_on, &running]() -> Status {
    ran_on = std::this_thread::get_id();
    running = true;
    released.wait();
    return {};
  };
  auto quick = []() -> Status { return {}; };
  net::asio::co_spawn(
      io, [&]() -> net::awaitable<void> { stuck = co_await worker.run(block); }, net::asio::detached);
  net::asio::co_spawn(
      io, [&]() -> net::awaitable<void> { queued = co_await worker.run(quick); }, net::asio::detached);
  io.poll();
  // Two calls waiting: full.
  EXPECT_EQ(worker.waiting(), 2u);
  EXPECT_FALSE(worker.available());
  net::asio::co_spawn(
      io, [&]() -> net::awaitable<void> { refused = co_await worker.run(quick); }, net::asio::detached);
  io.poll();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error().code, Errc::unavailable);
  EXPECT_NE(refused->error().message.find("busy"), std::string::npos);
  // Stuck past stall_after: refused for that reason too, while the call still runs.
  while (!running) std::this_thread::yield();
  clock.advance(5001ms);
  EXPECT_NE(worker.unavailable_reason().find("has not answered"), std::string::npos);
  let_go.now();
  while (worker.waiting() > 0) std::this_thread::yield();
  io.restart();
  io.poll();
  ASSERT_TRUE(stuck && queued);
  EXPECT_TRUE(*stuck);
  EXPECT_TRUE(*queued);
  EXPECT_TRUE(ran_on != std::this_thread::get_id());
  EXPECT_TRUE(worker.available());
}

}  // namespace
}  // namespace darkbloom::coordinator
