#include "proto/responses.h"

#include <fmt/format.h>
#include <string.h>  // explicit_bzero

#include <charconv>
#include <unordered_set>

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

constexpr int kMaxOutputTokens = 1 << 20;
constexpr size_t kMaxArgumentsBytes = 1u << 20;
constexpr size_t kMaxDescriptionBytes = 16384;
constexpr size_t kMaxTypeBytes = 64;

// A problem found in a Responses body, as the 400 it becomes; nullopt when there is none.
using Problem = std::optional<ApiError>;

Problem refuse(const std::string& param, std::string_view problem) {
  return invalid_request(param + ": " + std::string(problem), param);
}

// The first problem an ObjectReader reading `where` recorded.
Problem reader_problem(const json::ObjectReader& r, const std::string& where) {
  return invalid_request(r.error().message, where + "." + r.failed_field());
}

// The field's value, or null when it is absent or JSON null (which Responses clients send for
// "not set").
const bj::value* find(const bj::object& object, std::string_view key) {
  const bj::value* value = object.if_contains(key);
  return value != nullptr && !value->is_null() ? value : nullptr;
}

// How many arrays and objects nest in `value` (0 for a scalar). Bounded by the parser's depth.
size_t nesting(const bj::value& value) {
  size_t deepest = 0;
  if (value.is_array()) {
    for (const bj::value& item : value.as_array()) deepest = std::max(deepest, nesting(item));
  } else if (value.is_object()) {
    for (const auto& field : value.as_object()) deepest = std::max(deepest, nesting(field.value()));
  } else {
    return 0;
  }
  return deepest + 1;
}

// ---- top-level fields ----

// Fields copied to the chat body as they are: chat reads them under the same names.
constexpr std::string_view kCopied[] = {"model", "stream", "temperature", "top_p", "parallel_tool_calls",
                                        // Sampling extensions that chat completions here take as well.
                                        "seed", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                                        "repetition_penalty", "stop", "ignore_eos"};
// Fields read by the translation below.
constexpr std::string_view kTranslated[] = {"input", "instructions", "max_output_tokens",
                                            "text",  "tools",        "tool_choice"};

// Bookkeeping fields accepted and ignored (nothing is stored, and there is one service tier),
// with the JSON kind each must have when set.
struct IgnoredField {
  std::string_view name;
  bj::kind kind;
};
constexpr IgnoredField kIgnored[] = {{"store", bj::kind::bool_},
                                     {"metadata", bj::kind::object},
                                     {"user", bj::kind::string},
                                     {"safety_identifier", bj::kind::string},
                                     {"prompt_cache_key", bj::kind::string},
                                     {"prompt_cache_retention", bj::kind::string},
                                     {"service_tier", bj::kind::string},
                                     {"stream_options", bj::kind::object}};

// Fields for features this endpoint lacks: accepted only with the value that asks for nothing.
struct UnsupportedField {
  std::string_view name;
  bool (*asks_nothing)(const bj::value&);
  std::string_view problem;
};
constexpr UnsupportedField kUnsupported[] = {
    {"previous_response_id", [](const bj::value&) { return false; },
     "responses are not stored here, so they cannot be continued; send the whole conversation in `input` "
     "(earlier messages, function_call and function_call_output items)"},
    {"conversation", [](const bj::value&) { return false; },
     "conversations are not stored here; send the whole conversation in `input`"},
    {"prompt", [](const bj::value&) { return false; },
     "stored prompt templates are not supported; send the text in `instructions` and `input`"},
    {"background", [](const bj::value& v) { return v.is_bool() && !v.as_bool(); },
     "background responses are not supported (nothing is stored); leave it false"},
    {"include", [](const bj::value& v) { return v.is_array() && v.as_array().empty(); },
     "no additional output data can be included; leave it empty"},
    {"top_logprobs", [](const bj::value& v) { return v.is_number() && v.to_number<double>() == 0; },
     "log-probabilities are not supported on /v1/responses; use /v1/chat/completions"},
    {"max_tool_calls", [](const bj::value&) { return false; }, "is not supported; leave it unset"},
    {"reasoning", [](const bj::value&) { return false; }, "reasoning options are not supported; leave it unset"},
    {"truncation", [](const bj::value& v) { return v.is_string() && v.as_string() == "disabled"; },
     "only \"disabled\" is supported: a conversation too long for the model's context is an error"},
};

