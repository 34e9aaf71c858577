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
