// A persistent pool of worker threads for data-parallel loops (kernels, attention). The calling
// thread takes part, so a pool of size N runs N threads in all. Workers spin briefly between jobs
// (a decode step issues hundreds of short jobs) and then sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace darkbloom {

class ThreadPool {
 public:
  // `threads` counts the calling thread; 0 means one per hardware thread.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(index, thread) for every index in [0, n_tasks), spread over the pool, and returns
  // when all are done. `thread` is in [0, size()) and unique among concurrently running calls,
  // so it can pick a per-thread scratch buffer. Not reentrant: call from one thread at a time.
  // If tasks throw, the remaining tasks are skipped, every thread finishes, and the first
  // exception is rethrown here.
  void run(int n_tasks, const std::function<void(int task, int thread)>& task);

  static int hardware_threads();

 private:
  void worker_loop(int thread_index);
  void work_on_current_job(int thread_index);

  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_task_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr failure_;  // first exception of the current job; guarded by mutex_
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace darkbloom