template <size_t N>
bool among(const std::string_view (&names)[N], std::string_view key) {
  for (std::string_view name : names) {
    if (name == key) return true;
  }
  return false;
}

// Each top-level field is one this endpoint takes, with a value it can honour.
Problem check_fields(const bj::object& body) {
  for (const auto& field : body) {
    const std::string key(field.key());
    if (among(kCopied, key) || among(kTranslated, key) || field.value().is_null()) continue;
    bool known = false;
    for (const IgnoredField& ignored : kIgnored) {
      if (ignored.name != key) continue;
      known = true;
      if (field.value().kind() != ignored.kind) return refuse(key, "has the wrong type");
    }
    for (const UnsupportedField& unsupported : kUnsupported) {
      if (unsupported.name != key) continue;
      known = true;
      if (!unsupported.asks_nothing(field.value())) return refuse(key, unsupported.problem);
    }
    if (!known) return refuse(key, "is not a parameter of /v1/responses");
  }
  return std::nullopt;
}

// ---- input ----

// What the translation builds: the chat messages, and for each the Responses field it came
// from (for errors found later by the chat parser).
struct Conversation {
  bj::array messages;
  std::vector<std::string> origins;
  std::unordered_set<std::string> call_ids;  // of the function_call items so far
};

void add_message(Conversation* conversation, bj::object message, const std::string& origin) {
  conversation->messages.push_back(std::move(message));
  conversation->origins.push_back(origin);
}

// A message's text: a string, or text parts (input_text, output_text) joined. Problems are
// reported under `param`, the message naming the part.
Problem content_text(const bj::value& content, const std::string& param, std::string* out) {
  if (content.is_string()) {
    *out = std::string(content.as_string());
    return std::nullopt;
  }
  if (!content.is_array() || content.as_array().size() > kMaxContentParts) {
    return refuse(param, fmt::format("must be a string or an array of at most {} text parts", kMaxContentParts));
  }
  out->clear();
  const bj::array& parts = content.as_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string where = fmt::format("{}[{}]", param, i);
    if (!parts[i].is_object()) return invalid_request(where + ": must be an object", param);
    json::ObjectReader p(parts[i].as_object(), where);
    const std::string type = p.string("type", kMaxTypeBytes);
    if (p.ok() && type != "input_text" && type != "output_text") {
      p.fail("type", fmt::format("'{}' parts are not supported; only text (input_text, output_text)", type));
    }
    const std::string text = p.string("text", SIZE_MAX);
    if (!p.ok()) return invalid_request(p.error().message, param);
    out->append(text);
  }
  return std::nullopt;
}

Problem translate_message(const bj::object& item, const std::string& where, Conversation* conversation) {
  json::ObjectReader r(item, where);
  const std::string role = r.string("role", 32);
  if (r.ok() && role != "user" && role != "system" && role != "developer" && role != "assistant") {
    r.fail("role", "must be user, system, developer or assistant");
  }
  if (!r.ok()) return reader_problem(r, where);
  const bj::value* content = find(item, "content");
  if (content == nullptr) return refuse(where + ".content", "is required");
  std::string text;
  if (auto problem = content_text(*content, where + ".content", &text)) return problem;
  add_message(conversation, bj::object{{"role", role}, {"content", text}}, where);
  return std::nullopt;
}

// A call the model made: it joins the assistant message before it (one assistant turn may say
// something and make several calls), or starts one.
Problem translate_function_call(const bj::object& item, const std::string& where, Conversation* conversation) {
  json::ObjectReader r(item, where);
  const std::string call_id = r.string("call_id", kMaxToolCallIdBytes);
  if (r.ok() && call_id.empty()) r.fail("call_id", "must not be empty");
  const std::string name = r.string("name", kMaxToolNameBytes);
  if (r.ok() && !valid_identifier(name)) r.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
  const std::string arguments = r.string("arguments", kMaxArgumentsBytes);
  if (!r.ok()) return reader_problem(r, where);
  bj::object call{
      {"id", call_id}, {"type", "function"}, {"function", bj::object{{"name", name}, {"arguments", arguments}}}};
  bj::object* last = conversation->messages.empty() ? nullptr : &conversation->messages.back().as_object();
  if (last != nullptr && last->at("role").as_string() == "assistant") {
    bj::value& calls = (*last)["tool_calls"];
    if (!calls.is_array()) calls = bj::array{};
    if (calls.as_array().size() >= kMaxHistoryToolCalls) {
      return refuse(where, fmt::format("one assistant turn may make at most {} function calls", kMaxHistoryToolCalls));
    }
    calls.as_array().push_back(std::move(call));
  } else {
    add_message(conversation, bj::object{{"role", "assistant"}, {"tool_calls", bj::array{std::move(call)}}}, where);
  }
  conversation->call_ids.insert(call_id);
  return std::nullopt;
}

