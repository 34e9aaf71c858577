// The scheduler thread: owns the forward pass and the KV cache, takes queued requests in FIFO
// order and runs each to completion, one forward step at a time, checking for cancellation
// between steps. (Continuous batching replaces the inside of run_request, not this interface.)
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "base/thread_pool.h"
#include "engine/engine.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/forward.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

class Scheduler {
 public:
  Scheduler(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool, const kernels::KernelSet& kernels,
            int context);
  // Stops the thread; requests still queued or running finish as cancelled.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // The request must already be validated.
  RequestId enqueue(GenerationRequest request, std::shared_ptr<GenerationSink> sink);
  void cancel(RequestId id);
  EngineStats stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    RequestId id = 0;
    GenerationRequest request;
    std::shared_ptr<GenerationSink> sink;
    Clock::time_point submitted;
  };

  void loop();
  void run_request(Pending& pending);
  // Applies cancellations of queued requests; returns true if `running` was cancelled.
  bool check_cancelled(RequestId running);

  const Tokenizer& tokenizer_;
  KvCache cache_;
  ForwardPass forward_;
  std::vector<float> logits_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;
  std::unordered_set<RequestId> cancelled_;
  bool stopping_ = false;
  RequestId next_id_ = 1;
  RequestId running_id_ = 0;
  EngineStats stats_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace darkbloom::engine
