#include "proto/openai.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

constexpr size_t kMaxModelBytes = 256;
constexpr size_t kMaxMessages = 4096;
constexpr size_t kMaxStopStrings = 4;
constexpr size_t kMaxStopBytes = 256;
constexpr int kMaxTokensLimit = 1 << 20;

ApiError make(int status, std::string type, std::string code, std::string message, std::string param = {}) {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

// Text of a message's content: a string, or an array of {"type": "text", "text": ...} parts.
bool content_text(const bj::value& content, std::string* out, std::string* problem) {
  if (content.is_string()) {
    *out = std::string(content.as_string());
    return true;
  }
  if (content.is_null()) {
    out->clear();
    return true;
  }
  if (!content.is_array()) {
    *problem = "must be a string or an array of text parts";
    return false;
  }
  out->clear();
  for (const bj::value& part : content.as_array()) {
    const bj::object* object = part.if_object();
    const bj::value* type = object ? object->if_contains("type") : nullptr;
    const bj::value* text = object ? object->if_contains("text") : nullptr;
    if (type == nullptr || !type->is_string() || type->as_string() != "text" || text == nullptr || !text->is_string()) {
      *problem = "only text parts ({\"type\": \"text\", \"text\": ...}) are supported";
      return false;
    }
    out->append(text->as_string());
  }
  return true;
}

// response_format: {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}.
// Problems are reported whole (their message names the field) under the param "response_format".
std::optional<std::string> parse_response_format(json::ObjectReader& r, CompletionRequest* request) {
  const bj::value* format = r.find("response_format");
  if (format == nullptr || format->is_null()) return std::nullopt;
  if (!format->is_object()) return "response_format: must be an object with a \"type\"";
  json::ObjectReader f(format->as_object(), "response_format");
  request->response_format = f.string("type", 32);
  if (f.ok() && request->response_format != "text" && request->response_format != "json_object" &&
      request->response_format != "json_schema") {
    f.fail("type", fmt::format("must be text, json_object or json_schema, not '{}'", request->response_format));
  }
  if (f.ok() && request->response_format == "json_schema") {
    const bj::object& spec = f.object("json_schema");
    if (f.ok()) {
      json::ObjectReader j(spec, "response_format.json_schema");
      const std::string name = j.string("name", 64);
      if (j.ok() && !valid_identifier(name)) {
        j.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
      }
      j.optional_boolean("strict");
      j.optional_string("description", 4096);
      if (const bj::value* schema = j.find("schema"); schema != nullptr && !schema->is_null()) {
        if (!schema->is_object() && !schema->is_bool()) {
          j.fail("schema", "must be a JSON Schema object");
        } else {
          request->json_schema = *schema;
        }
      }
      if (!j.ok()) return j.error().message;
    }
  }
  if (!f.ok()) return f.error().message;
  return std::nullopt;
}

void parse_logprobs(Endpoint endpoint, json::ObjectReader& r, CompletionRequest* request) {
  if (endpoint == Endpoint::chat_completions) {
    request->logprobs = r.optional_boolean("logprobs").value_or(false);
    const auto top = r.optional_integer("top_logprobs", 0, 20);
    if (r.ok() && top && !request->logprobs && *top > 0) {
      r.fail("top_logprobs", "needs \"logprobs\": true");
    }
    request->top_logprobs = static_cast<int>(top.value_or(0));
  } else {
    const auto top = r.optional_integer("logprobs", 0, 5);
    request->logprobs = top.has_value();
    request->top_logprobs = static_cast<int>(top.value_or(0));
  }
}

// tools: [{"type": "function", "function": {"name", "description", "parameters", "strict"}}].
// The schemas are compiled (and refused) by the provider, which links the grammar code.
void parse_tools(json::ObjectReader& r, CompletionRequest* request) {
  const bj::value* tools = r.find("tools");
  if (tools == nullptr || tools->is_null()) return;
  if (!tools->is_array() || tools->as_array().size() > kMaxTools) {
    r.fail("tools", fmt::format("must be an array of at most {} tools", kMaxTools));
    return;
  }
  for (size_t i = 0; i < tools->as_array().size() && r.ok(); ++i) {
    const bj::value& item = tools->as_array()[i];
    const std::string where = fmt::format("tools[{}]", i);
    if (!item.is_object()) {
      r.fail(where, "must be an object");
      return;
    }
    json::ObjectReader t(item.as_object(), where);
    const std::string type = t.string("type", 32);
    if (t.ok() && type != "function") t.fail("type", "must be \"function\"");
    const bj::object& function = t.object("function");
    if (!t.ok()) {
      r.fail(where + "." + t.failed_field(), t.error().message);
      return;
    }
    json::ObjectReader f(function, where + ".function");
    Tool tool;
    tool.name = f.string("name", kMaxToolNameBytes);
    if (f.ok() && !valid_identifier(tool.name)) f.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
    tool.description = f.optional_string("description", 16384).value_or("");
    f.optional_boolean("strict");
    if (const bj::value* parameters = f.find("parameters"); parameters != nullptr && !parameters->is_null()) {
      const bj::value* type = parameters->is_object() ? parameters->as_object().if_contains("type") : nullptr;
      if (!parameters->is_object()) {
        f.fail("parameters", "must be a JSON Schema object");
      } else if (type != nullptr && !(type->is_string() && type->as_string() == "object")) {
        f.fail("parameters", "must describe an object (\"type\": \"object\"): arguments are named");
      } else {
        tool.parameters = *parameters;
      }
    }
    if (f.ok() && find_tool(*request, tool.name) != nullptr) f.fail("name", "names another tool already defined");
    if (!f.ok()) {
      r.fail(where + ".function." + f.failed_field(), f.error().message);
      return;
    }
    request->tools.push_back(std::move(tool));
  }
}

// tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}.
void parse_tool_choice(json::ObjectReader& r, CompletionRequest* request) {
  request->tool_choice = request->tools.empty() ? ToolChoice::none : ToolChoice::automatic;
  request->parallel_tool_calls = r.optional_boolean("parallel_tool_calls").value_or(true);
  const bj::value* choice = r.find("tool_choice");
  if (choice == nullptr || choice->is_null() || !r.ok()) return;
  if (choice->is_string()) {
    const std::string_view name = choice->as_string();
    if (name == "none") {
      request->tool_choice = ToolChoice::none;
    } else if (name == "auto") {
      request->tool_choice = ToolChoice::automatic;
    } else if (name == "required") {
      request->tool_choice = ToolChoice::required;
    } else {
      r.fail("tool_choice", "must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
      return;
    }
  } else if (choice->is_object()) {
    json::ObjectReader c(choice->as_object(), "tool_choice");
    const std::string type = c.string("type", 32);
    if (c.ok() && type != "function") c.fail("type", "must be \"function\"");
    const bj::object& function = c.object("function");
    if (c.ok()) {
      json::ObjectReader f(function, "tool_choice.function");
      request->tool_choice_name = f.string("name", kMaxToolNameBytes);
      if (!f.ok()) c.fail("function", f.error().message);
    }
    if (!c.ok()) {
      r.fail("tool_choice", c.error().message);
      return;
    }
    request->tool_choice = ToolChoice::named;
  } else {
    r.fail("tool_choice", "must be a string or an object");
    return;
  }
  if (request->tool_choice != ToolChoice::none && request->tools.empty()) {
    r.fail("tool_choice", "needs \"tools\" to choose from");
  } else if (request->tool_choice == ToolChoice::named && find_tool(*request, request->tool_choice_name) == nullptr) {
    r.fail("tool_choice", fmt::format("names '{}', which is not among the tools", request->tool_choice_name));
  }
}

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}].
bool parse_message_tool_calls(const bj::value& calls, ChatMessage* message, std::string* problem, std::string* field) {
  if (!calls.is_array() || calls.as_array().size() > kMaxHistoryToolCalls) {
    *field = "tool_calls";
    *problem = fmt::format("must be an array of at most {} calls", kMaxHistoryToolCalls);
    return false;
  }
  for (size_t i = 0; i < calls.as_array().size(); ++i) {
    const std::string where = fmt::format("tool_calls[{}]", i);
    const bj::value& item = calls.as_array()[i];
    if (!item.is_object()) {
      *field = where;
      *problem = "must be an object";
      return false;
    }
    json::ObjectReader c(item.as_object(), where);
    ToolCall call;
    call.id = c.string("id", kMaxToolCallIdBytes);
    const std::string type = c.optional_string("type", 32).value_or("function");
    if (c.ok() && type != "function") c.fail("type", "must be \"function\"");
    const bj::object& function = c.object("function");
    if (c.ok()) {
      json::ObjectReader f(function, where + ".function");
      call.name = f.string("name", kMaxToolNameBytes);
      if (f.ok() && !valid_identifier(call.name)) f.fail("name", "must be 1 to 64 letters, digits, '_' or '-'");
      call.arguments = f.string("arguments", 1u << 20);
      if (!f.ok()) c.fail("function." + f.failed_field(), f.error().message);
    }
    if (!c.ok()) {
      *field = where + "." + c.failed_field();
      *problem = c.error().message;
      return false;
    }
    message->tool_calls.push_back(std::move(call));
  }
  return true;
}