Problem translate_function_call_output(const bj::object& item, const std::string& where, Conversation* conversation) {
  json::ObjectReader r(item, where);
  const std::string call_id = r.string("call_id", kMaxToolCallIdBytes);
  if (r.ok() && !conversation->call_ids.contains(call_id)) {
    r.fail("call_id", fmt::format("'{}' is not the call_id of an earlier function_call item", call_id));
  }
  if (!r.ok()) return reader_problem(r, where);
  const bj::value* output = find(item, "output");
  if (output == nullptr) return refuse(where + ".output", "is required");
  std::string text;
  if (auto problem = content_text(*output, where + ".output", &text)) return problem;
  add_message(conversation, bj::object{{"role", "tool"}, {"tool_call_id", call_id}, {"content", text}}, where);
  return std::nullopt;
}

Problem translate_item(const bj::value& value, const std::string& where, Conversation* conversation) {
  if (!value.is_object()) return refuse(where, "must be an object");
  const bj::object& item = value.as_object();
  json::ObjectReader r(item, where);
  // Messages may leave out "type" (EasyInputMessage); items fed back from an earlier output have it.
  const std::string type = r.optional_string("type", kMaxTypeBytes).value_or("message");
  if (!r.ok()) return reader_problem(r, where);
  if (type == "message") return translate_message(item, where, conversation);
  if (type == "function_call") return translate_function_call(item, where, conversation);
  if (type == "function_call_output") return translate_function_call_output(item, where, conversation);
  return refuse(where + ".type",
                fmt::format("'{}' items are not supported; use message, function_call or function_call_output", type));
}

// instructions and input → the chat messages.
Problem translate_input(const bj::object& body, Conversation* conversation) {
  const bj::value* instructions = find(body, "instructions");
  if (instructions != nullptr) {
    if (!instructions->is_string()) return refuse("instructions", "must be a string");
    add_message(conversation, bj::object{{"role", "system"}, {"content", *instructions}}, "instructions");
  }
  const bj::value* input = find(body, "input");
  if (input == nullptr) return refuse("input", "is required");
  if (input->is_string()) {
    add_message(conversation, bj::object{{"role", "user"}, {"content", *input}}, "input");
    return std::nullopt;
  }
  if (!input->is_array()) return refuse("input", "must be a string or an array of items");
  const bj::array& items = input->as_array();
  if (items.empty()) return refuse("input", "must contain at least one item");
  if (items.size() + conversation->messages.size() > kMaxInputItems) {
    return refuse("input", fmt::format("may hold at most {} items, instructions included", kMaxInputItems));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (auto problem = translate_item(items[i], fmt::format("input[{}]", i), conversation)) return problem;
  }
  return std::nullopt;
}

// ---- text.format, tools, tool_choice ----

// text.format → response_format. Every problem is reported under "text.format".
Problem translate_format(const bj::object& format, bj::object* chat) {
  json::ObjectReader r(format, "text.format");
  const std::string type = r.string("type", kMaxTypeBytes);
  if (r.ok() && type != "text" && type != "json_object" && type != "json_schema") {
    r.fail("type", fmt::format("must be text, json_object or json_schema, not '{}'", type));
  }
  if (r.ok() && type != "json_schema") {
    (*chat)["response_format"] = bj::object{{"type", type}};
    return std::nullopt;
  }
  bj::object spec;
  const std::string name = r.string("name", kMaxToolNameBytes);
  if (r.ok() && !valid_identifier(name)) r.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
  spec["name"] = name;
  if (auto description = r.optional_string("description", kMaxDescriptionBytes)) spec["description"] = *description;
  if (auto strict = r.optional_boolean("strict")) spec["strict"] = *strict;
  if (const bj::value* schema = r.find("schema")) {
    if (!schema->is_object() && !schema->is_bool()) r.fail("schema", "must be a JSON Schema object");
    spec["schema"] = *schema;
  }
  if (!r.ok()) return invalid_request(r.error().message, "text.format");
  (*chat)["response_format"] = bj::object{{"type", "json_schema"}, {"json_schema", std::move(spec)}};
  return std::nullopt;
}

