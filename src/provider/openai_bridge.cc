#include "provider/openai_bridge.h"

#include <fmt/format.h>
#include <string.h>  // explicit_bzero

#include "base/utf8.h"
#include "crypto/system_random.h"
#include "engine/chat/chat_template.h"

namespace darkbloom::provider {

const char* openai_finish_reason(engine::FinishReason reason) {
  return reason == engine::FinishReason::length ? "length" : "stop";
}

namespace {

namespace bj = json::bj;

// The tools as the model is shown them (none when it may not call them).
std::vector<std::string> tool_definitions(const proto::CompletionRequest& request) {
  std::vector<std::string> out;
  if (request.tool_choice == proto::ToolChoice::none) return out;
  for (const proto::Tool& tool : request.tools) {
    bj::object function;
    function["name"] = tool.name;
    if (!tool.description.empty()) function["description"] = tool.description;
    function["parameters"] = tool.parameters.is_null() ? bj::value(bj::object{{"type", "object"}}) : tool.parameters;
    bj::object definition;
    definition["type"] = "function";
    definition["function"] = std::move(function);
    out.push_back(bj::serialize(definition));
  }
  return out;
}

std::vector<engine::ChatTurn> chat_turns(const proto::CompletionRequest& request) {
  std::vector<engine::ChatTurn> turns;
  turns.reserve(request.messages.size());
  for (const auto& message : request.messages) {
    engine::ChatTurn turn{message.role, message.content};
    for (const auto& call : message.tool_calls) turn.tool_calls.push_back({call.name, call.arguments, call.id});
    turn.tool_call_id = message.tool_call_id;
    turns.push_back(std::move(turn));
  }
  return turns;
}

// A function's arguments are an object: a schema that does not say so gets "type": "object"
// (one that says otherwise was refused with the request).
bj::value parameters_schema(const proto::Tool& tool) {
  if (!tool.parameters.is_object()) return bj::object{{"type", "object"}};
  bj::value schema = tool.parameters;
  if (!schema.as_object().contains("type")) schema.as_object()["type"] = "object";
  return schema;
}

// A schema moved under `prefix` in a larger one: its references to its own root ("#", "#/...")
// now point below the prefix. `named` is a map of names to schemas (properties, $defs), whose
// keys are not keywords.
bj::value moved_schema(const bj::value& schema, const std::string& prefix, bool named = false) {
  if (schema.is_array()) {
    bj::array out;
    for (const bj::value& item : schema.as_array()) out.push_back(moved_schema(item, prefix));
    return out;
  }
  if (!schema.is_object()) return schema;
  bj::object out;
  for (const auto& [key, value] : schema.as_object()) {
    if (named) {
      out[key] = moved_schema(value, prefix);
    } else if (key == "const" || key == "enum" || key == "default" || key == "examples") {
      out[key] = value;  // data, not schemas: a "$ref" in them is a value
    } else if (key == "$ref" && value.is_string() && value.as_string().starts_with("#")) {
      out[key] = prefix + std::string(value.as_string().subview(1));
    } else {
      const bool names = key == "properties" || key == "$defs" || key == "definitions";
      out[key] = moved_schema(value, prefix, names);
    }
  }
  return out;
}

// What a forced call is constrained to: the named tool's arguments, or a list of calls.
bj::value forced_call_schema(const proto::CompletionRequest& request) {
  if (request.tool_choice == proto::ToolChoice::named) {
    return parameters_schema(*proto::find_tool(request, request.tool_choice_name));
  }
  bj::array choices;
  for (size_t i = 0; i < request.tools.size(); ++i) {
    const proto::Tool& tool = request.tools[i];
    bj::object properties;
    properties["name"] = bj::object{{"const", tool.name}};
    // Each function's schema sits at #/items/anyOf/<i>/properties/arguments of the list's.
    properties["arguments"] =
        moved_schema(parameters_schema(tool), fmt::format("#/items/anyOf/{}/properties/arguments", i));
    bj::object call;
    call["type"] = "object";
    call["properties"] = std::move(properties);
    call["required"] = bj::array{"name", "arguments"};
    call["additionalProperties"] = false;
    choices.push_back(std::move(call));
  }
  bj::object list;
  list["type"] = "array";
  list["items"] = bj::object{{"anyOf", std::move(choices)}};
  list["minItems"] = 1;
  list["maxItems"] = request.parallel_tool_calls ? proto::kMaxToolCalls : 1;
  return list;
}

// The 400 for a forced call whose schema does not compile, naming the function at fault.
proto::ApiError refused_parameters(const engine::Engine& engine, const proto::CompletionRequest& request,
                                   const Error& combined) {
  for (size_t i = 0; i < request.tools.size(); ++i) {
    const proto::Tool& tool = request.tools[i];
    if (request.tool_choice == proto::ToolChoice::named && tool.name != request.tool_choice_name) continue;
    const bj::value schema = parameters_schema(tool);
    if (auto alone = engine.json_grammar(&schema); !alone) {
      const std::string param = fmt::format("tools[{}].function.parameters", i);
      return proto::invalid_request(param + ": " + alone.error().message, param);
    }
  }
  return proto::invalid_request("tools: " + combined.message, "tools");
}

bool forced(proto::ToolChoice choice) {
  return choice == proto::ToolChoice::named || choice == proto::ToolChoice::required;
}

}  // namespace

std::optional<engine::ToolCallParser> tool_call_parser(const engine::Engine& engine,
                                                       const proto::CompletionRequest& request) {
  using Mode = engine::ToolCallParser::Mode;
  if (request.tool_choice == proto::ToolChoice::none) return std::nullopt;
  std::vector<std::string> names;
  for (const proto::Tool& tool : request.tools) names.push_back(tool.name);
  const size_t max_calls = request.parallel_tool_calls ? proto::kMaxToolCalls : 1;
  switch (request.tool_choice) {
    case proto::ToolChoice::named:
      return engine::ToolCallParser(Mode::forced_named, std::move(names), 1, request.tool_choice_name);
    case proto::ToolChoice::required:
      return engine::ToolCallParser(Mode::forced_list, std::move(names), max_calls);
    case proto::ToolChoice::automatic:
    case proto::ToolChoice::none:
      break;
  }
  const auto syntax = engine::tool_call_syntax(engine.chat_template().format());
  return engine::ToolCallParser(syntax == engine::ToolCallSyntax::llama3_json ? Mode::llama3_json : Mode::hermes,
                                std::move(names), max_calls);
}

Result<engine::GenerationRequest> to_generation_request(const engine::Engine& engine,
                                                        const proto::CompletionRequest& request,
                                                        proto::ApiError* error) {
  engine::GenerationRequest out;
  const engine::Tokenizer& tokenizer = engine.tokenizer();
  std::string param;
  if (request.endpoint != proto::Endpoint::completions) {
    const auto turns = chat_turns(request);
    const auto tools = tool_definitions(request);
    auto prompt = engine.chat_template().encode(tokenizer, turns, tools, std::time(nullptr));
    if (!prompt) {
      // The model's template refused the conversation (e.g. roles that do not alternate).
      *error = proto::invalid_request("The model's chat template refused the messages: " + prompt.error().message,
                                      "messages");
      error->code = "chat_template_error";
      return prompt.error();
    }
    out.prompt_tokens = std::move(*prompt);
    param = "messages";
  } else {
    // A raw prompt belongs to its sender alone, so special-token text in it is honoured.
    out.prompt_tokens = tokenizer.encode(request.prompt);
    param = "prompt";
  }
  const int context = engine.context();
  const int prompt_length = static_cast<int>(out.prompt_tokens.size());
  if (prompt_length == 0) {
    *error = proto::invalid_request("The prompt is empty", param);
    return make_error(Errc::invalid_argument, error->message);
  }
  if (prompt_length >= context) {
    *error = proto::invalid_request(
        fmt::format("This model's context holds {} tokens; the prompt has {} (leave room for the answer)", context,
                    prompt_length),
        param);
    error->code = "context_length_exceeded";
    return make_error(Errc::out_of_range, error->message);
  }
  // Without a bound the answer may run to the end of the context.
  out.max_tokens = std::min(request.max_tokens.value_or(context - prompt_length), context - prompt_length);
  out.stop = request.stop;
  out.ignore_eos = request.ignore_eos;
  out.sampling.temperature = static_cast<float>(request.temperature.value_or(1.0));
  out.sampling.top_p = static_cast<float>(request.top_p.value_or(1.0));
  out.sampling.top_k = request.top_k && *request.top_k > 0 ? *request.top_k : 0;
  out.sampling.min_p = static_cast<float>(request.min_p.value_or(0.0));
  out.sampling.presence_penalty = static_cast<float>(request.presence_penalty.value_or(0.0));
  out.sampling.frequency_penalty = static_cast<float>(request.frequency_penalty.value_or(0.0));
  out.sampling.repetition_penalty = static_cast<float>(request.repetition_penalty.value_or(1.0));
  if (request.seed) out.sampling.seed = static_cast<uint64_t>(*request.seed);
  out.logprobs = request.logprobs ? request.top_logprobs : -1;
  if (!forced(request.tool_choice) &&
      (request.response_format == "json_object" || request.response_format == "json_schema")) {
    const json::bj::value* schema = request.json_schema.is_null() ? nullptr : &request.json_schema;
    auto grammar = engine.json_grammar(schema);
    if (!grammar) {
      *error =
          proto::invalid_request("response_format.json_schema.schema: " + grammar.error().message, "response_format");
      return grammar.error();
    }
    out.grammar = std::move(*grammar);
  }
  if (forced(request.tool_choice)) {
    // A forced call is constrained to its arguments' schema (in place of any response_format).
    const bj::value schema = forced_call_schema(request);
    auto grammar = engine.json_grammar(&schema);
    if (!grammar) {
      *error = refused_parameters(engine, request, grammar.error());
      return grammar.error();
    }
    out.grammar = std::move(*grammar);
  }
  if (auto status = out.sampling.validate(); !status) {
    *error = proto::invalid_request(status.error().message);
    return status.error();
  }
  return out;
}

namespace {

json::bj::array byte_values(std::string_view bytes) {
  json::bj::array out;
  for (char c : bytes) out.push_back(static_cast<uint8_t>(c));
  return out;
}

}  // namespace

json::bj::value LogprobsCollector::take(std::string_view text) {
  namespace bj = json::bj;
  if (pending_.empty()) {
    offset_ += text.size();
    return nullptr;
  }
  bj::object result;
  if (endpoint_ == proto::Endpoint::chat_completions) {
    bj::array content;
    for (const auto& sampled : pending_) {
      const std::string piece = tokenizer_.token_to_piece(sampled.token);
      bj::array top;
      for (const auto& alternative : sampled.top) {
        const std::string alternative_piece = tokenizer_.token_to_piece(alternative.token);
        top.push_back(bj::object{{"token", utf8::sanitize(alternative_piece)},
                                 {"logprob", alternative.logprob},
                                 {"bytes", byte_values(alternative_piece)}});
      }
      content.push_back(bj::object{{"token", utf8::sanitize(piece)},
                                   {"logprob", sampled.logprob},
                                   {"bytes", byte_values(piece)},
                                   {"top_logprobs", std::move(top)}});
    }
    result["content"] = std::move(content);
    result["refusal"] = nullptr;
  } else {
    bj::array tokens, token_logprobs, top_logprobs, text_offset;
    size_t offset = offset_;
    for (const auto& sampled : pending_) {
      const std::string piece = tokenizer_.token_to_piece(sampled.token);
      tokens.push_back(bj::value(utf8::sanitize(piece)));
      token_logprobs.push_back(sampled.logprob);
      bj::object top;
      for (const auto& alternative : sampled.top) {
        top[utf8::sanitize(tokenizer_.token_to_piece(alternative.token))] = alternative.logprob;
      }
      top_logprobs.push_back(std::move(top));
      text_offset.push_back(offset);
      offset += piece.size();
    }
    result["tokens"] = std::move(tokens);
    result["token_logprobs"] = std::move(token_logprobs);
    result["top_logprobs"] = std::move(top_logprobs);
    result["text_offset"] = std::move(text_offset);
  }
  pending_.clear();
  offset_ += text.size();
  return result;
}

class ChoiceRun::Sink final : public engine::GenerationSink {
 public:
  Sink(std::shared_ptr<net::AsyncQueue<Tagged>> queue, int index) : queue_(std::move(queue)), index_(index) {}
  void on_text(std::string_view delta) override { queue_->push({index_, std::string(delta)}); }
  void on_token(const engine::SampledToken& token) override { queue_->push({index_, token}); }
  void on_finish(const engine::FinishEvent& event) override { queue_->push({index_, event}); }