// One entry of `messages`; `earlier_calls` holds the ids of the calls made before it (a tool
// message answers one of them).
std::optional<ApiError> parse_message(const bj::value& value, const std::string& param,
                                      const std::unordered_set<std::string>& earlier_calls, ChatMessage* message) {
  if (!value.is_object()) return invalid_request(param + ": must be an object", param);
  json::ObjectReader m(value.as_object(), param);
  message->role = m.string("role", 32);
  if (m.ok() && message->role != "system" && message->role != "developer" && message->role != "user" &&
      message->role != "assistant" && message->role != "tool") {
    m.fail("role", "must be system, developer, user, assistant or tool");
  }
  if (m.ok() && message->role == "tool") {
    message->tool_call_id = m.string("tool_call_id", kMaxToolCallIdBytes);
    if (m.ok() && !earlier_calls.contains(message->tool_call_id)) {
      m.fail("tool_call_id",
             fmt::format("'{}' is not the id of a tool call in an earlier assistant message", message->tool_call_id));
    }
  }
  if (!m.ok()) return invalid_request(m.error().message, param + "." + m.failed_field());
  const bj::object& object = value.as_object();
  if (const bj::value* calls = object.if_contains("tool_calls");
      calls != nullptr && !calls->is_null() && message->role == "assistant") {
    std::string problem, field;
    if (!parse_message_tool_calls(*calls, message, &problem, &field)) {
      return invalid_request(param + "." + field + ": " + problem, param + "." + field);
    }
  }
  const bj::value* content = object.if_contains("content");
  if (content == nullptr && message->tool_calls.empty()) {
    return invalid_request(param + ".content: is required", param + ".content");
  }
  std::string problem;
  if (content != nullptr && !content_text(*content, &message->content, &problem)) {
    return invalid_request(param + ".content: " + problem, param + ".content");
  }
  return std::nullopt;
}

}  // namespace

