// Grammar pieces for JSON text: string characters as JSON writes them, bounded whitespace, and a
// regular-expression subset (for `pattern` and `format`) compiled to the characters of a JSON
// string's content. Every piece only ever produces valid UTF-8 and valid JSON escapes.
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"
#include "engine/grammar/grammar.h"

namespace darkbloom::engine::grammar {

// Whitespace between JSON tokens is bounded so that a model cannot spend its answer on it.
inline constexpr int kMaxWhitespace = 8;

// Characters of decoded string content: a set of ASCII characters and, optionally, every
// non-ASCII character.
struct CharClass {
  ByteSet ascii;  // values below 0x80
  bool non_ascii = false;
  static CharClass any();
};

// One character of `allowed` inside a JSON string, escaped where JSON requires it.
Element json_string_char(Grammar& grammar, const CharClass& allowed);
// One character of a JSON string spelled without escapes (any printable character but `"`
// and `\`), except those whose first byte is in `excluded_first`.
Element plain_string_char(Grammar& grammar, const ByteSet& excluded_first = {});
// Up to kMaxWhitespace spaces, tabs and newlines (no carriage returns: nobody needs them).
Element json_whitespace(Grammar& grammar);

// The content of a JSON string (between its quotes) whose decoded text matches `pattern`, a
// regular expression as JSON Schema uses them: unanchored unless it starts with ^ / ends with $.
// Supported: literals, ., [classes] with ranges and negation, \d \w \s and their negations,
// escapes, groups (capturing or (?:...)), |, and the quantifiers * + ? {m} {m,} {m,n}.
// Errors name the construct (backreferences, lookaround, \b, non-ASCII class ranges, ...).
Result<Element> compile_pattern(Grammar& grammar, std::string_view pattern);

}  // namespace darkbloom::engine::grammar
