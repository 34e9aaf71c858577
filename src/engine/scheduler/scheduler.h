// Continuous batching. One thread owns the model and runs steps: each step is one ragged batch
// of every decoding row (one token each) plus prompt chunks of rows still being prefilled, under
// a per-step token budget so decoding keeps its pace while long prompts are processed. Rows are
// admitted first in, first out up to a maximum, leave at the step after they finish or are
// cancelled (a prompt still being processed stops too), and keep their keys and values in the
// paged cache. When the cache is full a new request waits; a row that needs a block nobody can
// give it preempts the newest row, which gives its blocks back and is recomputed later with its
// output so far. Full blocks are published so later prompts with the same beginning reuse them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
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

struct SchedulerOptions {
  int context = 4096;     // positions per sequence
  int max_running = 8;    // rows in the batch at once
  int step_tokens = 512;  // tokens per step: decode rows first, then prompt chunks
  KvType kv_type = KvType::f16;
  int64_t kv_blocks = 0;     // blocks in the cache
  bool prefix_reuse = true;  // publish full blocks and reuse them for equal prompt beginnings
};

class Scheduler {
 public:
  Scheduler(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool, const kernels::KernelSet& kernels,
            const SchedulerOptions& options);
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
  struct Row;

  void loop();
  // Moves new requests in and applies cancellations; false when stopping.
  bool take_requests();
  void admit();
  void step();
  // Makes sure every decoding row has a block for its next position, preempting if needed.
  void reserve_decode_blocks();
  void preempt(Row& row);
  void publish_full_blocks(Row& row);
  // Samples the row's next token from its logits; finishes it when it is done.
  void advance(Row& row, std::span<float> logits);
  void finish(Row& row, FinishReason reason, const std::string& error = {});
  void release_blocks(Row& row);
  void update_stats();

  const Model& model_;
  const Tokenizer& tokenizer_;
  ThreadPool& pool_;
  SchedulerOptions options_;
  KvCache cache_;
  ForwardPass forward_;
  std::vector<float> logits_;
  std::vector<BatchToken> batch_;

  // Owned by the scheduler thread.
  std::deque<std::unique_ptr<Row>> waiting_;
  std::vector<std::unique_ptr<Row>> running_;  // in admission order
  uint64_t next_admission_ = 0;

  // Shared with callers, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Row>> incoming_;
  std::unordered_set<RequestId> live_;       // queued or running
  std::unordered_set<RequestId> cancelled_;  // asked to stop, not yet applied
  bool stopping_ = false;
  RequestId next_id_ = 1;
  EngineStats stats_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace darkbloom::engine