void append_logprobs(bj::value* all, const bj::value& part) {
  if (!part.is_object()) return;
  if (!all->is_object()) {
    *all = part;
    return;
  }
  bj::object& into = all->as_object();
  for (const auto& [key, value] : part.as_object()) {
    bj::value* existing = into.if_contains(key);
    if (existing != nullptr && existing->is_array() && value.is_array()) {
      for (const bj::value& item : value.as_array()) existing->as_array().push_back(item);
    } else {
      into[key] = value;
    }
  }
}

std::string ApiError::to_json() const {
  bj::object error{{"message", message}, {"type", type}, {"code", code.empty() ? type : code}};
  error["param"] = param.empty() ? bj::value(nullptr) : bj::value(param);
  return bj::serialize(bj::object{{"error", std::move(error)}});
}

ApiError invalid_request(std::string message, std::string param) {
  return make(400, "invalid_request_error", "invalid_request_error", std::move(message), std::move(param));
}
ApiError authentication_error(std::string message) {
  return make(401, "authentication_error", "invalid_api_key", std::move(message));
}
ApiError model_not_found(const std::string& model) {
  return make(404, "invalid_request_error", "model_not_found",
              fmt::format("The model '{}' does not exist or no provider serves it", model), "model");
}
ApiError request_too_large(size_t limit_bytes) {
  return make(413, "invalid_request_error", "request_too_large",
              fmt::format("Request body is larger than the limit of {} bytes", limit_bytes));
}
ApiError request_too_large_for_providers(size_t frame_bytes, size_t largest_frame_bytes) {
  return make(413, "invalid_request_error", "request_too_large",
              fmt::format("Request is too large for the providers of this model: sealed for them it takes {} bytes, "
                          "and the most any of them reads is {} bytes; send a shorter request",
                          frame_bytes, largest_frame_bytes));
}
ApiError rate_limited(std::string message) {
  return make(429, "rate_limit_exceeded", "rate_limit_exceeded", std::move(message));
}
ApiError provider_error(std::string message) {
  return make(502, "provider_error", "provider_error", std::move(message));
}
ApiError timeout_error(std::string message) {
  return make(504, "timeout", "timeout", std::move(message));
}
ApiError not_found_error(std::string message) {
  return make(404, "invalid_request_error", "not_found", std::move(message));
}
ApiError server_error(std::string message) {
  return make(500, "server_error", "server_error", std::move(message));
}
ApiError no_provider_available(std::string message) {
  return make(503, "server_error", "no_provider_available", std::move(message));
}
ApiError service_unavailable(std::string message) {
  return make(503, "server_error", "service_unavailable", std::move(message));
}
ApiError insufficient_quota(std::string message) {
  return make(402, "insufficient_quota", "insufficient_quota", std::move(message));
}

