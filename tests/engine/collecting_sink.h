// A GenerationSink for engine tests: collects the text and the finish event, and lets the test
// wait for either. With hold_on_first_text() the engine's thread waits at the first text until
// release(), so a test can act (cancel) at a known point instead of racing a fast model.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/engine.h"

namespace darkbloom::engine {

class CollectingSink final : public GenerationSink {
 public:
  void on_text(std::string_view delta) override {
    std::unique_lock lock(mutex_);
    text_ += delta;
    ++texts_;
    changed_.notify_all();
    if (hold_on_first_text_ && texts_ == 1) changed_.wait(lock, [this] { return released_; });
  }
  void on_finish(const FinishEvent& event) override {
    std::lock_guard lock(mutex_);
    event_ = event;
    ++finishes_;
    changed_.notify_all();
  }

  void hold_on_first_text() { hold_on_first_text_ = true; }
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }
  FinishEvent wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return finishes_ > 0; });
    return event_;
  }
  // Until `n` pieces of text arrived (or the request ended).
  void wait_for_texts(int n = 1) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return texts_ >= n || finishes_ > 0; });
  }
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }
  int finishes() {
    std::lock_guard lock(mutex_);
    return finishes_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;
  int texts_ = 0;
  int finishes_ = 0;
  bool hold_on_first_text_ = false;
  bool released_ = false;
  FinishEvent event_;
};

}  // namespace darkbloom::engine