Problem translate_text(const bj::object& body, bj::object* chat) {
  const bj::value* text = find(body, "text");
  if (text == nullptr) return std::nullopt;
  if (!text->is_object()) return refuse("text", "must be an object");
  json::ObjectReader r(text->as_object(), "text");
  r.optional_string("verbosity", 16);  // a hint for models that take one; accepted, not used
  if (!r.ok()) return reader_problem(r, "text");
  const bj::value* format = r.find("format");
  if (format == nullptr) return std::nullopt;
  if (!format->is_object()) return refuse("text.format", "must be an object with a \"type\"");
  return translate_format(format->as_object(), chat);
}

// A flat Responses function tool → the chat tool's "function" object.
Problem translate_tool(const bj::object& tool, const std::string& where, bj::object* function) {
  json::ObjectReader r(tool, where);
  const std::string type = r.string("type", kMaxTypeBytes);
  if (r.ok() && type != "function") {
    r.fail("type", fmt::format("'{}' tools are not supported; only function tools (which the model calls "
                               "and you run)",
                               type));
  }
  const std::string name = r.string("name", kMaxToolNameBytes);
  if (r.ok() && !valid_identifier(name)) r.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
  const auto description = r.optional_string("description", kMaxDescriptionBytes);
  const auto strict = r.optional_boolean("strict");
  const bj::value* parameters = r.find("parameters");
  if (r.ok() && parameters != nullptr && !parameters->is_object()) r.fail("parameters", "must be a JSON Schema object");
  // Chat nests the schema one level deeper (tools[i].function.parameters); the sealed body must
  // still parse within the depth limit.
  if (r.ok() && parameters != nullptr && nesting(*parameters) + 4 > json::kMaxDepth) {
    r.fail("parameters", "is nested too deeply");
  }
  if (!r.ok()) return reader_problem(r, where);
  (*function)["name"] = name;
  if (description) (*function)["description"] = *description;
  if (parameters != nullptr) (*function)["parameters"] = *parameters;
  if (strict) (*function)["strict"] = *strict;
  return std::nullopt;
}

Problem translate_tools(const bj::object& body, bj::object* chat) {
  const bj::value* tools = find(body, "tools");
  if (tools == nullptr) return std::nullopt;
  if (!tools->is_array() || tools->as_array().size() > kMaxTools) {
    return refuse("tools", fmt::format("must be an array of at most {} tools", kMaxTools));
  }
  bj::array translated;
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < tools->as_array().size(); ++i) {
    const bj::value& tool = tools->as_array()[i];
    const std::string where = fmt::format("tools[{}]", i);
    if (!tool.is_object()) return refuse(where, "must be an object");
    bj::object function;
    if (auto problem = translate_tool(tool.as_object(), where, &function)) return problem;
    if (!names.insert(std::string(function.at("name").as_string())).second) {
      return refuse(where + ".name", "names another tool already defined");
    }
    translated.push_back(bj::object{{"type", "function"}, {"function", std::move(function)}});
  }
  (*chat)["tools"] = std::move(translated);
  return std::nullopt;
}

// "none" | "auto" | "required" | {"type": "function", "name"} → chat's forms. Whether the named
// function is among the tools is checked by the chat parser (under the same param).
Problem translate_tool_choice(const bj::object& body, bj::object* chat) {
  constexpr std::string_view kForms = "must be none, auto, required or {\"type\": \"function\", \"name\": ...}";
  const bj::value* choice = find(body, "tool_choice");
  if (choice == nullptr) return std::nullopt;
  if (choice->is_string()) {
    const std::string_view mode = choice->as_string();
    if (mode != "none" && mode != "auto" && mode != "required") return refuse("tool_choice", kForms);
    (*chat)["tool_choice"] = *choice;
    return std::nullopt;
  }
  if (!choice->is_object()) return refuse("tool_choice", kForms);
  json::ObjectReader r(choice->as_object(), "tool_choice");
  const std::string type = r.string("type", kMaxTypeBytes);
  if (r.ok() && type != "function") r.fail("type", fmt::format("'{}' is not supported: {}", type, kForms));
  const std::string name = r.string("name", kMaxToolNameBytes);
  if (!r.ok()) return invalid_request(r.error().message, "tool_choice");
  (*chat)["tool_choice"] = bj::object{{"type", "function"}, {"function", bj::object{{"name", name}}}};
  return std::nullopt;
}