 private:
  std::shared_ptr<net::AsyncQueue<Tagged>> queue_;
  int index_;
};

ChoiceRun::ChoiceRun(engine::Engine& engine, net::asio::any_io_executor executor, proto::Endpoint endpoint,
                     engine::GenerationRequest request, int n, std::optional<engine::ToolCallParser> tools)
    : engine_(engine),
      request_(std::move(request)),
      n_(n),
      queue_(std::make_shared<net::AsyncQueue<Tagged>>(executor)),
      running_(static_cast<size_t>(n)) {
  for (int i = 0; i < n; ++i) collectors_.emplace_back(endpoint, engine.tokenizer());
  if (tools) parsers_.assign(static_cast<size_t>(n), *tools);
}

ChoiceRun::~ChoiceRun() {
  for (const auto& id : running_) {
    if (id) engine_.cancel(*id);
  }
  if (!request_.prompt_tokens.empty()) {
    explicit_bzero(request_.prompt_tokens.data(), request_.prompt_tokens.size() * sizeof(int32_t));
  }
}

Status ChoiceRun::start() {
  // With one choice the request moves on; with more, choice 0 gets a copy (request_ is wiped later).
  engine::GenerationRequest first = n_ == 1 ? std::move(request_) : request_;
  auto id = engine_.submit(std::move(first), std::make_shared<Sink>(queue_, 0));
  if (!id) return id.error();
  running_[0] = *id;
  return {};
}

void ChoiceRun::submit_others() {
  others_submitted_ = true;
  for (int i = 1; i < n_; ++i) {
    engine::GenerationRequest copy = request_;
    if (copy.sampling.seed) copy.sampling.seed = *copy.sampling.seed + static_cast<uint64_t>(i);
    Result<engine::RequestId> id = make_error(Errc::cancelled, "cancelled");
    if (!cancelled_) id = engine_.submit(std::move(copy), std::make_shared<Sink>(queue_, i));
    if (id) {
      running_[static_cast<size_t>(i)] = *id;
      continue;
    }
    // Not run (cancelled first, or refused as choice 0 was not): it ends here.
    engine::FinishEvent ended;
    ended.reason = cancelled_ ? engine::FinishReason::cancelled : engine::FinishReason::error;
    ended.error = id.error().message;
    queue_->push_here({i, ended});
  }
  explicit_bzero(request_.prompt_tokens.data(), request_.prompt_tokens.size() * sizeof(int32_t));
  request_.prompt_tokens.clear();
}

void ChoiceRun::cancel() {
  cancelled_ = true;
  for (const auto& id : running_) {
    if (id) engine_.cancel(*id);
  }
}

void ChoiceRun::push_parsed(int index, std::vector<engine::ToolCallSegment> segments) {
  LogprobsCollector& collector = collectors_[static_cast<size_t>(index)];
  bool content = false;
  bool calls = false;
  // In the order written: content and calls alternate as separate events.
  for (auto& segment : segments) {
    if (!segment.call) {
      Event event;
      event.index = index;
      event.logprobs = collector.take(segment.content);
      event.text = std::move(segment.content);
      ready_.push_back(std::move(event));
      content = true;
      continue;
    }
    if (!calls || ready_.back().tool_calls.empty()) {
      Event event;
      event.index = index;
      ready_.push_back(std::move(event));
    }
    calls = true;
    engine::ToolCallPiece& piece = *segment.call;
    proto::ToolCallDelta delta;
    delta.index = piece.index;
    if (!piece.name.empty()) {
      delta.id = crypto::system_random().id("call_", 12);
      delta.name = std::move(piece.name);
    }
    delta.arguments = std::move(piece.arguments);
    ready_.back().tool_calls.push_back(std::move(delta));
  }
  if (calls && !content) collector.take({});  // logprobs cover content; the tokens of calls are not reported
}

void ChoiceRun::on_text(int index, std::string text) {
  if (parsers_.empty()) {
    Event event;
    event.index = index;
    event.logprobs = collectors_[static_cast<size_t>(index)].take(text);
    event.text = std::move(text);
    ready_.push_back(std::move(event));
    return;
  }
  push_parsed(index, parsers_[static_cast<size_t>(index)].feed(text));
  explicit_bzero(text.data(), text.size());
}

void ChoiceRun::on_finish(int index, const engine::FinishEvent& finish) {
  bool called = false;
  if (!parsers_.empty()) {
    engine::ToolCallParser& parser = parsers_[static_cast<size_t>(index)];
    push_parsed(index, parser.finish());
    called = parser.calls() > 0;
  }
  Event event;
  event.index = index;
  event.finish = finish;
  event.finish_reason =
      called && finish.reason == engine::FinishReason::stop ? "tool_calls" : openai_finish_reason(finish.reason);
  running_[static_cast<size_t>(index)].reset();
  finished_ += 1;
  ready_.push_back(std::move(event));
}

net::awaitable<ChoiceRun::Event> ChoiceRun::next() {
  while (ready_.empty()) {
    Tagged tagged = co_await queue_->pop();
    const int index = tagged.first;
    if (index == 0 && !others_submitted_ && n_ > 1) submit_others();  // choice 0's prompt is in the cache now
    if (auto* sampled = std::get_if<engine::SampledToken>(&tagged.second)) {
      collectors_[static_cast<size_t>(index)].add(*sampled);
    } else if (auto* text = std::get_if<std::string>(&tagged.second)) {
      on_text(index, std::move(*text));
    } else {
      on_finish(index, std::get<engine::FinishEvent>(tagged.second));
    }
  }
  Event event = std::move(ready_.front());
  ready_.pop_front();
  co_return event;
}

}  // namespace darkbloom::provider
