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

}  // namespace
}  // namespace darkbloom::proto
