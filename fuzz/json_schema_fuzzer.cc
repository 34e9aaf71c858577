// JSON Schemas as consumers send them in response_format: the compiler must refuse or compile
// within its bounds, never crash, and a compiled grammar must run over any bytes. Input: a schema,
// a NUL byte, then text to match against the grammar (both optional).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/json.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "fuzz/fuzz_support.h"

using namespace darkbloom;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string_view schema_text = input.substr(0, split);
  const std::string_view text = split == std::string_view::npos ? std::string_view() : input.substr(split + 1);
  auto schema = json::parse(schema_text, "schema");
  if (!schema) return 0;
  auto grammar = engine::grammar::compile_json_schema(*schema);
  if (!grammar) {
    if (grammar.error().message.empty()) fuzz::invariant_failed("a refused schema without a reason", schema_text);
    return 0;
  }
  engine::grammar::GrammarRuntime runtime(std::move(*grammar), nullptr);
  engine::grammar::MatchState state = runtime.initial();
  engine::grammar::MatchState next;
  for (char c : text) {
    runtime.advance(state, static_cast<uint8_t>(c), &next);
    if (next.dead()) break;
    std::swap(state, next);
  }
  return 0;
}
