#include "engine/tokenizer/streaming_detokenizer.h"

#include "base/utf8.h"

namespace darkbloom::engine {

std::string StreamingDetokenizer::push(int32_t token) {
  pending_ += tokenizer_.token_to_piece(token);
  const size_t ready = utf8::complete_prefix_length(pending_);
  std::string out = utf8::sanitize(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamingDetokenizer::finish() {
  std::string out = utf8::sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace darkbloom::engine
