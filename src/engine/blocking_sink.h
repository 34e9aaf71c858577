// A GenerationSink a thread can wait on: wait() returns the finish event once the request ends.
// Subclasses override on_text to use the streamed text (tools, benchmarks); the default drops it.
#pragma once

#include <condition_variable>
#include <mutex>

#include "engine/engine.h"

namespace darkbloom::engine {

class BlockingSink : public GenerationSink {
 public:
  void on_text(std::string_view) override {}
  void on_finish(const FinishEvent& event) final {
    std::lock_guard lock(mutex_);
    event_ = event;
    done_ = true;
    finished_.notify_all();
  }
  FinishEvent wait() {
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [this] { return done_; });
    return event_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable finished_;
  bool done_ = false;
  FinishEvent event_;
};

}  // namespace darkbloom::engine