// ---- the chat body, and the chat parser's errors in Responses terms ----

Problem translate(const bj::object& body, bj::object* chat, std::vector<std::string>* origins) {
  if (auto problem = check_fields(body)) return problem;
  for (std::string_view key : kCopied) {
    if (const bj::value* value = body.if_contains(key)) (*chat)[key] = *value;
  }
  json::ObjectReader r(body, "");
  const auto max_output_tokens = r.optional_integer("max_output_tokens", 1, kMaxOutputTokens);
  if (!r.ok()) return invalid_request(r.error().message, r.failed_field());
  if (max_output_tokens) (*chat)["max_tokens"] = *max_output_tokens;
  Conversation conversation;
  if (auto problem = translate_input(body, &conversation)) return problem;
  (*chat)["messages"] = std::move(conversation.messages);
  *origins = std::move(conversation.origins);
  if (auto problem = translate_text(body, chat)) return problem;
  if (auto problem = translate_tools(body, chat)) return problem;
  return translate_tool_choice(body, chat);
}

// The Responses field a chat field came from: "messages[3].content" → the input item of
// message 3, "max_tokens" → "max_output_tokens", "tools[0].function.name" → "tools[0].name".
std::string responses_param(const std::string& param, const std::vector<std::string>& origins) {
  if (param == "messages") return "input";
  if (param.starts_with("messages[")) {
    size_t index = 0;
    const char* digits = param.data() + std::string_view("messages[").size();
    const auto [end, error] = std::from_chars(digits, param.data() + param.size(), index);
    return error == std::errc() && *end == ']' && index < origins.size() ? origins[index] : "input";
  }
  if (param == "max_tokens") return "max_output_tokens";
  if (param == "response_format") return "text.format";
  if (param.starts_with("tools[")) {
    if (const size_t at = param.find(".function."); at != std::string::npos) {
      return param.substr(0, at) + param.substr(at + std::string_view(".function").size());
    }
  }
  return param;
}

void to_responses_error(ApiError* error, const std::vector<std::string>& origins) {
  const std::string param = responses_param(error->param, origins);
  if (param == error->param) return;
  const std::string prefix = error->param + ": ";
  if (error->message.starts_with(prefix)) error->message = param + ": " + error->message.substr(prefix.size());
  error->param = param;
}

}  // namespace

Result<CompletionRequest> parse_responses_request(const bj::value& body, ApiError* error) {
  if (!body.is_object()) {
    *error = invalid_request("The request body must be a JSON object");
    return make_error(Errc::invalid_argument, error->message);
  }
  bj::object chat;
  std::vector<std::string> origins;
  if (auto problem = translate(body.as_object(), &chat, &origins)) {
    *error = std::move(*problem);
    return make_error(Errc::invalid_argument, error->message);
  }
  auto request = parse_completion_request(Endpoint::chat_completions, bj::value(std::move(chat)), error);
  if (!request) {
    to_responses_error(error, origins);
    return make_error(Errc::invalid_argument, error->message);
  }
  request->endpoint = Endpoint::responses;
  return request;
}

Result<CompletionRequest> parse_responses_body(std::string_view body, ApiError* error) {
  auto value = json::parse(body, "request body");
  if (!value) {
    *error = invalid_request("The request body is not valid JSON: " + value.error().message);
    return value.error();
  }
  return parse_responses_request(*value, error);
}

// ---- ResponsesWriter ----

