// Feeds arbitrary bytes to the GGUF reader and everything that interprets a parsed file: model
// configuration, weight validation and the tokenizer (which then encodes and decodes a sample).
// Any crash, sanitizer report or leak is a bug; a rejected file is the expected outcome.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/gguf/gguf_file.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darkbloom::engine;
  auto file = GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
  if (!file) return 0;
  if (auto tokenizer = Tokenizer::from_gguf(*file)) {
    const auto ids = tokenizer->encode("Hello <|im_start|> wörld 123 \xF0\x9F\x98\x80");
    (void)tokenizer->decode(ids, true);
  }
  (void)Model::from_file(std::move(*file));
  return 0;
}
