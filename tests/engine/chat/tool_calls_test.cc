// The tool-call parser on canned answers in each family's syntax (a random-weight model never
// chooses to call), fed whole, in every split into two pieces and byte by byte, which must not
// change anything.
#include "engine/chat/tool_calls.h"

#include <gtest/gtest.h>

namespace darkbloom::engine {
namespace {

using Mode = ToolCallParser::Mode;

struct Parsed {
  std::string content;
  std::vector<ToolCallPiece> calls;  // joined: one per call, arguments whole
};

void add(Parsed& parsed, std::vector<ToolCallSegment> segments) {
  for (auto& segment : segments) {
    if (!segment.call) {
      EXPECT_FALSE(segment.content.empty());
      parsed.content += segment.content;
      continue;
    }
    ToolCallPiece& piece = *segment.call;
    if (static_cast<size_t>(piece.index) == parsed.calls.size()) {
      EXPECT_FALSE(piece.name.empty());
      parsed.calls.push_back(std::move(piece));
    } else {
      // Only the last call goes on, and never after content.
      ASSERT_EQ(static_cast<size_t>(piece.index) + 1, parsed.calls.size());
      EXPECT_TRUE(piece.name.empty());
      EXPECT_FALSE(piece.arguments.empty());
      parsed.calls.back().arguments += piece.arguments;
    }
  }
}

Parsed parse_pieces(Mode mode, const std::vector<std::string>& pieces, size_t max_calls = 16,
                    const std::string& forced = {}) {
  ToolCallParser parser(mode, {"get_weather", "add"}, max_calls, forced);
  Parsed parsed;
  for (const auto& piece : pieces) add(parsed, parser.feed(piece));
  add(parsed, parser.finish());
  EXPECT_EQ(parser.calls(), static_cast<int>(parsed.calls.size()));
  return parsed;
}

void expect_same(const Parsed& a, const Parsed& b, const std::string& how) {
  EXPECT_EQ(a.content, b.content) << how;
  EXPECT_EQ(a.calls.size(), b.calls.size()) << how;
  for (size_t i = 0; i < std::min(a.calls.size(), b.calls.size()); ++i) {
    EXPECT_EQ(a.calls[i].name, b.calls[i].name) << how;
    EXPECT_EQ(a.calls[i].arguments, b.calls[i].arguments) << how;
  }
}

// Parsed whole, split at every byte, and byte by byte: always the same result.
Parsed parse(Mode mode, const std::string& text, size_t max_calls = 16, const std::string& forced = {}) {
  const Parsed whole = parse_pieces(mode, {text}, max_calls, forced);
  for (size_t split = 1; split < text.size(); ++split) {
    expect_same(parse_pieces(mode, {text.substr(0, split), text.substr(split)}, max_calls, forced), whole,
                "split at " + std::to_string(split));
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  expect_same(parse_pieces(mode, bytes, max_calls, forced), whole, "byte by byte");
  return whole;
}

TEST(ToolCallParser, qwen_and_hermes_calls_are_read_out_of_the_text) {
  const Parsed parsed = parse(Mode::hermes,
                              "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                              "\"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, "
                              "\"b\": 2}}\n</tool_call>");
  EXPECT_EQ(parsed.content, "Let me check.");
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[0].name, "get_weather");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"city": "Oslo"})");  // the model's own text
  EXPECT_EQ(parsed.calls[1].name, "add");
  EXPECT_EQ(parsed.calls[1].arguments, R"({"a": 1, "b": 2})");
}

TEST(ToolCallParser, an_answer_that_only_calls_has_no_content_and_text_stays_text) {
  const Parsed only = parse(Mode::hermes, "\n<tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call>\n");
  EXPECT_EQ(only.content, "");
  ASSERT_EQ(only.calls.size(), 1u);
  EXPECT_EQ(only.calls[0].arguments, "{}");

  const Parsed text = parse(Mode::hermes, "No tools needed: 3 < 4, and <tool is a word.\n");
  EXPECT_EQ(text.content, "No tools needed: 3 < 4, and <tool is a word.\n");
  EXPECT_TRUE(text.calls.empty());
}