namespace {

const bj::object* object_at(const bj::object& object, std::string_view key) {
  const bj::value* value = object.if_contains(key);
  return value != nullptr && value->is_object() ? &value->as_object() : nullptr;
}

bj::value optional_value(const std::optional<double>& value) {
  return value ? bj::value(*value) : bj::value(nullptr);
}

// text.format as the response echoes it, from the chat request's response_format.
bj::object text_format_of(const CompletionRequest& request) {
  bj::object format{{"type", request.response_format}};
  if (request.response_format != "json_schema") return format;
  const bj::object* response_format = object_at(request.body, "response_format");
  const bj::object* spec = response_format ? object_at(*response_format, "json_schema") : nullptr;
  const bj::value* name = spec ? spec->if_contains("name") : nullptr;
  const bj::value* description = spec ? spec->if_contains("description") : nullptr;
  const bj::value* strict = spec ? spec->if_contains("strict") : nullptr;
  format["name"] = name ? *name : bj::value("");
  if (description != nullptr && description->is_string()) format["description"] = *description;
  format["schema"] = request.json_schema;
  format["strict"] = strict != nullptr && strict->is_bool() ? *strict : bj::value(nullptr);
  return format;
}

// The tools as flat Responses function tools; `strict` is read from the chat body.
bj::array tools_of(const CompletionRequest& request) {
  const bj::value* chat_tools = request.body.if_contains("tools");
  bj::array tools;
  for (size_t i = 0; i < request.tools.size(); ++i) {
    const Tool& tool = request.tools[i];
    const bj::value* strict = nullptr;
    if (chat_tools != nullptr && chat_tools->is_array() && i < chat_tools->as_array().size() &&
        chat_tools->as_array()[i].is_object()) {
      const bj::object* function = object_at(chat_tools->as_array()[i].as_object(), "function");
      strict = function ? function->if_contains("strict") : nullptr;
    }
    tools.push_back(
        bj::object{{"type", "function"},
                   {"name", tool.name},
                   {"description", tool.description.empty() ? bj::value(nullptr) : bj::value(tool.description)},
                   {"parameters", tool.parameters},
                   {"strict", strict != nullptr && strict->is_bool() ? *strict : bj::value(nullptr)}});
  }
  return tools;
}

bj::value tool_choice_of(const CompletionRequest& request) {
  switch (request.tool_choice) {
    case ToolChoice::none:
      return "none";
    case ToolChoice::automatic:
      return "auto";
    case ToolChoice::required:
      return "required";
    case ToolChoice::named:
      break;
  }
  return bj::object{{"type", "function"}, {"name", request.tool_choice_name}};
}

// What every response object repeats of its request. Instructions and metadata are not kept.
bj::object settings_of(const CompletionRequest& request) {
  bj::object settings;
  settings["instructions"] = nullptr;
  settings["max_output_tokens"] = request.max_tokens ? bj::value(*request.max_tokens) : bj::value(nullptr);
  settings["metadata"] = bj::object{};
  settings["parallel_tool_calls"] = request.parallel_tool_calls;
  settings["previous_response_id"] = nullptr;
  settings["store"] = false;
  settings["temperature"] = optional_value(request.temperature);
  settings["text"] = bj::object{{"format", text_format_of(request)}};
  settings["tool_choice"] = tool_choice_of(request);
  settings["tools"] = tools_of(request);
  settings["top_p"] = optional_value(request.top_p);
  settings["truncation"] = "disabled";
  return settings;
}

bj::object usage_object(const Usage& usage) {
  return {{"input_tokens", usage.prompt_tokens},
          {"input_tokens_details", bj::object{{"cached_tokens", 0}}},
          {"output_tokens", usage.completion_tokens},
          {"output_tokens_details", bj::object{{"reasoning_tokens", 0}}},
          {"total_tokens", int64_t{usage.prompt_tokens} + usage.completion_tokens}};
}

bj::object receipt_object(const Receipt& receipt) {
  return {{"request_id", receipt.request_id},
          {"completion_tokens", receipt.completion_tokens},
          {"response_hash", receipt.response_hash},
          {"signature", receipt.signature},
          {"public_key", receipt.public_key}};
}

bj::object text_part(std::string_view text) {
  return {{"type", "output_text"}, {"text", text}, {"annotations", bj::array{}}};
}

}  // namespace

ResponsesWriter::ResponsesWriter(std::string id, std::string model, int64_t created_at,
                                 const CompletionRequest& request)
    : id_(std::move(id)), model_(std::move(model)), created_at_(created_at), settings_(settings_of(request)) {}

ResponsesWriter::~ResponsesWriter() {
  for (Item& item : items_) {
    if (!item.text.empty()) explicit_bzero(item.text.data(), item.text.size());
    if (!item.call.arguments.empty()) explicit_bzero(item.call.arguments.data(), item.call.arguments.size());
  }
}

std::string ResponsesWriter::item_id(bool is_call, size_t ordinal) const {
  const std::string_view suffix = std::string_view(id_).starts_with("resp_") ? std::string_view(id_).substr(5) : id_;
  if (is_call) return fmt::format("fc_{}_{}", suffix, ordinal);
  return ordinal == 0 ? fmt::format("msg_{}", suffix) : fmt::format("msg_{}_{}", suffix, ordinal);
}

