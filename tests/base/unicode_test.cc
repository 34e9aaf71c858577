#include "base/unicode.h"

#include <gtest/gtest.h>

namespace darkbloom::unicode {
namespace {

TEST(Unicode, letter_and_number_categories_cover_many_scripts) {
  for (char32_t letter : {U'a', U'Z', U'é', U'ж', U'中', U'ア', U'한', U'ا', U'א', U'क'})
    EXPECT_TRUE(is_letter(letter)) << static_cast<uint32_t>(letter);
  for (char32_t number : {U'0', U'9', U'٣', U'Ⅻ', U'½', U'²'})
    EXPECT_TRUE(is_number(number)) << static_cast<uint32_t>(number);
  for (char32_t other : {U' ', U'!', U'😀', U'\u0301', U'_'}) {
    EXPECT_FALSE(is_letter(other)) << static_cast<uint32_t>(other);
    EXPECT_FALSE(is_number(other)) << static_cast<uint32_t>(other);
  }
}

TEST(Unicode, whitespace_is_the_white_space_property) {
  for (char32_t space : {U' ', U'\t', U'\n', U'\r', U'\v', U'\f', U'\u00A0', U'\u0085', U'\u2028', U'\u3000'}) {
    EXPECT_TRUE(is_whitespace(space)) << static_cast<uint32_t>(space);
  }
  EXPECT_FALSE(is_whitespace(U'\uFEFF'));
  EXPECT_FALSE(is_whitespace(U'x'));
}

TEST(Unicode, nfc_composes_and_keeps_composed_text) {
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");     // e + combining acute → é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");  // ANGSTROM SIGN → Å
  EXPECT_EQ(nfc("plain text"), "plain text");
  EXPECT_EQ(nfc("bad\xFF"), "bad\xEF\xBF\xBD");
}

}  // namespace
}  // namespace darkbloom::unicode