std::string response_id(Endpoint endpoint, std::string_view request_id) {
  switch (endpoint) {
    case Endpoint::chat_completions:
      return "chatcmpl-" + std::string(request_id);
    case Endpoint::completions:
      return "cmpl-" + std::string(request_id);
    case Endpoint::responses:
      break;
  }
  return "resp_" + std::string(request_id);
}

std::string_view endpoint_name(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::chat_completions:
      return "chat.completions";
    case Endpoint::completions:
      return "completions";
    case Endpoint::responses:
      break;
  }
  return "responses";
}

// NOLINTNEXTLINE(readability-function-size): a parser: one block per OpenAI request field.
Result<CompletionRequest> parse_completion_request(Endpoint endpoint, const bj::value& body, ApiError* error) {
  auto fail = [&](std::string message, std::string param) -> Result<CompletionRequest> {
    *error = invalid_request(std::move(message), std::move(param));
    return make_error(Errc::invalid_argument, error->message);
  };
  if (!body.is_object()) return fail("The request body must be a JSON object", "");
  CompletionRequest request;
  request.endpoint = endpoint;
  request.body = body.as_object();
  json::ObjectReader r(request.body, "");
  auto check = [&]() -> bool { return r.ok(); };

  request.model = r.string("model", kMaxModelBytes);
  if (check() && request.model.empty()) r.fail("model", "must not be empty");
  if (!check()) return fail(r.error().message, r.failed_field());

  if (endpoint == Endpoint::chat_completions) {
    const bj::array& messages = r.array("messages", kMaxMessages);
    if (check() && messages.empty()) r.fail("messages", "must contain at least one message");
    if (!check()) return fail(r.error().message, r.failed_field());
    std::unordered_set<std::string> call_ids;
    for (size_t i = 0; i < messages.size(); ++i) {
      ChatMessage message;
      if (auto problem = parse_message(messages[i], fmt::format("messages[{}]", i), call_ids, &message)) {
        *error = std::move(*problem);
        return make_error(Errc::invalid_argument, error->message);
      }
      for (const ToolCall& call : message.tool_calls) call_ids.insert(call.id);
      request.messages.push_back(std::move(message));
    }
  } else {
    const bj::value* prompt = r.find("prompt");
    if (prompt == nullptr) return fail("prompt: is required", "prompt");
    if (prompt->is_string()) {
      request.prompt = std::string(prompt->as_string());
    } else if (prompt->is_array() && prompt->as_array().size() == 1 && prompt->as_array()[0].is_string()) {
      request.prompt = std::string(prompt->as_array()[0].as_string());
    } else {
      return fail("prompt: must be a string (or an array of exactly one string)", "prompt");
    }
  }

  request.stream = r.optional_boolean("stream").value_or(false);
  if (const bj::value* options = r.find("stream_options")) {
    if (!options->is_object()) {
      r.fail("stream_options", "must be an object");
    } else {
      json::ObjectReader o(options->as_object(), "stream_options");
      request.include_usage = o.optional_boolean("include_usage").value_or(false);
      if (!o.ok()) return fail(o.error().message, "stream_options." + o.failed_field());
    }
  }
  const auto max_completion = r.optional_integer("max_completion_tokens", 1, kMaxTokensLimit);
  const auto max_tokens = r.optional_integer("max_tokens", 1, kMaxTokensLimit);
  if (max_completion) {
    request.max_tokens = static_cast<int>(*max_completion);
  } else if (max_tokens) {
    request.max_tokens = static_cast<int>(*max_tokens);
  }
  request.temperature = r.optional_number("temperature", 0, 2);
  request.top_p = r.optional_number("top_p", 0, 1);
  if (check() && request.top_p && *request.top_p == 0) r.fail("top_p", "must be greater than 0");
  request.min_p = r.optional_number("min_p", 0, 1);
  if (const auto top_k = r.optional_integer("top_k", -1, 1 << 20)) request.top_k = static_cast<int>(*top_k);
  request.presence_penalty = r.optional_number("presence_penalty", -2, 2);
  request.frequency_penalty = r.optional_number("frequency_penalty", -2, 2);
  request.repetition_penalty = r.optional_number("repetition_penalty", 0.01, 10);
  request.seed = r.optional_integer("seed", INT64_MIN, INT64_MAX);
  request.n = static_cast<int>(r.optional_integer("n", 1, kMaxChoices).value_or(1));
  if (check()) {
    if (auto problem = parse_response_format(r, &request)) return fail(*problem, "response_format");
  }
  if (check()) parse_logprobs(endpoint, r, &request);
  if (endpoint == Endpoint::chat_completions) {
    if (check()) parse_tools(r, &request);
    if (check()) parse_tool_choice(r, &request);
  } else if (check() && (r.has("tools") || r.has("tool_choice"))) {
    r.fail(r.has("tools") ? "tools" : "tool_choice", "is for chat completions (/v1/chat/completions)");
  }
  request.ignore_eos = r.optional_boolean("ignore_eos").value_or(false);
  if (const bj::value* stop = r.find("stop")) {
    if (stop->is_string()) {
      request.stop.emplace_back(stop->as_string());
    } else if (stop->is_array() && stop->as_array().size() <= kMaxStopStrings) {
      for (const bj::value& s : stop->as_array()) {
        if (!s.is_string()) {
          r.fail("stop", "must be a string or an array of strings");
          break;
        }
        request.stop.emplace_back(s.as_string());
      }
    } else {
      r.fail("stop", fmt::format("must be a string or an array of at most {} strings", kMaxStopStrings));
    }
    for (const auto& s : request.stop) {
      if (check() && (s.empty() || s.size() > kMaxStopBytes)) {
        r.fail("stop", fmt::format("stop strings must be 1 to {} bytes", kMaxStopBytes));
      }
    }
  }
  if (!check()) return fail(r.error().message, r.failed_field());
  return request;
}