bj::object ResponsesWriter::item_object(const Item& item, bool as_added) const {
  const std::string_view status = as_added ? std::string_view("in_progress") : std::string_view(item.status);
  if (item.is_call) {
    return {
        {"id", item.id},          {"type", "function_call"},
        {"status", status},       {"call_id", item.call.id},
        {"name", item.call.name}, {"arguments", as_added ? std::string_view() : std::string_view(item.call.arguments)}};
  }
  bj::array content;
  if (!as_added) content.push_back(text_part(item.text));
  return {{"id", item.id}, {"type", "message"}, {"status", status}, {"role", "assistant"}, {"content", content}};
}

bj::object ResponsesWriter::response_object(std::string_view status, const bj::array& output, const Usage* usage,
                                            const Receipt* receipt) const {
  bj::object response{{"id", id_},        {"object", "response"}, {"created_at", created_at_},
                      {"status", status}, {"error", nullptr},     {"incomplete_details", nullptr},
                      {"model", model_},  {"output", output}};
  if (status == "incomplete") response["incomplete_details"] = bj::object{{"reason", "max_output_tokens"}};
  for (const auto& field : settings_) response[field.key()] = field.value();
  response["usage"] = usage ? bj::value(usage_object(*usage)) : bj::value(nullptr);
  if (receipt != nullptr) response["darkbloom_receipt"] = receipt_object(*receipt);
  return response;
}

bj::object ResponsesWriter::event(std::string_view type) {
  return {{"type", type}, {"sequence_number", sequence_++}};
}

void ResponsesWriter::push(std::vector<std::string>* out, const bj::object& event) const {
  out->push_back(bj::serialize(event));
}

void ResponsesWriter::ensure_started(std::vector<std::string>* out) {
  if (started_) return;
  started_ = true;
  for (std::string_view type : {"response.created", "response.in_progress"}) {
    bj::object e = event(type);
    e["response"] = response_object("in_progress", {}, nullptr, nullptr);
    push(out, e);
  }
}

void ResponsesWriter::open_message(std::vector<std::string>* out) {
  Item item;
  item.id = item_id(false, messages_++);
  items_.push_back(std::move(item));
  const size_t index = items_.size() - 1;
  bj::object added = event("response.output_item.added");
  added["output_index"] = index;
  added["item"] = item_object(items_.back(), true);
  push(out, added);
  bj::object part = event("response.content_part.added");
  part["item_id"] = items_.back().id;
  part["output_index"] = index;
  part["content_index"] = 0;
  part["part"] = text_part("");
  push(out, part);
}

void ResponsesWriter::close_item(size_t index, std::string_view status, std::vector<std::string>* out) {
  Item& item = items_[index];
  item.open = false;
  item.status = std::string(status);
  if (item.is_call) {
    bj::object done = event("response.function_call_arguments.done");
    done["item_id"] = item.id;
    done["output_index"] = index;
    done["name"] = item.call.name;
    done["arguments"] = item.call.arguments;
    push(out, done);
  } else {
    bj::object text_done = event("response.output_text.done");
    text_done["item_id"] = item.id;
    text_done["output_index"] = index;
    text_done["content_index"] = 0;
    text_done["text"] = item.text;
    text_done["logprobs"] = bj::array{};
    push(out, text_done);
    bj::object part_done = event("response.content_part.done");
    part_done["item_id"] = item.id;
    part_done["output_index"] = index;
    part_done["content_index"] = 0;
    part_done["part"] = text_part(item.text);
    push(out, part_done);
  }
  bj::object done = event("response.output_item.done");
  done["output_index"] = index;
  done["item"] = item_object(item, false);
  push(out, done);
}

void ResponsesWriter::close_open_items(std::string_view status, std::vector<std::string>* out) {
  for (size_t i = 0; i < items_.size(); ++i) {
    if (items_[i].open) close_item(i, status, out);
  }
}

std::optional<size_t> ResponsesWriter::find_call(int call_index) const {
  for (size_t i = 0; i < items_.size(); ++i) {
    if (items_[i].is_call && items_[i].call_index == call_index) return i;
  }
  return std::nullopt;
}

