// Chat prompts: the formats models are trained on (ChatML, Llama 3, and a plain fallback),
// chosen from the GGUF file's tokenizer.chat_template. Not a Jinja engine: the template text is
// only inspected to recognise its family.
//
// Prompts are tokenized piecewise: the format's own markers may become control tokens, message
// contents never do, so a user who writes "<|im_end|>" cannot forge a turn boundary.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

enum class ChatFormat { chatml, llama3, plain };

// A call an assistant turn made: `arguments` is JSON text.
struct ChatToolCall {
  std::string name;
  std::string arguments;
};

struct ChatTurn {
  std::string role;  // system, developer, user, assistant, tool
  std::string content;
  std::vector<ChatToolCall> tool_calls = {};  // assistant turns that called tools
};

// How the format's models are trained to call tools, which is how their answers are parsed:
// `hermes` (ChatML, plain): <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks;
// `llama3_json` (Llama 3.1): the whole answer is {"name": ..., "parameters": {...}}.
enum class ToolCallSyntax { hermes, llama3_json };
ToolCallSyntax tool_call_syntax(ChatFormat format);

// The family of a Jinja chat template; `plain` when empty or unrecognised.
ChatFormat detect_chat_format(std::string_view chat_template);

// Token ids of a conversation ending with the assistant's turn opened for generation. `tools`
// are the definitions the model may call ({"type": "function", "function": {...}} as JSON text),
// shown to it the way its family was trained on, in the system turn.
std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, ChatFormat format, std::span<const ChatTurn> turns,
                                 std::span<const std::string> tools = {});

// The same prompt as text, markers included (for logs and tests).
std::string render_chat(ChatFormat format, std::span<const ChatTurn> turns, std::span<const std::string> tools = {});

}  // namespace darkbloom::engine