TEST(ToolCallParser, calls_that_name_no_tool_or_have_no_object_for_arguments_are_content) {
  const std::string unknown = "Hm. <tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call> ok";
  EXPECT_EQ(parse(Mode::hermes, unknown).content, unknown);
  const std::string numbers = "<tool_call>{\"name\": \"add\", \"arguments\": [1, 2]}</tool_call>";
  EXPECT_EQ(parse(Mode::hermes, numbers).content, numbers);
  const std::string prose = "<tool_call> I would call add here </tool_call>";
  EXPECT_EQ(parse(Mode::hermes, prose).content, prose);
  // Begun calls stream: one that breaks off keeps the arguments it has (as OpenAI's do on length).
  const Parsed broken = parse(Mode::hermes, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1</tool_call>");
  ASSERT_EQ(broken.calls.size(), 1u);
  EXPECT_EQ(broken.calls[0].arguments, R"({"a": 1)");
  EXPECT_EQ(broken.content, "");
}

TEST(ToolCallParser, arguments_before_the_name_are_held_until_it_comes) {
  const Parsed parsed = parse(Mode::hermes, R"(<tool_call>{"arguments": {"b": [1, {"c": "}"}]}, "name": "add"})"
                                            R"(</tool_call>)");
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.calls[0].name, "add");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"b": [1, {"c": "}"}]})");
}

TEST(ToolCallParser, text_that_never_becomes_a_call_is_not_held_forever) {
  const std::string long_key = "<tool_call>{\"" + std::string(ToolCallParser::kMaxHeldBytes, 'k');
  ToolCallParser parser(Mode::hermes, {"add"}, 16);
  const auto segments = parser.feed(long_key);
  ASSERT_FALSE(segments.empty());
  EXPECT_FALSE(segments[0].call);
}

TEST(ToolCallParser, a_call_left_open_at_the_end_and_arguments_as_a_string_are_read) {
  const Parsed open = parse(Mode::hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n");
  ASSERT_EQ(open.calls.size(), 1u);
  EXPECT_EQ(open.calls[0].arguments, R"({"a": 1})");
  const Parsed string_arguments =
      parse(Mode::hermes, R"(<tool_call>{"name": "add", "arguments": "{\"a\": 1}"}</tool_call>)");
  ASSERT_EQ(string_arguments.calls.size(), 1u);
  EXPECT_EQ(string_arguments.calls[0].arguments, R"({"a": 1})");
}

TEST(ToolCallParser, calls_past_the_limit_stay_content) {
  const std::string two =
      "<tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call>"
      "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 2}}</tool_call>";
  const Parsed one = parse(Mode::hermes, two, /*max_calls=*/1);
  ASSERT_EQ(one.calls.size(), 1u);
  EXPECT_EQ(one.content, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 2}}</tool_call>");
}

TEST(ToolCallParser, llama_3_1_answers_that_are_a_json_call_are_calls) {
  const Parsed call = parse(Mode::llama3_json, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lima\"}}");
  EXPECT_EQ(call.content, "");
  ASSERT_EQ(call.calls.size(), 1u);
  EXPECT_EQ(call.calls[0].name, "get_weather");
  EXPECT_EQ(call.calls[0].arguments, R"({"city": "Lima"})");

  const Parsed tagged = parse(Mode::llama3_json,
                              "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 1}}; "
                              "{\"name\": \"add\", \"parameters\": {\"b\": 2}}");
  ASSERT_EQ(tagged.calls.size(), 2u);
  EXPECT_EQ(tagged.calls[1].arguments, R"({"b": 2})");

  // JSON that is not a call, and prose, are content.
  EXPECT_EQ(parse(Mode::llama3_json, "{\"answer\": 42}").content, "{\"answer\": 42}");
  EXPECT_EQ(parse(Mode::llama3_json, "It is sunny; {\"name\": \"add\"}").content, "It is sunny; {\"name\": \"add\"}");
  const Parsed semicolon = parse(Mode::llama3_json, "{\"name\": \"add\", \"parameters\": {\"s\": \"a;b\"}}");
  ASSERT_EQ(semicolon.calls.size(), 1u);
  EXPECT_EQ(semicolon.calls[0].arguments, R"({"s": "a;b"})");
  // Past the limit, the rest of the answer is content.
  const Parsed limited = parse(Mode::llama3_json, "{\"name\": \"add\", \"parameters\": {}}; {\"name\": \"add\"}",
                               /*max_calls=*/1);
  ASSERT_EQ(limited.calls.size(), 1u);
  EXPECT_EQ(limited.content, "; {\"name\": \"add\"}");
}