void ResponsesWriter::add_call(const ToolCallDelta& delta, std::vector<std::string>* out) {
  close_open_items("completed", out);
  Item item;
  item.is_call = true;
  item.call_index = delta.index;
  item.call.id = delta.id;
  item.call.name = delta.name;
  item.id = item_id(true, static_cast<size_t>(std::max(delta.index, 0)));
  items_.push_back(std::move(item));
  bj::object added = event("response.output_item.added");
  added["output_index"] = items_.size() - 1;
  added["item"] = item_object(items_.back(), true);
  push(out, added);
}

bj::array ResponsesWriter::output() const {
  bj::array output;
  for (const Item& item : items_) output.push_back(item_object(item, false));
  return output;
}

std::vector<std::string> ResponsesWriter::start() {
  std::vector<std::string> out;
  ensure_started(&out);
  return out;
}

std::vector<std::string> ResponsesWriter::text(std::string_view delta) {
  std::vector<std::string> out;
  if (ended_ || delta.empty()) return out;
  ensure_started(&out);
  if (items_.empty() || !items_.back().open || items_.back().is_call) {
    close_open_items("completed", &out);
    open_message(&out);
  }
  items_.back().text += delta;
  bj::object e = event("response.output_text.delta");
  e["item_id"] = items_.back().id;
  e["output_index"] = items_.size() - 1;
  e["content_index"] = 0;
  e["delta"] = delta;
  e["logprobs"] = bj::array{};
  push(&out, e);
  return out;
}

std::vector<std::string> ResponsesWriter::tool_call(const ToolCallDelta& delta) {
  std::vector<std::string> out;
  if (ended_) return out;
  ensure_started(&out);
  std::optional<size_t> index = find_call(delta.index);
  if (index && !items_[*index].open) {
    return failed(provider_error(
        fmt::format("The provider sent more of function call {} after it had finished it", delta.index)));
  }
  if (!index) {
    add_call(delta, &out);
    index = items_.size() - 1;
  }
  if (delta.arguments.empty()) return out;
  Item& item = items_[*index];
  item.call.arguments += delta.arguments;
  bj::object e = event("response.function_call_arguments.delta");
  e["item_id"] = item.id;
  e["output_index"] = *index;
  e["delta"] = delta.arguments;
  push(&out, e);
  return out;
}

std::vector<std::string> ResponsesWriter::finish(std::string_view finish_reason, const Usage& usage,
                                                 const Receipt* receipt) {
  std::vector<std::string> out;
  if (ended_) return out;
  ensure_started(&out);
  if (items_.empty()) open_message(&out);  // an empty answer is still a message
  const bool cut = finish_reason == "length";
  close_open_items(cut ? "incomplete" : "completed", &out);
  ended_ = true;
  bj::object e = event(cut ? "response.incomplete" : "response.completed");
  e["response"] = response_object(cut ? "incomplete" : "completed", output(), &usage, receipt);
  push(&out, e);
  return out;
}

std::vector<std::string> ResponsesWriter::failed(const ApiError& error) {
  std::vector<std::string> out;
  if (ended_) return out;
  ensure_started(&out);
  for (Item& item : items_) {
    if (!item.open) continue;
    item.open = false;
    item.status = "incomplete";
  }
  ended_ = true;
  bj::object response = response_object("failed", output(), nullptr, nullptr);
  response["error"] = bj::object{{"code", error.code.empty() ? error.type : error.code}, {"message", error.message}};
  bj::object e = event("response.failed");
  e["response"] = std::move(response);
  push(&out, e);
  return out;
}

std::string ResponsesWriter::whole(const ChunkFormatter::Choice& choice, const Usage& usage,
                                   const Receipt* receipt) const {
  std::vector<Item> items;
  if (!choice.text.empty() || choice.tool_calls.empty()) {
    Item message;
    message.id = item_id(false, 0);
    message.text = choice.text;
    items.push_back(std::move(message));
  }
  for (size_t i = 0; i < choice.tool_calls.size(); ++i) {
    Item call;
    call.is_call = true;
    call.call = choice.tool_calls[i];
    call.id = item_id(true, i);
    items.push_back(std::move(call));
  }
  const bool cut = choice.finish_reason == "length";
  bj::array output;
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].status = cut && i + 1 == items.size() ? "incomplete" : "completed";
    output.push_back(item_object(items[i], false));
  }
  return bj::serialize(response_object(cut ? "incomplete" : "completed", output, &usage, receipt));
}

}  // namespace darkbloom::proto
