// Finds stop strings in streamed text. Text that might be the start of a stop string is held
// back until the next delta shows it is not, so a client never sees part of a stop string.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace darkbloom::engine {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds text and returns what can be emitted now. Once a stop string is found, returns the text
  // before it and stopped() turns true; later calls return nothing.
  std::string push(std::string_view text);
  // The text still held back (call when generation ends for another reason).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace darkbloom::engine