Result<CompletionRequest> parse_completion_body(Endpoint endpoint, std::string_view body, ApiError* error) {
  auto value = json::parse(body, "request body");
  if (!value) {
    *error = invalid_request("The request body is not valid JSON: " + value.error().message);
    return value.error();
  }
  return parse_completion_request(endpoint, *value, error);
}

bool valid_identifier(std::string_view text) {
  return !text.empty() && text.size() <= 64 &&
         text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
             std::string_view::npos;
}

const Tool* find_tool(const CompletionRequest& request, std::string_view name) {
  for (const Tool& tool : request.tools) {
    if (tool.name == name) return &tool;
  }
  return nullptr;
}

std::string receipt_choice_text(std::string_view content, const std::vector<ToolCall>& calls, bool framed) {
  if (!framed) return std::string(content);
  size_t size = content.size() + 16;
  for (const ToolCall& call : calls) size += call.id.size() + call.name.size() + call.arguments.size() + 40;
  std::string text;
  text.reserve(size);  // one buffer: the caller wipes it, and no copy is left behind by growth
  auto field = [&](std::string_view value) {
    text += std::to_string(value.size());
    text += ':';
    text += value;
  };
  text += '\x1f';
  field(content);
  for (const ToolCall& call : calls) {
    field(call.id);
    field(call.name);
    field(call.arguments);
  }
  return text;
}

void append_tool_call(std::vector<ToolCall>* calls, const ToolCallDelta& delta) {
  if (delta.index < 0) return;
  if (static_cast<size_t>(delta.index) >= calls->size()) calls->resize(static_cast<size_t>(delta.index) + 1);
  ToolCall& call = (*calls)[static_cast<size_t>(delta.index)];
  if (!delta.id.empty()) call.id = delta.id;
  if (!delta.name.empty()) call.name = delta.name;
  call.arguments += delta.arguments;
}

