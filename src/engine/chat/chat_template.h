// Chat prompts. A model's own Jinja template (the GGUF's tokenizer.chat_template, run by
// jinja_template.h) when it has one; the named families (ChatML, Llama 3, a plain fallback)
// only when it has none.
//
// Either way, the template's own text may become control tokens and the client's text never
// does, so a user who writes "<|im_end|>" cannot forge a turn boundary.
#pragma once

#include <ctime>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat/jinja_template.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

enum class ChatFormat { chatml, llama3, plain };

// A call an assistant turn made: `arguments` is JSON text.
struct ChatToolCall {
  std::string name;
  std::string arguments;
  std::string id = {};
};

struct ChatTurn {
  std::string role;  // system, developer, user, assistant, tool
  std::string content;
  std::vector<ChatToolCall> tool_calls = {};  // assistant turns that called tools
  std::string tool_call_id = {};              // tool turns: the call answered
};

// How the format's models are trained to call tools, which is how their answers are parsed:
// `hermes` (ChatML, plain): <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks;
// `llama3_json` (Llama 3.1): the whole answer is {"name": ..., "parameters": {...}}.
enum class ToolCallSyntax { hermes, llama3_json };
ToolCallSyntax tool_call_syntax(ChatFormat format);

// The family of a Jinja chat template; `plain` when empty or unrecognised.
ChatFormat detect_chat_format(std::string_view chat_template);

// A conversation in a named family's format, ending with the assistant's turn opened, as text
// (markers included). `tools` are the definitions the model may call ({"type": "function",
// "function": {...}} as JSON text), shown the way the family was trained on, in the system turn.
// ChatTemplate uses the family's way of showing tools and calls for templates that cannot.
std::string render_chat(ChatFormat format, std::span<const ChatTurn> turns, std::span<const std::string> tools = {});

// A model's chat format, loaded once with the model.
class ChatTemplate {
 public:
  // From tokenizer.chat_template (`source`); the plain family when it is empty. A template that
  // does not compile, or cannot render a one-message conversation, is an error naming its line.
  static Result<ChatTemplate> load(std::string_view source, const Tokenizer& tokenizer);

  bool runs_model_template() const { return jinja_.has_value(); }
  // The family the template belongs to (the tool-call syntax its answers are read with).
  ChatFormat format() const { return format_; }

  // The prompt for a conversation ending with the assistant's turn opened. Errors (a template's
  // raise_exception, a conversation it cannot render) are `invalid_argument` with its message.
  Result<jinja::Text> render(std::span<const ChatTurn> turns, std::span<const std::string> tools = {},
                             std::time_t now = 0) const;
  Result<std::vector<int32_t>> encode(const Tokenizer& tokenizer, std::span<const ChatTurn> turns,
                                      std::span<const std::string> tools = {}, std::time_t now = 0) const;

 private:
  ChatTemplate() = default;
  std::vector<std::pair<std::string, jinja::Value>> variables(std::span<const ChatTurn> turns,
                                                              std::span<const std::string> tools) const;
  jinja::Value arguments_value(const std::string& arguments) const;

  std::optional<jinja::Template> jinja_;
  ChatFormat format_ = ChatFormat::plain;
  std::string bos_token_, eos_token_;
  bool shows_tools_ = false;              // the template renders `tools` itself
  bool shows_calls_ = false;              // ... and assistant `tool_calls`
  bool empty_content_for_calls_ = false;  // it needs "" rather than none beside tool calls
  bool arguments_as_objects_ = false;     // it prints call arguments with tojson
};

}  // namespace darkbloom::engine
