#include "proto/responses.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

Result<CompletionRequest> parse(std::string_view text, ApiError* error) {
  auto value = json::parse(text, "test");
  EXPECT_TRUE(value) << text;
  return parse_responses_request(*value, error);
}

CompletionRequest parse_ok(std::string_view text) {
  ApiError error;
  auto request = parse(text, &error);
  EXPECT_TRUE(request) << text << ": " << error.message;
  return request ? *request : CompletionRequest{};
}

bj::object object_of(std::string_view text) {
  auto value = json::parse(text, "test");
  EXPECT_TRUE(value && value->is_object()) << text;
  return value && value->is_object() ? value->as_object() : bj::object{};
}

std::vector<bj::object> objects_of(const std::vector<std::string>& events) {
  std::vector<bj::object> objects;
  for (const std::string& event : events) objects.push_back(object_of(event));
  return objects;
}

std::vector<std::string> types_of(const std::vector<bj::object>& events) {
  std::vector<std::string> types;
  for (const bj::object& event : events) types.emplace_back(event.at("type").as_string());
  return types;
}

void append(std::vector<std::string>* all, const std::vector<std::string>& more) {
  all->insert(all->end(), more.begin(), more.end());
}

// ---- requests ----

TEST(ResponsesRequests, a_string_input_with_instructions_is_a_system_and_a_user_message) {
  const CompletionRequest request = parse_ok(
      R"({"model": "m", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 50,
          "temperature": 0.25, "top_p": 0.5, "stream": true, "store": true, "metadata": {"k": "v"}})");
  EXPECT_EQ(request.endpoint, Endpoint::responses);
  EXPECT_EQ(request.model, "m");
  ASSERT_EQ(request.messages.size(), 2u);
  EXPECT_EQ(request.messages[0].role, "system");
  EXPECT_EQ(request.messages[0].content, "Be brief.");
  EXPECT_EQ(request.messages[1].role, "user");
  EXPECT_EQ(request.messages[1].content, "Hi");
  EXPECT_EQ(request.max_tokens, 50);
  EXPECT_EQ(request.temperature, 0.25);
  EXPECT_EQ(request.top_p, 0.5);
  EXPECT_TRUE(request.stream);
  // The body is the chat body the provider gets: nothing of the Responses form is left in it.
  EXPECT_TRUE(request.body.contains("messages"));
  EXPECT_EQ(request.body.at("max_tokens").as_int64(), 50);
  for (const char* key : {"input", "instructions", "max_output_tokens", "store", "metadata"}) {
    EXPECT_FALSE(request.body.contains(key)) << key;
  }
}

TEST(ResponsesRequests, message_items_with_or_without_a_type_become_chat_messages) {
  const CompletionRequest request = parse_ok(R"({"model": "m", "input": [
      {"role": "developer", "content": "rules"},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                       {"type": "input_text", "text": "b"}]},
      {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
       "content": [{"type": "output_text", "text": "c", "annotations": []}]},
      {"role": "system", "content": ""}]})");
  ASSERT_EQ(request.messages.size(), 4u);
  EXPECT_EQ(request.messages[0].role, "developer");
  EXPECT_EQ(request.messages[0].content, "rules");
  EXPECT_EQ(request.messages[1].role, "user");
  EXPECT_EQ(request.messages[1].content, "ab");
  EXPECT_EQ(request.messages[2].role, "assistant");
  EXPECT_EQ(request.messages[2].content, "c");
  EXPECT_EQ(request.messages[3].role, "system");
}