ToolCallRules tool_call_rules(const CompletionRequest& request) {
  ToolCallRules rules;
  if (request.tool_choice == ToolChoice::named) {
    rules.names = {request.tool_choice_name};
    rules.max_calls = 1;
  } else if (request.tool_choice != ToolChoice::none) {
    for (const auto& tool : request.tools) rules.names.push_back(tool.name);
    rules.max_calls = request.parallel_tool_calls ? kMaxToolCalls : 1;
  }
  rules.forced = request.tool_choice == ToolChoice::named || request.tool_choice == ToolChoice::required;
  return rules;
}

std::optional<std::string> check_tool_pieces(const ToolCallRules& rules, ChoiceCalls& choice, bool has_text,
                                             const std::vector<ToolCallDelta>& deltas, size_t* counted) {
  if (has_text) {
    // A forced call answers with calls only; elsewhere text may come between calls.
    if (rules.forced) return "text in an answer forced to call a function";
    if (!choice.calls.empty()) choice.text_since_call = true;  // text comes before calls in a chunk
  }
  if (deltas.empty()) return std::nullopt;
  if (rules.names.empty()) return "tool calls in an answer that may call no tool";
  for (const ToolCallDelta& delta : deltas) {
    const auto index = static_cast<size_t>(delta.index);
    if (delta.index >= 0 && index == choice.calls.size()) {
      // A new call: the next one, with an id and a function the request offered.
      if (choice.calls.size() >= rules.max_calls) {
        return fmt::format("more tool calls than the request allows ({})", rules.max_calls);
      }
      if (!valid_identifier(delta.id)) return "a tool call without a well-formed id";
      if (std::find(rules.names.begin(), rules.names.end(), delta.name) == rules.names.end()) {
        return fmt::format("a call of '{}', which the request did not offer", delta.name.substr(0, 64));
      }
      *counted += delta.name.size() + kToolCallMarkupBytes;
      choice.text_since_call = false;
    } else if (delta.index < 0 || index + 1 != choice.calls.size() || !delta.id.empty() || !delta.name.empty() ||
               delta.arguments.empty() || choice.text_since_call) {
      // Only the last call goes on, with more of its arguments, and not after text.
      return fmt::format("tool call {} continued out of order, renamed or empty", delta.index);
    }
    *counted += delta.arguments.size();
    append_tool_call(&choice.calls, delta);
  }
  return std::nullopt;
}

std::optional<std::string> check_tool_finish(const ToolCallRules& rules, const std::vector<ChoiceCalls>& choices,
                                             const std::vector<std::string>& reasons) {
  for (size_t i = 0; i < reasons.size(); ++i) {
    const bool called = i < choices.size() && !choices[i].calls.empty();
    if (reasons[i] == "tool_calls" && !called)
      return fmt::format("choice {} finished with tool_calls and made none", i);
    if (reasons[i] == "stop" && rules.forced) {
      // A forced call's grammar ends only when a call is whole, which finishes with tool_calls.
      return fmt::format("choice {} was forced to call a function and stopped without", i);
    }
  }
  return std::nullopt;
}

namespace {

bj::object tool_call_object(const ToolCall& call) {
  bj::object function;
  function["name"] = call.name;
  function["arguments"] = call.arguments;
  bj::object object;
  object["id"] = call.id;
  object["type"] = "function";
  object["function"] = std::move(function);
  return object;
}

}  // namespace

ChunkFormatter::ChunkFormatter(Endpoint endpoint, std::string id, std::string model, int64_t created)
    : endpoint_(endpoint), id_(std::move(id)), model_(std::move(model)), created_(created) {}

bj::object ChunkFormatter::base(std::string_view object_name) const {
  return {{"id", id_}, {"object", object_name}, {"created", created_}, {"model", model_}};
}

std::optional<std::string> ChunkFormatter::opening_chunk(int index) const {
  if (endpoint_ != Endpoint::chat_completions) return std::nullopt;
  bj::object chunk = base("chat.completion.chunk");
  chunk["choices"] = bj::array{bj::object{{"index", index},
                                          {"delta", bj::object{{"role", "assistant"}, {"content", ""}}},
                                          {"logprobs", nullptr},
                                          {"finish_reason", nullptr}}};
  return bj::serialize(chunk);
}

