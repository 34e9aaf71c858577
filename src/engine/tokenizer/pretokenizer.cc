#include "engine/tokenizer/pretokenizer.h"

#include <cstdint>

#include "base/unicode.h"
#include "base/utf8.h"

namespace darkbloom::engine {
namespace {

enum class CharClass : uint8_t { letter, number, whitespace, other };

struct Char {
  size_t offset;  // byte offset in the text
  char32_t cp;
  CharClass cls;
};

CharClass classify(char32_t cp) {
  if (unicode::is_letter(cp)) return CharClass::letter;
  if (unicode::is_number(cp)) return CharClass::number;
  if (unicode::is_whitespace(cp)) return CharClass::whitespace;
  return CharClass::other;
}

std::vector<Char> decode_chars(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    const char32_t cp = utf8::decode(text, &pos);
    // An invalid byte decodes as U+FFFD, which classifies as `other` (a symbol).
    chars.push_back({start, cp, classify(cp)});
  }
  return chars;
}

char32_t ascii_lower(char32_t cp) {
  return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
}

class Scanner {
 public:
  Scanner(PretokenizerKind kind, std::string_view text) : kind_(kind), chars_(decode_chars(text)), n_(chars_.size()) {}

  std::vector<std::string_view> run(std::string_view text) {
    std::vector<std::string_view> pieces;
    size_t i = 0;
    while (i < n_) {
      size_t end = kind_ == PretokenizerKind::gpt2 ? match_gpt2(i) : match_llama3(i);
      if (end <= i) end = i + 1;  // unreachable with these patterns; guarantees progress
      const size_t begin_byte = chars_[i].offset;
      const size_t end_byte = end < n_ ? chars_[end].offset : text.size();
      pieces.push_back(text.substr(begin_byte, end_byte - begin_byte));
      i = end;
    }
    return pieces;
  }

 private:
  bool is(size_t i, CharClass cls) const { return i < n_ && chars_[i].cls == cls; }
  bool is_cr_or_lf(size_t i) const { return i < n_ && (chars_[i].cp == '\r' || chars_[i].cp == '\n'); }
  size_t skip(size_t i, CharClass cls) const {
    while (is(i, cls)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d at i; returns the end or i when absent.
  size_t contraction(size_t i, bool ignore_case) const {
    if (i >= n_ || chars_[i].cp != '\'') return i;
    auto at = [&](size_t k) -> char32_t {
      if (k >= n_) return 0;
      return ignore_case ? ascii_lower(chars_[k].cp) : chars_[k].cp;
    };
    const char32_t a = at(i + 1), b = at(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
  }

  // \s+(?!\S) then \s+: a whitespace run, leaving its last character to prefix the next word.
  size_t whitespace_run(size_t i) const {
    const size_t j = skip(i, CharClass::whitespace);
    if (j == n_ || j - i < 2) return j;
    return j - 1;
  }

  size_t match_gpt2(size_t i) const {
    if (size_t e = contraction(i, false); e > i) return e;
    const size_t after_space = chars_[i].cp == ' ' ? i + 1 : i;
    for (CharClass cls : {CharClass::letter, CharClass::number, CharClass::other}) {
      if (is(after_space, cls)) return skip(after_space, cls);
    }
    return whitespace_run(i);
  }

  size_t match_llama3(size_t i) const {
    if (size_t e = contraction(i, true); e > i) return e;
    const Char& c = chars_[i];
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c.cls == CharClass::letter) return skip(i, CharClass::letter);
    if (c.cls != CharClass::number && !is_cr_or_lf(i) && is(i + 1, CharClass::letter))
      return skip(i + 1, CharClass::letter);
    // \p{N}{1,3} (llama3) or \p{N} (qwen2)
    if (c.cls == CharClass::number) {
      const size_t limit = kind_ == PretokenizerKind::qwen2 ? 1 : 3;
      size_t j = i;
      while (j - i < limit && is(j, CharClass::number)) ++j;
      return j;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t after_space = c.cp == ' ' ? i + 1 : i;
    if (is(after_space, CharClass::other)) {
      size_t j = skip(after_space, CharClass::other);
      while (is_cr_or_lf(j)) ++j;
      return j;
    }
    // \s*[\r\n]+: the whitespace run up to and including its last CR or LF.
    const size_t run_end = skip(i, CharClass::whitespace);
    for (size_t k = run_end; k > i; --k) {
      if (is_cr_or_lf(k - 1)) return k;
    }
    return whitespace_run(i);
  }

  PretokenizerKind kind_;
  std::vector<Char> chars_;
  size_t n_;
};

}  // namespace

std::vector<std::string_view> pretokenize(PretokenizerKind kind, std::string_view text) {
  return Scanner(kind, text).run(text);
}

}  // namespace darkbloom::engine