TEST(ResponsesRequests, function_calls_join_the_assistant_turn_and_outputs_become_tool_messages) {
  const CompletionRequest request = parse_ok(R"({"model": "m", "input": [
      {"role": "user", "content": "weather in Paris and Rome?"},
      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
      {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_a", "name": "weather",
       "arguments": "{\"city\":\"Paris\"}"},
      {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
      {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
      {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "rain"}]},
      {"type": "function_call", "call_id": "call_c", "name": "time", "arguments": "{}"}]})");
  ASSERT_EQ(request.messages.size(), 5u);
  const ChatMessage& turn = request.messages[1];
  EXPECT_EQ(turn.role, "assistant");
  EXPECT_EQ(turn.content, "Checking.");
  ASSERT_EQ(turn.tool_calls.size(), 2u);
  EXPECT_EQ(turn.tool_calls[0].id, "call_a");
  EXPECT_EQ(turn.tool_calls[0].name, "weather");
  EXPECT_EQ(turn.tool_calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(turn.tool_calls[1].id, "call_b");
  EXPECT_EQ(request.messages[2].role, "tool");
  EXPECT_EQ(request.messages[2].tool_call_id, "call_a");
  EXPECT_EQ(request.messages[2].content, "sunny");
  EXPECT_EQ(request.messages[3].tool_call_id, "call_b");
  EXPECT_EQ(request.messages[3].content, "rain");
  // A call after a tool message starts an assistant message of its own.
  EXPECT_EQ(request.messages[4].role, "assistant");
  EXPECT_EQ(request.messages[4].content, "");
  ASSERT_EQ(request.messages[4].tool_calls.size(), 1u);
  EXPECT_EQ(request.messages[4].tool_calls[0].name, "time");
}

TEST(ResponsesRequests, text_format_becomes_the_chat_response_format) {
  const CompletionRequest schema = parse_ok(R"({"model": "m", "input": "x", "text": {"format": {
      "type": "json_schema", "name": "person", "strict": true, "description": "a person",
      "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}, "verbosity": "low"}})");
  EXPECT_EQ(schema.response_format, "json_schema");
  EXPECT_EQ(bj::serialize(schema.json_schema), R"({"type":"object","properties":{"name":{"type":"string"}}})");
  const bj::object& spec = schema.body.at("response_format").at("json_schema").as_object();
  EXPECT_EQ(spec.at("name").as_string(), "person");
  EXPECT_EQ(spec.at("strict").as_bool(), true);
  EXPECT_EQ(spec.at("description").as_string(), "a person");
  EXPECT_EQ(parse_ok(R"({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})").response_format,
            "json_object");
  EXPECT_EQ(parse_ok(R"({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})").response_format, "text");
}

TEST(ResponsesRequests, flat_function_tools_and_tool_choice_become_chat_tools) {
  const CompletionRequest request = parse_ok(R"({"model": "m", "input": "x", "parallel_tool_calls": false,
      "tools": [{"type": "function", "name": "weather", "description": "the weather", "strict": true,
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"type": "function", "name": "time", "parameters": null}],
      "tool_choice": {"type": "function", "name": "time"}})");
  ASSERT_EQ(request.tools.size(), 2u);
  EXPECT_EQ(request.tools[0].name, "weather");
  EXPECT_EQ(request.tools[0].description, "the weather");
  EXPECT_EQ(bj::serialize(request.tools[0].parameters), R"({"type":"object","properties":{"city":{"type":"string"}}})");
  EXPECT_EQ(request.tools[1].name, "time");
  EXPECT_TRUE(request.tools[1].parameters.is_null());
  EXPECT_EQ(request.tool_choice, ToolChoice::named);
  EXPECT_EQ(request.tool_choice_name, "time");
  EXPECT_FALSE(request.parallel_tool_calls);
  const bj::object& chat_tool = request.body.at("tools").at(0).as_object();
  EXPECT_EQ(chat_tool.at("type").as_string(), "function");
  EXPECT_EQ(chat_tool.at("function").at("strict").as_bool(), true);

  const std::string tools = R"("tools": [{"type": "function", "name": "f"}])";
  EXPECT_EQ(parse_ok(R"({"model": "m", "input": "x", )" + tools + "}").tool_choice, ToolChoice::automatic);
  EXPECT_EQ(parse_ok(R"({"model": "m", "input": "x", "tool_choice": "required", )" + tools + "}").tool_choice,
            ToolChoice::required);
  EXPECT_EQ(parse_ok(R"({"model": "m", "input": "x", "tool_choice": "none", )" + tools + "}").tool_choice,
            ToolChoice::none);
}

