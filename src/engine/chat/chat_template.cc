#include "engine/chat/chat_template.h"

#include <fmt/format.h>

namespace darkbloom::engine {
namespace {

// A prompt as alternating pieces: markers (parsed for control tokens) and contents (not).
struct Piece {
  std::string text;
  bool marker;
};

std::string trim(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const size_t last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

// "developer" is OpenAI's newer name for the system role; the open formats know "system".
std::string_view model_role(std::string_view role) {
  return role == "developer" ? "system" : role;
}

// The instructions that show a model its tools, in its family's shape. Fixed text: markers.
constexpr std::string_view kHermesToolsHead =
    "# Tools\n\nYou may call one or more functions to help with the user's request. Their signatures are "
    "inside <tools></tools> XML tags:\n<tools>";
constexpr std::string_view kHermesToolsTail =
    "\n</tools>\n\nTo call a function, answer with a JSON object of its name and arguments inside "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>";
constexpr std::string_view kLlamaToolsHead =
    "You have these functions. To call one, answer with nothing but a JSON object of the form "
    "{\"name\": function name, \"parameters\": object of argument names and values}.\n\n";

// A call as the family writes it (client text: a content piece).
std::string call_json(const ChatToolCall& call, std::string_view arguments_key) {
  return fmt::format(R"({{"name": "{}", "{}": {}}})", call.name, arguments_key,
                     call.arguments.empty() ? std::string_view("{}") : std::string_view(call.arguments));
}

// The system turn's text, with the tool definitions after the client's system prompt.
void system_with_tools(ChatFormat format, std::string_view system, std::span<const std::string> tools,
                       std::vector<Piece>* out) {
  if (!system.empty()) out->push_back({std::string(system), false});
  if (format == ChatFormat::llama3) {
    out->push_back({std::string(system.empty() ? "" : "\n\n") + std::string(kLlamaToolsHead), true});
    for (const std::string& tool : tools) {
      out->push_back({tool, false});
      out->push_back({"\n\n", true});
    }
    return;
  }
  out->push_back({std::string(system.empty() ? "" : "\n\n") + std::string(kHermesToolsHead), true});
  for (const std::string& tool : tools) {
    out->push_back({"\n", true});
    out->push_back({tool, false});
  }
  out->push_back({std::string(kHermesToolsTail), true});
}

struct Markers {
  std::string_view begin_text;           // before everything
  std::string open_prefix, open_suffix;  // around a role name
  std::string_view close;                // after a turn
  bool trim = false;                     // contents trimmed (Llama 3)
};

Markers markers_of(ChatFormat format) {
  switch (format) {
    case ChatFormat::chatml:
      return {"", "<|im_start|>", "\n", "<|im_end|>\n"};
    case ChatFormat::llama3:
      return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", true};
    case ChatFormat::plain:
      break;
  }
  return {"", "", ": ", "\n"};
}

// An assistant turn's calls after its content.
void assistant_calls(ChatFormat format, const ChatTurn& turn, std::vector<Piece>* out) {
  for (size_t i = 0; i < turn.tool_calls.size(); ++i) {
    if (format == ChatFormat::llama3) {
      // Calls follow the content on a line of their own, joined by "; " as the parser reads them.
      if (i > 0 || !turn.content.empty()) out->push_back({i > 0 ? "; " : "\n", true});
      out->push_back({call_json(turn.tool_calls[i], "parameters"), false});
      continue;
    }
    const bool first_line = turn.content.empty() && i == 0;
    out->push_back({std::string(first_line ? "" : "\n") + "<tool_call>\n", true});
    out->push_back({call_json(turn.tool_calls[i], "arguments"), false});
    out->push_back({"\n</tool_call>", true});
  }
}

// The role a tool result is shown under, and its wrapping (ChatML: tool results are a user turn
// of <tool_response> blocks, consecutive results together).
std::string_view tool_role(ChatFormat format) {
  switch (format) {
    case ChatFormat::chatml:
      return "user";
    case ChatFormat::llama3:
      return "ipython";
    case ChatFormat::plain:
      break;
  }
  return "tool";
}

std::vector<Piece> pieces(ChatFormat format, std::span<const ChatTurn> turns, std::span<const std::string> tools) {
  const Markers m = markers_of(format);
  std::vector<Piece> out;
  if (!m.begin_text.empty()) out.push_back({std::string(m.begin_text), true});
  auto content = [&](std::string_view text) { out.push_back({m.trim ? trim(text) : std::string(text), false}); };
  size_t first = 0;
  if (!tools.empty()) {
    // The tools go in the system turn: the client's first one, or one of their own.
    const bool has_system = !turns.empty() && model_role(turns[0].role) == "system";
    const std::string system = !has_system ? std::string() : m.trim ? trim(turns[0].content) : turns[0].content;
    out.push_back({m.open_prefix + "system" + m.open_suffix, true});
    system_with_tools(format, system, tools, &out);
    out.push_back({std::string(m.close), true});
    first = has_system ? 1 : 0;
  }
  for (size_t i = first; i < turns.size(); ++i) {
    const ChatTurn& turn = turns[i];
    if (turn.role == "tool") {
      const bool grouped = format == ChatFormat::chatml;
      const bool opens = !grouped || i == 0 || turns[i - 1].role != "tool";
      const bool closes = !grouped || i + 1 == turns.size() || turns[i + 1].role != "tool";
      if (opens) out.push_back({m.open_prefix + std::string(tool_role(format)) + m.open_suffix, true});
      if (grouped) out.push_back({std::string(opens ? "" : "\n") + "<tool_response>\n", true});
      content(turn.content);
      if (grouped) out.push_back({"\n</tool_response>", true});
      if (closes) out.push_back({std::string(m.close), true});
      continue;
    }
    out.push_back({m.open_prefix + std::string(model_role(turn.role)) + m.open_suffix, true});
    content(turn.content);
    assistant_calls(format, turn, &out);
    out.push_back({std::string(m.close), true});
  }
  out.push_back({m.open_prefix + "assistant" + (format == ChatFormat::plain ? ":" : m.open_suffix), true});
  return out;
}

}  // namespace

ChatFormat detect_chat_format(std::string_view chat_template) {
  if (chat_template.find("<|start_header_id|>") != std::string_view::npos) return ChatFormat::llama3;
  if (chat_template.find("<|im_start|>") != std::string_view::npos) return ChatFormat::chatml;
  return ChatFormat::plain;
}

ToolCallSyntax tool_call_syntax(ChatFormat format) {
  return format == ChatFormat::llama3 ? ToolCallSyntax::llama3_json : ToolCallSyntax::hermes;
}

std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, ChatFormat format, std::span<const ChatTurn> turns,
                                 std::span<const std::string> tools) {
  std::vector<int32_t> ids;
  // The Llama 3 format spells its BOS; the others get BOS where the vocabulary asks for it.
  if (format != ChatFormat::llama3 && tokenizer.adds_bos() && tokenizer.bos()) ids.push_back(*tokenizer.bos());
  EncodeOptions marker_options;
  marker_options.add_special = false;
  marker_options.parse_special = true;
  EncodeOptions content_options;
  content_options.add_special = false;
  content_options.parse_special = false;
  for (const Piece& piece : pieces(format, turns, tools)) {
    if (piece.text.empty()) continue;
    const auto piece_ids = tokenizer.encode(piece.text, piece.marker ? marker_options : content_options);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  return ids;
}

std::string render_chat(ChatFormat format, std::span<const ChatTurn> turns, std::span<const std::string> tools) {
  std::string text;
  for (const Piece& piece : pieces(format, turns, tools)) text += piece.text;
  return text;
}

}  // namespace darkbloom::engine
