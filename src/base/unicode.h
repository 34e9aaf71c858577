// Unicode character properties and normalization (backed by ICU), as tokenizer pre-splitting
// rules need them: \p{L}, \p{N}, \s and NFC.
#pragma once

#include <string>
#include <string_view>

namespace darkbloom::unicode {

bool is_letter(char32_t cp);  // general category L* (Lu, Ll, Lt, Lm, Lo)
bool is_number(char32_t cp);  // general category N* (Nd, Nl, No)
// The Unicode White_Space property: what \s means in the Oniguruma patterns of tokenizer.json
// files (U+0085 is whitespace, U+FEFF is not).
bool is_whitespace(char32_t cp);

// NFC normalization of UTF-8 text; invalid bytes become U+FFFD first.
std::string nfc(std::string_view text);

}  // namespace darkbloom::unicode
