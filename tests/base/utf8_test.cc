#include "base/utf8.h"

#include <gtest/gtest.h>

namespace darkbloom::utf8 {
namespace {

TEST(Utf8, decodes_every_sequence_length) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é € 😀
  size_t pos = 0;
  EXPECT_EQ(decode(text, &pos), U'a');
  EXPECT_EQ(decode(text, &pos), U'\u00E9');
  EXPECT_EQ(decode(text, &pos), U'\u20AC');
  EXPECT_EQ(decode(text, &pos), U'\U0001F600');
  EXPECT_EQ(pos, text.size());
}

TEST(Utf8, invalid_bytes_decode_as_replacement_one_byte_at_a_time) {
  for (const std::string bad : {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF"}) {
    size_t pos = 0;
    EXPECT_EQ(decode(bad, &pos), kReplacement) << bad;
    EXPECT_EQ(pos, 1u);
    EXPECT_FALSE(is_valid(bad));
  }
}

TEST(Utf8, append_round_trips_through_decode) {
  for (char32_t cp : {U'\0', U'x', U'\u07FF', U'\u0800', U'\uFFFF', U'\U00010000', U'\U0010FFFF'}) {
    std::string encoded;
    append(&encoded, cp);
    size_t pos = 0;
    EXPECT_EQ(decode(encoded, &pos), cp);
    EXPECT_EQ(pos, encoded.size());
  }
  std::string surrogate;
  append(&surrogate, 0xD800);
  EXPECT_EQ(surrogate, "\xEF\xBF\xBD");
}

TEST(Utf8, complete_prefix_holds_back_only_a_sequence_that_can_still_complete) {
  const std::string emoji = "\xF0\x9F\x98\x80";
  EXPECT_EQ(complete_prefix_length("ab" + emoji.substr(0, 1)), 2u);
  EXPECT_EQ(complete_prefix_length("ab" + emoji.substr(0, 3)), 2u);
  EXPECT_EQ(complete_prefix_length("ab" + emoji), 6u);
  // A lead byte followed by a non-continuation can never complete: emitted (as U+FFFD later).
  EXPECT_EQ(complete_prefix_length("\xF0"
                                   "a"),
            2u);
  EXPECT_EQ(complete_prefix_length("\xFF"), 1u);
}

TEST(Utf8, sanitize_replaces_only_invalid_bytes) {
  EXPECT_EQ(sanitize("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(sanitize("a\xFF"
                     "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(count_code_points("a\xC3\xA9\xFF"), 3u);
}

}  // namespace
}  // namespace darkbloom::utf8
