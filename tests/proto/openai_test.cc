#include "proto/openai.h"

#include <gtest/gtest.h>

namespace darkbloom::proto {
namespace {

Result<CompletionRequest> parse(Endpoint endpoint, std::string_view text, ApiError* error) {
  auto value = json::parse(text, "test");
  EXPECT_TRUE(value) << text;
  return parse_completion_request(endpoint, *value, error);
}

TEST(OpenAiRequests, a_full_chat_request_is_understood_and_unknown_fields_are_kept) {
  ApiError error;
  auto request = parse(Endpoint::chat_completions, R"({
      "model": "m", "stream": true, "stream_options": {"include_usage": true},
      "messages": [{"role": "system", "content": "s"},
                   {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                   {"role": "assistant", "content": null}],
      "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9, "seed": 7,
      "stop": ["x", "y"], "presence_penalty": 1, "user": "someone", "logit_bias": {"1": 5}})",
                       &error);
  ASSERT_TRUE(request) << error.message;
  EXPECT_EQ(request->model, "m");
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
  ASSERT_EQ(request->messages.size(), 3u);
  EXPECT_EQ(request->messages[1].content, "ab");
  EXPECT_EQ(request->messages[2].content, "");
  EXPECT_EQ(*request->max_tokens, 20);  // max_completion_tokens wins
  EXPECT_EQ(*request->temperature, 0.5);
  EXPECT_EQ(*request->seed, 7);
  EXPECT_EQ(request->stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(request->body.contains("logit_bias"));
  EXPECT_TRUE(request->body.contains("user"));
}

TEST(OpenAiRequests, each_invalid_field_is_a_400_naming_it) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"messages": [{"role": "user", "content": "x"}]})", "model"},
      {R"({"model": "m", "messages": []})", "messages"},
      {R"({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3})", "temperature"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0})", "top_p"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 9})", "n"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}})",
       "response_format"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})",
       "response_format"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],)"
       R"( "response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}})",
       "response_format"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})", "top_logprobs"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})",
       "top_logprobs"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": "yes"})", "logprobs"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]})", "stop"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"})", "stream"},
  };
  for (const auto& [body, param] : cases) {
    ApiError error;
    EXPECT_FALSE(parse(Endpoint::chat_completions, body, &error)) << body;
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, param) << body << ": " << error.message;
    EXPECT_EQ(error.type, "invalid_request_error");
  }
  ApiError error;
  EXPECT_FALSE(parse(Endpoint::completions, R"({"model": "m"})", &error));
  EXPECT_EQ(error.param, "prompt");
}

TEST(OpenAiResponses, errors_and_chunks_have_the_shapes_strict_clients_expect) {
  EXPECT_EQ(
      model_not_found("x").to_json(),
      R"({"error":{"message":"The model 'x' does not exist or no provider serves it","type":"invalid_request_error","code":"model_not_found","param":"model"}})");
  EXPECT_EQ(authentication_error("no").to_json(),
            R"({"error":{"message":"no","type":"authentication_error","code":"invalid_api_key","param":null}})");
  const ChunkFormatter chat(Endpoint::chat_completions, "chatcmpl-1", "m", 5);
  EXPECT_EQ(
      *chat.opening_chunk(),
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})");
  EXPECT_EQ(
      chat.finish_chunk("stop"),
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop"}]})");
  EXPECT_EQ(
      chat.usage_chunk({3, 4}),
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})");
  const ChunkFormatter text(Endpoint::completions, "cmpl-1", "m", 5);
  EXPECT_FALSE(text.opening_chunk());
  EXPECT_EQ(
      text.complete_response({{"hi", "length", nullptr}}, {1, 2}),
      R"({"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}})");
  // Several choices, in index order, each with its own logprobs and finish.
  EXPECT_EQ(
      chat.complete_response(
          {{"a", "stop", nullptr}, {"bc", "length", json::bj::object{{"content", json::bj::array{}}}}}, {2, 3}),
      R"({"id":"chatcmpl-1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"bc"},"logprobs":{"content":[]},"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}})");
}

constexpr std::string_view kWeatherTool =
    R"({"type": "function", "function": {"name": "get_weather", "description": "d",)"
    R"( "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})";

TEST(OpenAiTools, tools_choices_and_tool_call_history_are_understood) {
  ApiError error;
  const std::string body = std::string(R"({"model": "m", "tools": [)") + std::string(kWeatherTool) +
                           R"(], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},)"
                           R"( "parallel_tool_calls": false, "messages": [{"role": "user", "content": "w?"},)"
                           R"( {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",)"
                           R"( "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},)"
                           R"( {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})";
  auto request = parse(Endpoint::chat_completions, body, &error);
  ASSERT_TRUE(request) << error.message;
  ASSERT_EQ(request->tools.size(), 1u);
  EXPECT_EQ(request->tools[0].name, "get_weather");
  EXPECT_EQ(request->tools[0].description, "d");
  EXPECT_TRUE(request->tools[0].parameters.is_object());
  EXPECT_EQ(request->tool_choice, ToolChoice::named);
  EXPECT_EQ(request->tool_choice_name, "get_weather");
  EXPECT_FALSE(request->parallel_tool_calls);
  ASSERT_EQ(request->messages.size(), 3u);
  ASSERT_EQ(request->messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(request->messages[1].content, "");  // no content: the turn only calls
  EXPECT_EQ(request->messages[1].tool_calls[0].arguments, R"({"city":"Oslo"})");
  EXPECT_EQ(request->messages[2].tool_call_id, "call_1");

  // With tools and no tool_choice the model decides; without tools it calls nothing.
  auto automatic = parse(Endpoint::chat_completions,
                         std::string(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [)") +
                             std::string(kWeatherTool) + "]}",
                         &error);
  ASSERT_TRUE(automatic) << error.message;
  EXPECT_EQ(automatic->tool_choice, ToolChoice::automatic);
  auto plain =
      parse(Endpoint::chat_completions, R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})", &error);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->tool_choice, ToolChoice::none);
}

