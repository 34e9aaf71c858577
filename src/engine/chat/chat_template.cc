#include "engine/chat/chat_template.h"

#include <fmt/format.h>

#include <unordered_map>

#include "base/json.h"

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

// The pieces as one text: markers are the template's own bytes, contents the client's.
jinja::Text pieces_text(const std::vector<Piece>& pieces) {
  jinja::Text out;
  for (const Piece& piece : pieces) {
    out.append(piece.marker ? jinja::Text::literal(piece.text) : jinja::Text::client(piece.text));
  }
  return out;
}

std::string joined(const std::vector<Piece>& pieces) {
  std::string out;
  for (const Piece& piece : pieces) out += piece.text;
  return out;
}

// Control tokens are recognised in the template's bytes only; BOS is added where the vocabulary
// asks for it unless the template wrote it.
std::vector<int32_t> encode_text(const Tokenizer& tokenizer, const jinja::Text& text) {
  std::vector<ByteRange> client;
  client.reserve(text.client_spans().size());
  for (const auto& span : text.client_spans()) client.push_back({span.begin, span.end});
  EncodeOptions options;
  options.add_special = false;
  options.parse_special = true;
  options.plain_ranges = client;
  std::vector<int32_t> ids = tokenizer.encode(text.bytes(), options);
  if (tokenizer.adds_bos() && tokenizer.bos() && (ids.empty() || ids.front() != *tokenizer.bos())) {
    ids.insert(ids.begin(), *tokenizer.bos());
  }
  return ids;
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

std::string render_chat(ChatFormat format, std::span<const ChatTurn> turns, std::span<const std::string> tools) {
  return joined(pieces(format, turns, tools));
}

Result<ChatTemplate> ChatTemplate::load(std::string_view source, const Tokenizer& tokenizer) {
  ChatTemplate out;
  out.format_ = detect_chat_format(source);
  if (source.empty()) return out;
  auto compiled = jinja::Template::compile(source);
  if (!compiled) return compiled.error();
  out.jinja_ = std::move(*compiled);
  if (tokenizer.bos()) out.bos_token_ = tokenizer.token_text(*tokenizer.bos());
  if (tokenizer.eos()) out.eos_token_ = tokenizer.token_text(*tokenizer.eos());
  out.shows_tools_ = out.jinja_->reads("tools");
  out.shows_calls_ = source.find("tool_calls") != std::string_view::npos;
  const ChatTurn hello[] = {{"user", "Hello"}};
  if (auto probe = out.render(hello); !probe) {
    return make_error(Errc::unsupported,
                      "the template cannot render a conversation of one user message: " + probe.error().message);
  }
  if (out.shows_calls_) {
    // Templates differ in what they take beside tool calls. Content: none (as OpenAI clients
    // send it) unless only "" renders (templates that test it as a string). Arguments: the
    // client's JSON text, unless the template writes that text as a JSON string (it applies
    // tojson) or renders only with an object (it iterates the arguments). The id has 9
    // alphanumerics, as Mistral's templates insist.
    const ChatTurn calls[] = {{"user", "Hello"},
                              {"assistant", "", {{"probe", R"({"probe_argument": 1})", "a1b2c3d4e"}}}};
    bool rendered = false;
    for (const bool empty : {false, true}) {
      out.empty_content_for_calls_ = empty;
      out.arguments_as_objects_ = false;
      if (auto text = out.render(calls); text) {
        out.arguments_as_objects_ = text->bytes().find(R"(\"probe_argument\")") != std::string::npos;
        rendered = true;
        break;
      }
      out.arguments_as_objects_ = true;
      if (out.render(calls)) {
        rendered = true;
        break;
      }
    }
    if (!rendered) {
      out.empty_content_for_calls_ = false;
      out.arguments_as_objects_ = false;
    }
  }
  return out;
}

// OpenAI clients send arguments as JSON text; templates that print them with `tojson` expect the
// object (as transformers passes it), those that concatenate them expect the text.
jinja::Value ChatTemplate::arguments_value(const std::string& arguments) const {
  if (arguments_as_objects_) {
    if (auto parsed = json::parse(arguments, "arguments"); parsed && parsed->is_object()) {
      return jinja::Value::from_client_json(*parsed);
    }
  }
  return jinja::Value::string(jinja::Text::client(arguments));
}

std::vector<std::pair<std::string, jinja::Value>> ChatTemplate::variables(std::span<const ChatTurn> turns,
                                                                          std::span<const std::string> tools) const {
  using jinja::Text;
  using jinja::Value;
  const auto client = [](std::string text) { return Value::string(Text::client(std::move(text))); };
  std::unordered_map<std::string_view, std::string_view> call_names;  // id → name, for results
  jinja::Array messages;
  for (const ChatTurn& turn : turns) {
    auto message = std::make_shared<jinja::Object>();
    message->set("role", client(std::string(model_role(turn.role))));
    Text content = Text::client(turn.content);
    if (!shows_calls_ && !turn.tool_calls.empty()) {
      // The template cannot show calls: they follow the content as the family writes them.
      std::vector<Piece> calls;
      assistant_calls(format_, turn, &calls);
      content.append(pieces_text(calls));
    }
    const bool null_content =
        shows_calls_ && !turn.tool_calls.empty() && content.size() == 0 && !empty_content_for_calls_;
    message->set("content", null_content ? Value::none() : Value::string(std::move(content)));
    if (shows_calls_ && !turn.tool_calls.empty()) {
      jinja::Array calls;
      for (const ChatToolCall& call : turn.tool_calls) {
        call_names[call.id] = call.name;
        auto function = std::make_shared<jinja::Object>();
        function->set("name", client(call.name));
        function->set("arguments", arguments_value(call.arguments.empty() ? "{}" : call.arguments));
        auto entry = std::make_shared<jinja::Object>();
        if (!call.id.empty()) entry->set("id", client(call.id));
        entry->set("type", Value::literal("function"));
        entry->set("function", Value::object(std::move(function)));
        calls.push_back(Value::object(std::move(entry)));
      }
      message->set("tool_calls", Value::array(std::move(calls)));
    }
    if (turn.role == "tool" && !turn.tool_call_id.empty()) {
      message->set("tool_call_id", client(turn.tool_call_id));
      if (const auto it = call_names.find(turn.tool_call_id); it != call_names.end()) {
        message->set("name", client(std::string(it->second)));
      }
    }
    messages.push_back(Value::object(std::move(message)));
  }
  std::vector<std::pair<std::string, Value>> out;
  if (tools.empty() && shows_tools_) out.emplace_back("tools", Value::none());  // as transformers passes it
  if (!tools.empty() && shows_tools_) {
    jinja::Array definitions;
    for (const std::string& tool : tools) {
      auto parsed = json::parse(tool, "tool");
      definitions.push_back(parsed ? Value::from_client_json(*parsed) : Value::none());
    }
    out.emplace_back("tools", Value::array(std::move(definitions)));
  } else if (!tools.empty()) {
    // The template cannot show tools: they join the system message as the family shows them.
    const bool has_system = !messages.empty() && messages[0].as_object()->find("role")->as_text().bytes() == "system";
    const Value* system_content = has_system ? messages[0].as_object()->find("content") : nullptr;
    const std::string system =
        system_content != nullptr && system_content->is_string() ? system_content->as_text().bytes() : "";
    std::vector<Piece> pieces;
    system_with_tools(format_, system, tools, &pieces);
    if (!has_system) {
      auto message = std::make_shared<jinja::Object>();
      message->set("role", Value::literal("system"));
      messages.insert(messages.begin(), Value::object(std::move(message)));
    }
    messages[0].as_object()->set("content", Value::string(pieces_text(pieces)));
  }
  out.emplace_back("messages", Value::array(std::move(messages)));
  out.emplace_back("add_generation_prompt", Value::boolean(true));
  out.emplace_back("bos_token", Value::literal(bos_token_));
  out.emplace_back("eos_token", Value::literal(eos_token_));
  return out;
}

Result<jinja::Text> ChatTemplate::render(std::span<const ChatTurn> turns, std::span<const std::string> tools,
                                         std::time_t now) const {
  if (!jinja_) return pieces_text(pieces(format_, turns, tools));
  // A template may copy what it is given a few times over (each `+` makes a new string).
  size_t input_bytes = 0;
  for (const ChatTurn& turn : turns) {
    input_bytes += turn.content.size();
    for (const ChatToolCall& call : turn.tool_calls) input_bytes += call.arguments.size() + call.name.size();
  }
  for (const std::string& tool : tools) input_bytes += tool.size();
  jinja::RenderLimits limits;
  limits.max_bytes_made += 16 * input_bytes;
  return jinja_->render(variables(turns, tools), now, limits);
}

Result<std::vector<int32_t>> ChatTemplate::encode(const Tokenizer& tokenizer, std::span<const ChatTurn> turns,
                                                  std::span<const std::string> tools, std::time_t now) const {
  auto text = render(turns, tools, now);
  if (!text) return text.error();
  return encode_text(tokenizer, *text);
}

}  // namespace darkbloom::engine