TEST(ToolCallParser, a_forced_function_streams_its_arguments_as_they_come) {
  ToolCallParser parser(Mode::forced_named, {"get_weather", "add"}, 1, "add");
  const auto first = parser.feed("{\"a\"");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].call);
  EXPECT_EQ(first[0].call->name, "add");
  EXPECT_EQ(first[0].call->arguments, "{\"a\"");
  const auto second = parser.feed(": 1}");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].call->name, "");  // a fragment of the same call
  EXPECT_EQ(second[0].call->arguments, ": 1}");
  EXPECT_TRUE(parser.finish().empty());
}

TEST(ToolCallParser, calls_stream_before_they_are_complete) {
  // The name goes out once the arguments begin, and then the arguments as they come: a long call
  // is not held back until its end.
  ToolCallParser parser(Mode::hermes, {"add"}, 16);
  EXPECT_TRUE(parser.feed("<tool_call>\n{\"name\": \"add\", ").empty());
  const auto begun = parser.feed("\"arguments\": {\"a\"");
  ASSERT_EQ(begun.size(), 1u);
  EXPECT_EQ(begun[0].call->name, "add");
  EXPECT_EQ(begun[0].call->arguments, "{\"a\"");
  const auto more = parser.feed(": 1");
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].call->arguments, ": 1");
  // Content after a call comes after it, in order.
  const auto rest = parser.feed("}}\n</tool_call>\nDone.");
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].call->arguments, "}");
  EXPECT_EQ(rest[1].content, "\nDone.");
}

TEST(ToolCallParser, a_forced_list_cut_short_keeps_its_begun_call) {
  const Parsed cut = parse(Mode::forced_list, "[{\"name\": \"add\", \"arguments\": {\"a\": 12");
  ASSERT_EQ(cut.calls.size(), 1u);
  EXPECT_EQ(cut.calls[0].arguments, "{\"a\": 12");
}

TEST(ToolCallParser, a_forced_list_gives_one_call_per_element) {
  const Parsed parsed = parse(Mode::forced_list,
                              "[ {\"name\": \"add\", \"arguments\": {\"a\": \"}]\"}},{\"name\":\"get_weather\","
                              "\"arguments\":{}} ]");
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.calls[0].name, "add");
  EXPECT_EQ(parsed.calls[0].arguments, R"({"a": "}]"})");
  EXPECT_EQ(parsed.calls[1].name, "get_weather");
  EXPECT_EQ(parsed.content, "");
}

TEST(ToolCallParser, what_cannot_be_a_call_is_released_at_once_and_little_is_swallowed) {
  // JSON that names no offered function goes out as content before its object ends.
  ToolCallParser llama(Mode::llama3_json, {"add"}, 16);
  const auto first = llama.feed("{\"name\": \"Alice\", \"bio\": \"a long");
  ASSERT_FALSE(first.empty());
  EXPECT_FALSE(first[0].call);
  // Members after a call's arguments, and whitespace after calls, become content past a few bytes,
  // so the coordinator sees (and bounds usage by) what the model wrote.
  const std::string note(ToolCallParser::kMaxSwallowBytes + 8, 'x');
  const Parsed tail =
      parse(Mode::hermes, "<tool_call>{\"name\": \"add\", \"arguments\": {}, \"note\": \"" + note + "\"}");
  ASSERT_EQ(tail.calls.size(), 1u);
  EXPECT_NE(tail.content.find(note), std::string::npos);
  const Parsed spaces = parse(Mode::hermes, "<tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call>" +
                                                std::string(ToolCallParser::kMaxSwallowBytes * 2, '\n'));
  ASSERT_EQ(spaces.calls.size(), 1u);
  EXPECT_FALSE(spaces.content.empty());
}

}  // namespace
}  // namespace darkbloom::engine