TEST(ResponsesRequests, sampling_extensions_pass_through_and_null_means_unset) {
  const CompletionRequest request = parse_ok(R"({"model": "m", "input": "x", "seed": 7, "top_k": 5,
      "stop": ["END"], "previous_response_id": null, "reasoning": null, "truncation": "disabled",
      "include": [], "background": false, "top_logprobs": 0, "user": "u", "text": null})");
  EXPECT_EQ(request.seed, 7);
  EXPECT_EQ(request.top_k, 5);
  EXPECT_EQ(request.stop, std::vector<std::string>{"END"});
}

TEST(ResponsesRequests, each_refusal_names_the_responses_field) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"input": "x"})", "model"},
      {R"({"model": "m"})", "input"},
      {R"({"model": "m", "input": []})", "input"},
      {R"({"model": "m", "input": 5})", "input"},
      {R"({"model": "m", "input": "x", "instructions": 3})", "instructions"},
      {R"({"model": "m", "input": ["x"]})", "input[0]"},
      {R"({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})",
       "input[1].role"},
      {R"({"model": "m", "input": [{"role": "user"}]})", "input[0].content"},
      {R"({"model": "m", "input": [{"role": "user", "content": "a"},
           {"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]})",
       "input[1].content"},
      {R"({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})",
       "input[0].content"},
      {R"({"model": "m", "input": [{"type": "reasoning", "summary": []}]})", "input[0].type"},
      {R"({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]})", "input[0].type"},
      {R"({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]})", "input[0].call_id"},
      {R"({"model": "m", "input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]})",
       "input[0].call_id"},
      {R"({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "a b", "arguments": "{}"}]})",
       "input[0].name"},
      {R"({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]})", "input[0].arguments"},
      {R"({"model": "m", "input": [{"role": "user", "content": "a"},
           {"type": "function_call_output", "call_id": "nope", "output": "x"}]})",
       "input[1].call_id"},
      {R"({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
           {"type": "function_call_output", "call_id": "c"}]})",
       "input[1].output"},
      {R"({"model": "m", "input": "x", "max_output_tokens": 0})", "max_output_tokens"},
      {R"({"model": "m", "input": "x", "max_output_tokens": 2000000})", "max_output_tokens"},
      {R"({"model": "m", "input": "x", "temperature": 3})", "temperature"},
      {R"({"model": "m", "input": "x", "stream": "yes"})", "stream"},
      {R"({"model": "m", "input": "x", "text": 1})", "text"},
      {R"({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}})", "text.format"},
      {R"({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}})", "text.format"},
      {R"({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "p", "schema": 3}}})",
       "text.format"},
      {R"({"model": "m", "input": "x", "tools": {}})", "tools"},
      {R"({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})", "tools[0].type"},
      {R"({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]})",
       "tools[1].type"},
      {R"({"model": "m", "input": "x", "tools": [{"type": "function", "name": ""}]})", "tools[0].name"},
      {R"({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]})",
       "tools[0].parameters"},
      {R"({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]})",
       "tools[1].name"},
      {R"({"model": "m", "input": "x", "tool_choice": "always", "tools": [{"type": "function", "name": "f"}]})",
       "tool_choice"},
      {R"({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}, "tools": [{"type": "function", "name": "f"}]})",
       "tool_choice"},
      {R"({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "g"}, "tools": [{"type": "function", "name": "f"}]})",
       "tool_choice"},
      {R"({"model": "m", "input": "x", "tool_choice": "required"})", "tool_choice"},
      {R"({"model": "m", "input": "x", "parallel_tool_calls": 1})", "parallel_tool_calls"},
      {R"({"model": "m", "input": "x", "previous_response_id": "resp_1"})", "previous_response_id"},
      {R"({"model": "m", "input": "x", "conversation": "conv_1"})", "conversation"},
      {R"({"model": "m", "input": "x", "prompt": {"id": "p"}})", "prompt"},
      {R"({"model": "m", "input": "x", "background": true})", "background"},
      {R"({"model": "m", "input": "x", "include": ["message.output_text.logprobs"]})", "include"},
      {R"({"model": "m", "input": "x", "top_logprobs": 3})", "top_logprobs"},
      {R"({"model": "m", "input": "x", "reasoning": {"effort": "high"}})", "reasoning"},
      {R"({"model": "m", "input": "x", "truncation": "auto"})", "truncation"},
      {R"({"model": "m", "input": "x", "store": "yes"})", "store"},
      {R"({"model": "m", "input": "x", "messages": []})", "messages"},
      {R"({"model": "m", "input": "x", "seed": "seven"})", "seed"},
  };
  for (const auto& [body, param] : cases) {
    ApiError error;
    EXPECT_FALSE(parse(body, &error)) << body;
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_EQ(error.type, "invalid_request_error") << body;
    EXPECT_EQ(error.param, param) << body << ": " << error.message;
    EXPECT_TRUE(error.message.starts_with(param)) << body << ": " << error.message;
  }
}

