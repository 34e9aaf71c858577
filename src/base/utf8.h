// UTF-8 decoding and encoding, and the "complete prefix" rule streaming text output relies on:
// emit only whole characters, hold back a sequence that may still be completed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace darkbloom::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Decodes the code point at `pos` and advances `pos`. An invalid or truncated sequence decodes as
// U+FFFD and advances by one byte, so every byte string decodes without looping forever.
char32_t decode(std::string_view text, size_t* pos);

// Appends the UTF-8 encoding of `cp` (U+FFFD for surrogates and values past U+10FFFF).
void append(std::string* out, char32_t cp);

// True when every byte of `text` belongs to a well-formed UTF-8 sequence.
bool is_valid(std::string_view text);

// The length of the longest prefix of `bytes` that can be emitted now: everything except a
// trailing sequence that is incomplete but could still become valid with more bytes.
size_t complete_prefix_length(std::string_view bytes);

// Replaces every invalid byte with U+FFFD; valid text comes back unchanged.
std::string sanitize(std::string_view bytes);

// Number of code points (invalid bytes count one each).
size_t count_code_points(std::string_view text);

}  // namespace darkbloom::utf8
