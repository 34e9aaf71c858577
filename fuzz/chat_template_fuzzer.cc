// Chat templates come in model files and their variables from clients: the parser must refuse or
// compile within its bounds, and a compiled template must render or refuse within its limits,
// never crash, with client-byte ranges that describe its output. Input: a template, a NUL byte,
// then a JSON object of variables (optional).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "base/json.h"
#include "engine/chat/jinja_template.h"
#include "fuzz/fuzz_support.h"

using namespace darkbloom;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string_view source = input.substr(0, split);
  const std::string_view variables_text =
      split == std::string_view::npos ? std::string_view() : input.substr(split + 1);
  auto compiled = engine::jinja::Template::compile(source);
  if (!compiled) {
    if (compiled.error().message.empty()) fuzz::invariant_failed("a refused template without a reason", source);
    return 0;
  }
  std::vector<std::pair<std::string, engine::jinja::Value>> variables;
  if (auto parsed = json::parse(variables_text, "variables"); parsed && parsed->is_object()) {
    for (const auto& [key, value] : parsed->as_object()) {
      variables.emplace_back(std::string(key), engine::jinja::Value::from_client_json(value));
    }
  }
  engine::jinja::RenderLimits limits;
  limits.max_steps = 20'000;  // the mechanism of the default million, at fuzzing speed
  limits.max_text_bytes = 1u << 16;
  auto text = compiled->render(variables, 0, limits);
  if (!text) return 0;
  uint32_t previous_end = 0;
  for (const auto& span : text->client_spans()) {
    if (span.begin >= span.end || span.end > text->size() || (previous_end > 0 && span.begin <= previous_end)) {
      fuzz::invariant_failed("client ranges that are not sorted, disjoint and inside the output", source);
    }
    previous_end = span.end;
  }
  return 0;
}