TEST(ResponsesRequests, refusals_say_what_to_do_instead) {
  ApiError error;
  EXPECT_FALSE(parse(R"({"model": "m", "input": "x", "previous_response_id": "resp_1"})", &error));
  EXPECT_NE(error.message.find("not stored"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("input"), std::string::npos) << error.message;
  EXPECT_FALSE(parse(R"({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]})", &error));
  EXPECT_NE(error.message.find("input_image"), std::string::npos) << error.message;
  EXPECT_FALSE(parse(R"({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}]})", &error));
  EXPECT_NE(error.message.find("web_search_preview"), std::string::npos) << error.message;
}

TEST(ResponsesRequests, bounds_hold_on_items_calls_and_schema_depth) {
  std::string items = R"({"role": "user", "content": "x"})";
  for (size_t i = 1; i < kMaxInputItems; ++i) items += R"(,{"role": "user", "content": "x"})";
  ApiError error;
  EXPECT_TRUE(parse(R"({"model": "m", "input": [)" + items + "]}", &error)) << error.message;
  EXPECT_FALSE(parse(R"({"model": "m", "instructions": "s", "input": [)" + items + "]}", &error));
  EXPECT_EQ(error.param, "input");

  std::string calls;
  for (size_t i = 0; i <= kMaxHistoryToolCalls; ++i) {
    calls += (i ? "," : "") +
             std::string(R"({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c)") +
             std::to_string(i) + "\"}";
  }
  EXPECT_FALSE(parse(R"({"model": "m", "input": [)" + calls + "]}", &error));
  EXPECT_EQ(error.param, fmt::format("input[{}]", kMaxHistoryToolCalls));

  // A schema as deep as the parser allows would be one level too deep once wrapped for chat.
  std::string schema = "{}";
  for (size_t i = 0; i < json::kMaxDepth - 4; ++i) schema = R"({"a":)" + schema + "}";
  const std::string body =
      R"({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": )" + schema + "}]}";
  EXPECT_FALSE(parse_responses_body(body, &error));
  EXPECT_EQ(error.param, "tools[0].parameters");
}

TEST(ResponsesRequests, malformed_json_is_a_400) {
  ApiError error;
  EXPECT_FALSE(parse_responses_body(R"({"model": "m", "input": )", &error));
  EXPECT_EQ(error.status, 400);
  EXPECT_NE(error.message.find("not valid JSON"), std::string::npos);
  EXPECT_FALSE(parse_responses_body("[]", &error));
  EXPECT_EQ(error.status, 400);
  EXPECT_TRUE(parse_responses_body(R"({"model": "m", "input": "x"})", &error)) << error.message;
}

