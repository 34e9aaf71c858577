// A bool shared by an object and the coroutines it starts: copies see the same value, so a
// coroutine still suspended when its owner stops (or is destroyed) can tell and return.
#pragma once

#include <memory>

namespace darkbloom::net {

class SharedFlag {
 public:
  explicit SharedFlag(bool initial = false) : value_(std::make_shared<bool>(initial)) {}
  explicit operator bool() const { return *value_; }
  void set(bool value) const { *value_ = value; }  // shared state: every copy sees it

 private:
  std::shared_ptr<bool> value_;
};

}  // namespace darkbloom::net