TEST(OpenAiTools, each_invalid_tool_field_is_a_400_naming_it) {
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  const std::string tools = std::string(R"("tools": [)") + std::string(kWeatherTool) + "]";
  const std::pair<std::string, std::string> cases[] = {
      {"{\"model\": \"m\", " + user + R"(, "tool_choice": "required"})", "tool_choice"},
      {"{\"model\": \"m\", " + user + ", " + tools + R"(, "tool_choice": "sometimes"})", "tool_choice"},
      {"{\"model\": \"m\", " + user + ", " + tools +
           R"(, "tool_choice": {"type": "function", "function": {"name": "other"}}})",
       "tool_choice"},
      {"{\"model\": \"m\", " + user + R"(, "tools": [{"type": "retrieval"}]})", "tools[0].type"},
      {"{\"model\": \"m\", " + user + R"(, "tools": [{"type": "function", "function": {"name": "a b"}}]})",
       "tools[0].function.name"},
      {"{\"model\": \"m\", " + user +
           R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]})",
       "tools[0].function.parameters"},
      {"{\"model\": \"m\", " + user + ", \"tools\": [" + std::string(kWeatherTool) + ", " + std::string(kWeatherTool) +
           "]}",
       "tools[1].function.name"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c1",)"
       R"( "content": "r"}]})",
       "messages[1].tool_call_id"},
      {R"({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",)"
       R"( "function": {"name": "f"}}]}]})",
       "messages[0].tool_calls[0].function.arguments"},
      {R"({"model": "m", "messages": [{"role": "assistant", "tool_calls": 5}]})", "messages[0].tool_calls"},
      {R"({"model": "m", "prompt": "x", "tools": []})", "tools"},
      {"{\"model\": \"m\", " + user +
           R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]})",
       "tools[0].function.parameters"},
  };
  for (const auto& [body, param] : cases) {
    ApiError error;
    const Endpoint endpoint =
        body.find("\"prompt\"") != std::string::npos ? Endpoint::completions : Endpoint::chat_completions;
    EXPECT_FALSE(parse(endpoint, body, &error)) << body;
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_EQ(error.param, param) << body << ": " << error.message;
  }
}

TEST(OpenAiTools, calls_stream_as_deltas_and_arrive_whole_with_null_content) {
  const ChunkFormatter format(Endpoint::chat_completions, "chatcmpl-1", "m", 5);
  std::vector<ToolCallDelta> first{{0, "call_a", "get_weather", R"({"ci)"}};
  auto chunk = json::parse(format.tool_call_chunk(first, 1), "chunk");
  ASSERT_TRUE(chunk);
  const auto& choice = chunk->as_object().at("choices").as_array()[0].as_object();
  EXPECT_EQ(choice.at("index").as_int64(), 1);
  const auto& call = choice.at("delta").as_object().at("tool_calls").as_array()[0].as_object();
  EXPECT_EQ(call.at("index").as_int64(), 0);
  EXPECT_EQ(call.at("id").as_string(), "call_a");
  EXPECT_EQ(call.at("type").as_string(), "function");
  EXPECT_EQ(call.at("function").as_object().at("name").as_string(), "get_weather");
  // A later piece carries only its fragment of the arguments.
  auto later = json::parse(format.tool_call_chunk({{0, "", "", R"(ty":1})"}}), "chunk");
  const auto& later_call =
      later->as_object().at("choices").as_array()[0].as_object().at("delta").as_object().at("tool_calls").as_array()[0];
  EXPECT_FALSE(later_call.as_object().contains("id"));
  EXPECT_FALSE(later_call.as_object().at("function").as_object().contains("name"));

  std::vector<ToolCall> calls;
  append_tool_call(&calls, first[0]);
  append_tool_call(&calls, {0, "", "", R"(ty":1})"});
  append_tool_call(&calls, {1, "call_b", "add", "{}"});
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].arguments, R"({"city":1})");
  ChunkFormatter::Choice whole;
  whole.finish_reason = "tool_calls";
  whole.tool_calls = calls;
  auto response = json::parse(format.complete_response({whole}, {3, 4}), "response");
  const auto& message = response->as_object().at("choices").as_array()[0].as_object().at("message").as_object();
  EXPECT_TRUE(message.at("content").is_null());
  EXPECT_EQ(message.at("tool_calls").as_array().size(), 2u);
  EXPECT_EQ(message.at("tool_calls").as_array()[1].as_object().at("function").as_object().at("name").as_string(),
            "add");
  // The receipt covers the calls: a different argument is a different text.
  EXPECT_NE(receipt_choice_text("", calls, true), receipt_choice_text("", {calls[0]}, true));
  EXPECT_EQ(receipt_choice_text("hi", {}, false), "hi");
  const std::string framed =
      "\x1f"
      "2:hi7:call_ab3:add2:{}";
  EXPECT_EQ(receipt_choice_text("hi", {{"call_ab", "add", "{}"}}, true), framed);
  // Content that spells a call is not a call: the lengths keep the fields apart.
  EXPECT_NE(receipt_choice_text(framed, {}, true), framed);
}

}  // namespace
}  // namespace darkbloom::proto