// ---- the writer ----

const char* const kToolsRequest = R"({"model": "m", "input": "x", "max_output_tokens": 100, "temperature": 0.5,
    "tools": [{"type": "function", "name": "weather", "strict": true,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
              {"type": "function", "name": "time", "description": "now"}],
    "tool_choice": "required", "parallel_tool_calls": true})";

void expect_consecutive_sequence_numbers(const std::vector<bj::object>& events) {
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].at("sequence_number").as_int64(), static_cast<int64_t>(i)) << bj::serialize(events[i]);
  }
}

TEST(ResponsesWriter, a_text_answer_streams_the_events_the_sdk_accumulates) {
  ResponsesWriter writer("resp_abc", "m", 1700000000, parse_ok(R"({"model": "m", "input": "x"})"));
  std::vector<std::string> all = writer.start();
  append(&all, writer.text("Hel"));
  append(&all, writer.text("lo"));
  append(&all, writer.finish("stop", Usage{7, 2}, nullptr));
  append(&all, writer.text("late"));  // after the end: nothing
  const auto events = objects_of(all);
  EXPECT_EQ(types_of(events),
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.completed"}));
  expect_consecutive_sequence_numbers(events);
  const bj::object& created = events[0].at("response").as_object();
  EXPECT_EQ(created.at("status").as_string(), "in_progress");
  EXPECT_TRUE(created.at("output").as_array().empty());
  EXPECT_EQ(bj::serialize(events[2].at("item")),
            R"({"id":"msg_abc","type":"message","status":"in_progress","role":"assistant","content":[]})");
  EXPECT_EQ(bj::serialize(events[3].at("part")), R"({"type":"output_text","text":"","annotations":[]})");
  EXPECT_EQ(events[4].at("item_id").as_string(), "msg_abc");
  EXPECT_EQ(events[4].at("output_index").as_int64(), 0);
  EXPECT_EQ(events[4].at("content_index").as_int64(), 0);
  EXPECT_EQ(events[5].at("delta").as_string(), "lo");
  EXPECT_EQ(events[6].at("text").as_string(), "Hello");
  EXPECT_EQ(events[8].at("item").at("status").as_string(), "completed");
  EXPECT_EQ(events[8].at("item").at("content").at(0).at("text").as_string(), "Hello");
  const bj::object& response = events[9].at("response").as_object();
  EXPECT_EQ(response.at("id").as_string(), "resp_abc");
  EXPECT_EQ(response.at("object").as_string(), "response");
  EXPECT_EQ(response.at("created_at").as_int64(), 1700000000);
  EXPECT_EQ(response.at("status").as_string(), "completed");
  EXPECT_TRUE(response.at("incomplete_details").is_null());
  EXPECT_TRUE(response.at("error").is_null());
  EXPECT_EQ(response.at("output").at(0).at("content").at(0).at("text").as_string(), "Hello");
  EXPECT_EQ(response.at("usage").at("input_tokens").as_int64(), 7);
  EXPECT_EQ(response.at("usage").at("output_tokens").as_int64(), 2);
  EXPECT_EQ(response.at("usage").at("total_tokens").as_int64(), 9);
  EXPECT_FALSE(response.contains("darkbloom_receipt"));
  EXPECT_FALSE(response.contains("output_text"));
}

TEST(ResponsesWriter, text_then_two_calls_closes_each_item_before_the_next) {
  ResponsesWriter writer("resp_r1", "m", 1, parse_ok(kToolsRequest));
  std::vector<std::string> all = writer.text("Let me check.");  // starts the stream itself
  append(&all, writer.tool_call({0, "call_a", "weather", ""}));
  append(&all, writer.tool_call({0, "", "", R"({"city":)"}));
  append(&all, writer.tool_call({0, "", "", R"("Paris"})"}));
  append(&all, writer.tool_call({1, "call_b", "time", "{}"}));
  append(&all, writer.finish("tool_calls", Usage{10, 20}, nullptr));
  const auto events = objects_of(all);
  EXPECT_EQ(types_of(events),
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                "response.output_item.done", "response.output_item.added", "response.function_call_arguments.delta",
                "response.function_call_arguments.delta", "response.function_call_arguments.done",
                "response.output_item.done", "response.output_item.added", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done", "response.completed"}));
  expect_consecutive_sequence_numbers(events);
  EXPECT_EQ(bj::serialize(events[8].at("item")),
            R"({"id":"fc_r1_0","type":"function_call","status":"in_progress","call_id":"call_a","name":"weather",)"
            R"("arguments":""})");
  EXPECT_EQ(events[8].at("output_index").as_int64(), 1);
  EXPECT_EQ(events[9].at("item_id").as_string(), "fc_r1_0");
  EXPECT_EQ(events[11].at("arguments").as_string(), R"({"city":"Paris"})");
  EXPECT_EQ(events[11].at("name").as_string(), "weather");
  EXPECT_EQ(events[12].at("item").at("status").as_string(), "completed");
  EXPECT_EQ(events[13].at("output_index").as_int64(), 2);
  EXPECT_EQ(events[13].at("item").at("id").as_string(), "fc_r1_1");
  const bj::object& response = events.back().at("response").as_object();
  EXPECT_EQ(response.at("status").as_string(), "completed");
  const bj::array& output = response.at("output").as_array();
  ASSERT_EQ(output.size(), 3u);
  EXPECT_EQ(output[0].at("type").as_string(), "message");
  EXPECT_EQ(output[1].at("call_id").as_string(), "call_a");
  EXPECT_EQ(output[1].at("arguments").as_string(), R"({"city":"Paris"})");
  EXPECT_EQ(output[2].at("name").as_string(), "time");
  EXPECT_EQ(output[2].at("arguments").as_string(), "{}");
}

TEST(ResponsesWriter, text_after_a_call_opens_a_new_message_item) {
  ResponsesWriter writer("resp_r2", "m", 1, parse_ok(kToolsRequest));
  std::vector<std::string> all = writer.tool_call({0, "call_a", "time", "{}"});
  append(&all, writer.text("done"));
  append(&all, writer.finish("stop", Usage{}, nullptr));
  const auto events = objects_of(all);
  expect_consecutive_sequence_numbers(events);
  const bj::array& output = events.back().at("response").at("output").as_array();
  ASSERT_EQ(output.size(), 2u);
  EXPECT_EQ(output[0].at("id").as_string(), "fc_r2_0");
  EXPECT_EQ(output[1].at("id").as_string(), "msg_r2");
  EXPECT_EQ(output[1].at("content").at(0).at("text").as_string(), "done");
}

TEST(ResponsesWriter, a_length_finish_is_an_incomplete_response) {
  ResponsesWriter writer("resp_r3", "m", 1, parse_ok(kToolsRequest));
  std::vector<std::string> all = writer.start();
  append(&all, writer.text("trunc"));
  append(&all, writer.finish("length", Usage{3, 100}, nullptr));
  const auto events = objects_of(all);
  expect_consecutive_sequence_numbers(events);
  EXPECT_EQ(events.back().at("type").as_string(), "response.incomplete");
  const bj::object& response = events.back().at("response").as_object();
  EXPECT_EQ(response.at("status").as_string(), "incomplete");
  EXPECT_EQ(bj::serialize(response.at("incomplete_details")), R"({"reason":"max_output_tokens"})");
  EXPECT_EQ(response.at("output").at(0).at("status").as_string(), "incomplete");
  EXPECT_EQ(events[events.size() - 2].at("item").at("status").as_string(), "incomplete");
}

TEST(ResponsesWriter, an_empty_answer_is_still_one_message) {
  ResponsesWriter writer("resp_r4", "m", 1, parse_ok(R"({"model": "m", "input": "x"})"));
  const auto events = objects_of(writer.finish("stop", Usage{}, nullptr));
  expect_consecutive_sequence_numbers(events);
  const bj::array& output = events.back().at("response").at("output").as_array();
  ASSERT_EQ(output.size(), 1u);
  EXPECT_EQ(output[0].at("content").at(0).at("text").as_string(), "");
}

TEST(ResponsesWriter, the_response_echoes_the_request_settings_and_the_receipt) {
  ResponsesWriter writer("resp_r5", "m", 1, parse_ok(kToolsRequest));
  Receipt receipt{"req-1", 20, "abcd", "sig", "key"};
  const auto events = objects_of(writer.finish("stop", Usage{1, 20}, &receipt));
  const bj::object& response = events.back().at("response").as_object();
  EXPECT_EQ(response.at("max_output_tokens").as_int64(), 100);
  EXPECT_EQ(response.at("temperature").as_double(), 0.5);
  EXPECT_TRUE(response.at("top_p").is_null());
  EXPECT_EQ(response.at("tool_choice").as_string(), "required");
  EXPECT_TRUE(response.at("parallel_tool_calls").as_bool());
  EXPECT_EQ(bj::serialize(response.at("tools")),
            R"([{"type":"function","name":"weather","description":null,)"
            R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true},)"
            R"({"type":"function","name":"time","description":"now","parameters":null,"strict":null}])");
  EXPECT_EQ(bj::serialize(response.at("text")), R"({"format":{"type":"text"}})");
  EXPECT_EQ(bj::serialize(response.at("darkbloom_receipt")),
            R"({"request_id":"req-1","completion_tokens":20,"response_hash":"abcd","signature":"sig",)"
            R"("public_key":"key"})");

  ResponsesWriter named("resp_r6", "m", 1, parse_ok(R"({"model": "m", "input": "x",
      "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "f"},
      "text": {"format": {"type": "json_schema", "name": "p", "strict": true, "schema": {"type": "object"}}}})"));
  const bj::object whole = object_of(named.whole({"{}", "stop", nullptr, {}}, Usage{}, nullptr));
  EXPECT_EQ(bj::serialize(whole.at("tool_choice")), R"({"type":"function","name":"f"})");
  EXPECT_EQ(bj::serialize(whole.at("text")),
            R"({"format":{"type":"json_schema","name":"p","schema":{"type":"object"},"strict":true}})");
}

