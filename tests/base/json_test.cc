// The strict JSON field reader every parser of peer input uses: numbers out of range are errors
// that name the field, never undefined behaviour (the sanitizer build runs this too).
#include "base/json.h"

#include <gtest/gtest.h>

namespace darkbloom::json {
namespace {

ObjectReader reader_of(const bj::value& value) {
  return ObjectReader(value.as_object(), "test");
}

TEST(JsonReader, integers_out_of_any_range_are_refused_without_undefined_behaviour) {
  for (const char* text : {R"({"n": 1e300})", R"({"n": -1e300})", R"({"n": 9.3e18})", R"({"n": 1.5})",
                           R"({"n": 18446744073709551615})", R"({"n": "3"})"}) {
    auto parsed = parse(text, "test");
    ASSERT_TRUE(parsed) << text;
    ObjectReader reader = reader_of(*parsed);
    reader.integer("n", 0, 1 << 16);
    EXPECT_FALSE(reader.ok()) << text;
    EXPECT_NE(reader.error().message.find("n"), std::string::npos) << text;
  }
  auto whole = parse(R"({"n": 3.0, "m": 4})", "test");
  ASSERT_TRUE(whole);
  ObjectReader reader = reader_of(*whole);
  EXPECT_EQ(reader.integer("n", 0, 10), 3);  // 3.0 is an integer in JSON's eyes
  EXPECT_EQ(reader.integer("m", 0, 10), 4);
  EXPECT_TRUE(reader.ok());
  reader.integer("m", 5, 10);
  EXPECT_FALSE(reader.ok());
}

// A number beyond a double (found by fuzzing): parsed it would be infinity, which serialises as
// `Infinity`, so what the coordinator forwarded no provider could read.
TEST(JsonParse, numbers_too_large_for_a_double_are_refused) {
  for (const char* text : {R"({"n": 5e083648})", R"([1, [-1e400]])", R"({"a": {"b": 1e309}})"}) {
    auto parsed = parse(text, "test");
    ASSERT_FALSE(parsed) << text;
    EXPECT_NE(parsed.error().message.find("too large"), std::string::npos) << parsed.error().message;
  }
  auto largest = parse(R"({"n": 1.7976931348623157e308, "m": 1e-400})", "test");
  ASSERT_TRUE(largest);
  EXPECT_TRUE(parse(dump(*largest), "again")) << dump(*largest);
}

TEST(JsonReader, numbers_keep_to_their_range) {
  auto parsed = parse(R"({"x": 1e300, "y": 0.5})", "test");
  ASSERT_TRUE(parsed);
  ObjectReader reader = reader_of(*parsed);
  EXPECT_DOUBLE_EQ(reader.number("y", 0, 1), 0.5);
  EXPECT_TRUE(reader.ok());
  reader.number("x", 0, 1e7);
  EXPECT_FALSE(reader.ok());
}

}  // namespace
}  // namespace darkbloom::json
