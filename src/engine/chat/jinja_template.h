// A compiled chat template and its renderer: the Jinja subset of jinja_syntax.h with the
// filters, tests, string and mapping methods and globals (range, namespace, raise_exception,
// strftime_now) that Hugging Face chat templates call. Rendering is bounded (steps, output
// size, call depth) because the template comes from a model file and the variables from a
// client. The output is Text: it knows which bytes came from the client.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "engine/chat/jinja_value.h"

namespace darkbloom::engine::jinja {

struct Program;

struct RenderLimits {
  size_t max_steps = 1'000'000;       // tags and expressions evaluated, list items copied
  size_t max_text_bytes = 32u << 20;  // any one string, the output included
  size_t max_bytes_made = 64u << 20;  // all strings made, together (what memory can hold)
  int max_call_depth = 32;            // macro calls inside macro calls
};

class Template {
 public:
  // Errors carry "line N: ..." (the line of the template source).
  static Result<Template> compile(std::string_view source);

  // `variables` are the template's globals (messages, tools, bos_token, ...). A render error is
  // `invalid_argument` with the template's message; raise_exception(msg) gives exactly `msg`.
  Result<Text> render(const std::vector<std::pair<std::string, Value>>& variables, std::time_t now = 0,
                      const RenderLimits& limits = {}) const;

  // Whether the template reads a global of this name anywhere (e.g. "tools").
  bool reads(std::string_view name) const;

 private:
  std::shared_ptr<const Program> program_;
};

}  // namespace darkbloom::engine::jinja