TEST(ResponsesWriter, a_failure_after_the_start_is_a_failed_response) {
  ResponsesWriter writer("resp_r7", "m", 1, parse_ok(R"({"model": "m", "input": "x"})"));
  std::vector<std::string> all = writer.start();
  append(&all, writer.text("part"));
  append(&all, writer.failed(timeout_error("The provider stopped answering")));
  append(&all, writer.finish("stop", Usage{}, nullptr));  // after the end: nothing
  const auto events = objects_of(all);
  expect_consecutive_sequence_numbers(events);
  EXPECT_EQ(events.back().at("type").as_string(), "response.failed");
  const bj::object& response = events.back().at("response").as_object();
  EXPECT_EQ(response.at("status").as_string(), "failed");
  EXPECT_EQ(bj::serialize(response.at("error")), R"({"code":"timeout","message":"The provider stopped answering"})");
  EXPECT_EQ(response.at("output").at(0).at("status").as_string(), "incomplete");
  EXPECT_EQ(response.at("output").at(0).at("content").at(0).at("text").as_string(), "part");
}

TEST(ResponsesWriter, a_piece_of_a_finished_call_fails_the_response) {
  ResponsesWriter writer("resp_r8", "m", 1, parse_ok(kToolsRequest));
  std::vector<std::string> all = writer.tool_call({0, "call_a", "time", "{"});
  append(&all, writer.tool_call({1, "call_b", "time", "{}"}));
  append(&all, writer.tool_call({0, "", "", "}"}));
  const auto events = objects_of(all);
  expect_consecutive_sequence_numbers(events);
  EXPECT_EQ(events.back().at("type").as_string(), "response.failed");
  EXPECT_EQ(events.back().at("response").at("error").at("code").as_string(), "provider_error");
}

