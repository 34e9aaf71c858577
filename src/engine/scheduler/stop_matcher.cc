#include "engine/scheduler/stop_matcher.h"

#include <algorithm>

namespace darkbloom::engine {

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  if (stops_.empty()) return flush();

  size_t first_hit = std::string::npos;
  for (const auto& stop : stops_) first_hit = std::min(first_hit, held_.find(stop));
  if (first_hit != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first_hit);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, held_.size());
    for (size_t length = longest; length > hold; --length) {
      if (held_.compare(held_.size() - length, length, stop, 0, length) == 0) {
        hold = length;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace darkbloom::engine
