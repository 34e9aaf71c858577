#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <vector>

namespace darkbloom {
namespace {

TEST(ThreadPool, runs_every_task_exactly_once) {
  ThreadPool pool(4);
  for (int n : {1, 2, 3, 7, 100, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.run(n, [&](int task, int) { hits[static_cast<size_t>(task)].fetch_add(1); });
    for (int i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n=" << n << " task " << i;
  }
}

TEST(ThreadPool, thread_index_is_in_range_and_not_shared_by_concurrent_tasks) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> active(3);
  std::atomic<bool> clash{false};
  std::atomic<bool> out_of_range{false};
  pool.run(300, [&](int, int thread) {
    if (thread < 0 || thread >= 3) {
      out_of_range = true;
      return;
    }
    if (active[static_cast<size_t>(thread)].fetch_add(1) != 0) clash = true;
    volatile int spin = 0;
    for (int i = 0; i < 1000; ++i) spin = spin + i;
    active[static_cast<size_t>(thread)].fetch_sub(1);
  });
  EXPECT_FALSE(out_of_range);
  EXPECT_FALSE(clash);
}

TEST(ThreadPool, many_short_jobs_in_a_row_complete) {
  ThreadPool pool(2);
  std::atomic<long> total{0};
  for (int job = 0; job < 5000; ++job) pool.run(4, [&](int task, int) { total.fetch_add(task); });
  EXPECT_EQ(total.load(), 5000L * (0 + 1 + 2 + 3));
}

TEST(ThreadPool, an_exception_in_a_task_reaches_the_caller_and_the_pool_keeps_working) {
  ThreadPool pool(3);
  for (int round = 0; round < 20; ++round) {
    EXPECT_THROW(pool.run(64,
                          [&](int task, int) {
                            if (task == round) throw std::runtime_error("task failed");
                          }),
                 std::runtime_error);
  }
  std::atomic<int> done{0};
  pool.run(100, [&](int, int) { done.fetch_add(1); });
  EXPECT_EQ(done.load(), 100);
}

TEST(ThreadPool, size_counts_the_calling_thread) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(2).size(), 2);
  EXPECT_GE(ThreadPool(0).size(), 1);
}

}  // namespace
}  // namespace darkbloom