TEST(ResponsesWriter, whole_lists_the_message_then_each_call) {
  ResponsesWriter writer("resp_w1", "m", 5, parse_ok(kToolsRequest));
  ChunkFormatter::Choice choice;
  choice.text = "Checking.";
  choice.finish_reason = "tool_calls";
  choice.tool_calls = {{"call_a", "weather", R"({"city":"Paris"})"}, {"call_b", "time", "{}"}};
  const bj::object response = object_of(writer.whole(choice, Usage{4, 6}, nullptr));
  EXPECT_EQ(response.at("id").as_string(), "resp_w1");
  EXPECT_EQ(response.at("object").as_string(), "response");
  EXPECT_EQ(response.at("created_at").as_int64(), 5);
  EXPECT_EQ(response.at("status").as_string(), "completed");
  EXPECT_EQ(response.at("model").as_string(), "m");
  EXPECT_EQ(bj::serialize(response.at("output")),
            R"([{"id":"msg_w1","type":"message","status":"completed","role":"assistant",)"
            R"("content":[{"type":"output_text","text":"Checking.","annotations":[]}]},)"
            R"({"id":"fc_w1_0","type":"function_call","status":"completed","call_id":"call_a","name":"weather",)"
            R"("arguments":"{\"city\":\"Paris\"}"},)"
            R"({"id":"fc_w1_1","type":"function_call","status":"completed","call_id":"call_b","name":"time",)"
            R"("arguments":"{}"}])");
  EXPECT_EQ(bj::serialize(response.at("usage")),
            R"({"input_tokens":4,"input_tokens_details":{"cached_tokens":0},"output_tokens":6,)"
            R"("output_tokens_details":{"reasoning_tokens":0},"total_tokens":10})");
  EXPECT_FALSE(response.contains("output_text"));

  // Calls only: no message item. Cut short: incomplete.
  choice.text.clear();
  choice.finish_reason = "length";
  const bj::object cut = object_of(writer.whole(choice, Usage{}, nullptr));
  EXPECT_EQ(cut.at("status").as_string(), "incomplete");
  EXPECT_EQ(bj::serialize(cut.at("incomplete_details")), R"({"reason":"max_output_tokens"})");
  ASSERT_EQ(cut.at("output").as_array().size(), 2u);
  EXPECT_EQ(cut.at("output").at(0).at("type").as_string(), "function_call");
}

TEST(ResponsesWriter, the_output_fed_back_as_input_continues_the_conversation) {
  ResponsesWriter writer("resp_w2", "m", 5, parse_ok(kToolsRequest));
  ChunkFormatter::Choice choice{"Checking.", "tool_calls", nullptr, {{"call_a", "time", "{}"}}};
  const bj::object response = object_of(writer.whole(choice, Usage{}, nullptr));
  bj::array input{bj::object{{"role", "user"}, {"content", "what time is it?"}}};
  for (const bj::value& item : response.at("output").as_array()) input.push_back(item);
  input.push_back(bj::object{{"type", "function_call_output"}, {"call_id", "call_a"}, {"output", "noon"}});
  ApiError error;
  auto request = parse_responses_request(bj::object{{"model", "m"}, {"input", input}}, &error);
  ASSERT_TRUE(request) << error.message;
  ASSERT_EQ(request->messages.size(), 3u);
  EXPECT_EQ(request->messages[1].content, "Checking.");
  ASSERT_EQ(request->messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(request->messages[1].tool_calls[0].id, "call_a");
  EXPECT_EQ(request->messages[2].tool_call_id, "call_a");
}

}  // namespace
}  // namespace darkbloom::proto