std::string ChunkFormatter::content_chunk(std::string_view text, const bj::value& logprobs, int index) const {
  if (endpoint_ == Endpoint::chat_completions) {
    bj::object chunk = base("chat.completion.chunk");
    chunk["choices"] = bj::array{bj::object{{"index", index},
                                            {"delta", bj::object{{"content", text}}},
                                            {"logprobs", logprobs},
                                            {"finish_reason", nullptr}}};
    return bj::serialize(chunk);
  }
  bj::object chunk = base("text_completion");
  chunk["choices"] =
      bj::array{bj::object{{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", nullptr}}};
  return bj::serialize(chunk);
}

std::string ChunkFormatter::tool_call_chunk(const std::vector<ToolCallDelta>& deltas, int index) const {
  bj::array calls;
  for (const ToolCallDelta& delta : deltas) {
    bj::object function;
    if (!delta.name.empty()) function["name"] = delta.name;
    function["arguments"] = delta.arguments;
    bj::object call;
    call["index"] = delta.index;
    if (!delta.id.empty()) {
      call["id"] = delta.id;
      call["type"] = "function";
    }
    call["function"] = std::move(function);
    calls.push_back(std::move(call));
  }
  bj::object delta;
  delta["tool_calls"] = std::move(calls);
  bj::object choice;
  choice["index"] = index;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = nullptr;
  bj::object chunk = base("chat.completion.chunk");
  chunk["choices"] = bj::array{std::move(choice)};
  return bj::serialize(chunk);
}

std::string ChunkFormatter::finish_chunk(std::string_view finish_reason, int index) const {
  if (endpoint_ == Endpoint::chat_completions) {
    bj::object chunk = base("chat.completion.chunk");
    chunk["choices"] = bj::array{bj::object{{"index", index},
                                            {"delta", bj::object{{"content", ""}}},
                                            {"logprobs", nullptr},
                                            {"finish_reason", finish_reason}}};
    return bj::serialize(chunk);
  }
  bj::object chunk = base("text_completion");
  chunk["choices"] =
      bj::array{bj::object{{"index", index}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}};
  return bj::serialize(chunk);
}

std::string ChunkFormatter::usage_chunk(const Usage& usage) const {
  bj::object chunk = base(endpoint_ == Endpoint::chat_completions ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = bj::array{};
  chunk["usage"] = bj::object{{"prompt_tokens", usage.prompt_tokens},
                              {"completion_tokens", usage.completion_tokens},
                              {"total_tokens", int64_t{usage.prompt_tokens} + usage.completion_tokens}};
  return bj::serialize(chunk);
}

std::string ChunkFormatter::receipt_chunk(const Receipt& receipt) const {
  bj::object chunk = base(endpoint_ == Endpoint::chat_completions ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = bj::array{};
  bj::object body;
  body["request_id"] = receipt.request_id;
  body["completion_tokens"] = receipt.completion_tokens;
  body["response_hash"] = receipt.response_hash;
  body["signature"] = receipt.signature;
  body["public_key"] = receipt.public_key;
  chunk["darkbloom_receipt"] = std::move(body);
  return bj::serialize(chunk);
}

std::string ChunkFormatter::complete_response(const std::vector<Choice>& choices, const Usage& usage) const {
  const bool chat = endpoint_ == Endpoint::chat_completions;
  bj::object response = base(chat ? "chat.completion" : "text_completion");
  bj::array array;
  for (size_t i = 0; i < choices.size(); ++i) {
    bj::object choice{{"index", i}};
    if (chat) {
      bj::object message{{"role", "assistant"}};
      // An answer that only calls tools has no content (null, as OpenAI sends it).
      const bool calls_only = choices[i].text.empty() && !choices[i].tool_calls.empty();
      message["content"] = calls_only ? bj::value(nullptr) : bj::value(choices[i].text);
      if (!choices[i].tool_calls.empty()) {
        bj::array calls;
        for (const ToolCall& call : choices[i].tool_calls) calls.push_back(tool_call_object(call));
        message["tool_calls"] = std::move(calls);
      }
      choice["message"] = std::move(message);
    } else {
      choice["text"] = choices[i].text;
    }
    choice["logprobs"] = choices[i].logprobs;
    choice["finish_reason"] = choices[i].finish_reason;
    array.push_back(std::move(choice));
  }
  response["choices"] = std::move(array);
  response["usage"] = bj::object{{"prompt_tokens", usage.prompt_tokens},
                                 {"completion_tokens", usage.completion_tokens},
                                 {"total_tokens", int64_t{usage.prompt_tokens} + usage.completion_tokens}};
  return bj::serialize(response);
}

std::string stream_error_event(const ApiError& error) {
  return error.to_json();
}

}  // namespace darkbloom::proto
