// Turns a stream of token ids into a stream of text that only ever contains whole UTF-8
// characters: bytes of a character split across tokens are held until it is complete.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Text completed by this token (possibly empty). Bytes that can never form a character come
  // out as U+FFFD.
  std::string push(int32_t token);
  // Whatever is still held, with an unfinished sequence replaced by U+FFFD.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace darkbloom::engine
