#include "engine/grammar/json_text.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace darkbloom::engine::grammar {
namespace {

// The largest count a pattern's {m,n} may ask for, the longest pattern, the deepest nesting of
// groups, and the grammar a pattern may grow (each bound keeps a hostile pattern cheap).
constexpr int kMaxPatternRepeat = 1024;
constexpr size_t kMaxPatternBytes = 4096;
constexpr int kMaxGroupDepth = 32;
constexpr size_t kMaxPatternElements = 1u << 20;

// Well-formed UTF-8 sequences of two to four bytes (RFC 3629), whose lead byte is not excluded.
std::vector<std::vector<Element>> multibyte_chars(Grammar& g, const ByteSet& excluded_lead) {
  const Element tail = g.bytes(ByteSet::range(0x80, 0xBF));
  std::vector<std::vector<Element>> out;
  auto lead = [&](uint8_t first, uint8_t last) {
    ByteSet set = ByteSet::range(first, last);
    set.remove(excluded_lead);
    return set;
  };
  auto add = [&](ByteSet first, std::vector<Element> rest) {
    if (first.empty()) return;
    rest.insert(rest.begin(), g.bytes(first));
    out.push_back(std::move(rest));
  };
  add(lead(0xC2, 0xDF), {tail});
  add(lead(0xE0, 0xE0), {g.bytes(ByteSet::range(0xA0, 0xBF)), tail});
  {
    ByteSet first = lead(0xE1, 0xEC);
    first.add(lead(0xEE, 0xEF));
    add(first, {tail, tail});
  }
  add(lead(0xED, 0xED), {g.bytes(ByteSet::range(0x80, 0x9F)), tail});
  add(lead(0xF0, 0xF0), {g.bytes(ByteSet::range(0x90, 0xBF)), tail, tail});
  add(lead(0xF1, 0xF3), {tail, tail, tail});
  add(lead(0xF4, 0xF4), {g.bytes(ByteSet::range(0x80, 0x8F)), tail, tail});
  return out;
}

ByteSet hex_digits() {
  ByteSet set = ByteSet::range('0', '9');
  set.add_range('a', 'f').add_range('A', 'F');
  return set;
}

// --- the pattern parser: recursive descent over the pattern's bytes ---

class PatternCompiler {
 public:
  PatternCompiler(Grammar& g, std::string_view pattern) : g_(g), text_(pattern) {}

  Result<Element> compile() {
    if (text_.size() > kMaxPatternBytes) {
      return make_error(Errc::invalid_argument, fmt::format("a pattern longer than {} bytes", kMaxPatternBytes));
    }
    elements_at_start_ = g_.element_count();
    bool anchored_start = false;
    bool anchored_end = false;
    std::string_view body = text_;
    if (!body.empty() && body.front() == '^') {
      anchored_start = true;
      body.remove_prefix(1);
    }
    if (!body.empty() && body.back() == '$' && !(body.size() >= 2 && body[body.size() - 2] == '\\')) {
      anchored_end = true;
      body.remove_suffix(1);
    }
    text_ = body;
    Element inner = alternation();
    if (ok_ && pos_ != text_.size()) fail(fmt::format("unexpected '{}'", text_[pos_]));
    if (!ok_) return make_error(Errc::invalid_argument, problem_);
    // JSON Schema patterns match anywhere in the string unless anchored.
    const Element anything = g_.repeat(json_string_char(g_, CharClass::any()), 0, -1);
    std::vector<Element> items;
    if (!anchored_start) items.push_back(anything);
    items.push_back(inner);
    if (!anchored_end) items.push_back(anything);
    return g_.sequence(items);
  }

 private:
  void fail(std::string problem) {
    if (!ok_) return;
    ok_ = false;
    problem_ = fmt::format("{} at offset {}", problem, pos_);
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  Element alternation() {
    std::vector<std::vector<Element>> alternatives{concatenation()};
    while (ok_ && !at_end() && peek() == '|') {
      ++pos_;
      alternatives.push_back(concatenation());
    }
    if (alternatives.size() == 1) return g_.sequence(alternatives[0]);
    return g_.choice(alternatives);
  }

  std::vector<Element> concatenation() {
    std::vector<Element> items;
    while (ok_ && !at_end() && peek() != '|' && peek() != ')') {
      Element item = atom();
      if (!ok_) break;
      items.push_back(quantified(item));
    }
    return items;
  }

  Element quantified(Element item) {
    if (at_end()) return item;
    int min = 1;
    int max = 1;
    const char c = peek();
    if (c == '*' || c == '+' || c == '?') {
      ++pos_;
      min = c == '+' ? 1 : 0;
      max = c == '?' ? 1 : -1;
    } else if (c == '{') {
      const size_t close = text_.find('}', pos_);
      if (close == std::string_view::npos) {
        fail("'{' without '}'");
        return item;
      }
      const std::string inside(text_.substr(pos_ + 1, close - pos_ - 1));
      int a = -1;
      int b = -1;
      char comma = 0;
      const int fields = std::sscanf(inside.c_str(), "%d%c%d", &a, &comma, &b);
      if (fields == 1 && inside.find_first_not_of("0123456789") == std::string::npos) {
        b = a;
      } else if (fields == 2 && comma == ',' && inside.back() == ',') {
        b = -1;
      } else if (!(fields == 3 && comma == ',' && inside.find_first_not_of("0123456789,") == std::string::npos)) {
        fail("a repetition must be {m}, {m,} or {m,n}");
        return item;
      }
      if (std::count(inside.begin(), inside.end(), ',') > 1) {
        fail("a repetition must be {m}, {m,} or {m,n}");
        return item;
      }
      if (a < 0 || a > kMaxPatternRepeat || b > kMaxPatternRepeat || (b >= 0 && b < a)) {
        fail(fmt::format("repetition counts must be between 0 and {}, the first not above the second",
                         kMaxPatternRepeat));
        return item;
      }
      pos_ = close + 1;
      min = a;
      max = b;
    } else {
      return item;
    }
    if (!at_end() && peek() == '?') ++pos_;  // lazy and greedy match the same strings
    if (!at_end() && (peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{')) {
      fail("a quantifier cannot follow a quantifier");
    }
    const Element repeated = g_.repeat(item, min, max);
    if (g_.element_count() - elements_at_start_ > kMaxPatternElements) fail("the pattern's repetitions are too large");
    return repeated;
  }

  Element atom() {
    const char c = peek();
    if (c == '(') {
      if (++group_depth_ > kMaxGroupDepth) {
        fail(fmt::format("groups nested more than {} deep", kMaxGroupDepth));
        return {};
      }
      ++pos_;
      if (text_.substr(pos_, 2) == "?:") {
        pos_ += 2;
      } else if (!at_end() && peek() == '?') {
        fail("lookaround and named groups are not supported");
        return {};
      }
      Element inner = alternation();
      if (at_end() || peek() != ')') {
        fail("'(' without ')'");
        return {};
      }
      ++pos_;
      --group_depth_;
      return inner;
    }
    if (c == '[') return char_class();
    if (c == '.') {
      ++pos_;
      CharClass any = CharClass::any();
      any.ascii.remove(ByteSet::of('\n')).remove(ByteSet::of('\r'));
      return json_string_char(g_, any);
    }
    if (c == '\\') {
      ++pos_;
      if (at_end()) {
        fail("a pattern cannot end with '\\'");
        return {};
      }
      CharClass set;
      if (!escape(&set, false)) return {};
      return json_string_char(g_, set);
    }
    if (c == '^' || c == '$') {
      fail("'^' and '$' are supported only at the start and the end");
      return {};
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') {
      fail("a quantifier with nothing to repeat");
      return {};
    }
    const auto byte = static_cast<uint8_t>(c);
    if (byte < 0x80) {
      ++pos_;
      CharClass one;
      one.ascii.add(byte);
      return json_string_char(g_, one);
    }
    // A non-ASCII literal: its UTF-8 bytes, as they stand (valid in a JSON string).
    size_t length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2;
    length = std::min(length, text_.size() - pos_);
    const std::string_view bytes = text_.substr(pos_, length);
    pos_ += length;
    return g_.literal(bytes);
  }

  // After a backslash: one escape, into `set`. In a class, \b is a backspace.
  bool escape(CharClass* set, bool in_class) {
    const char c = text_[pos_++];
    auto add_range = [&](char a, char b) { set->ascii.add_range(static_cast<uint8_t>(a), static_cast<uint8_t>(b)); };
    switch (c) {
      case 'd':
        add_range('0', '9');
        return true;
      case 'w':
        add_range('0', '9');
        add_range('a', 'z');
        add_range('A', 'Z');
        set->ascii.add('_');
        return true;
      case 's':
        for (char s : {' ', '\t', '\n', '\r', '\f', '\v'}) set->ascii.add(static_cast<uint8_t>(s));
        return true;
      case 'D':
      case 'W':
      case 'S': {
        CharClass positive;
        --pos_;
        text_lowered_escape(&positive);
        // ASCII only: which non-ASCII characters count as letters, digits or spaces differs
        // between regex dialects, so none are generated.
        CharClass all = CharClass::any();
        all.ascii.remove(positive.ascii);
        set->ascii.add(all.ascii);
        return true;
      }
      case 'n':
        set->ascii.add('\n');
        return true;
      case 't':
        set->ascii.add('\t');
        return true;
      case 'r':
        set->ascii.add('\r');
        return true;
      case 'f':
        set->ascii.add('\f');
        return true;
      case 'v':
        set->ascii.add('\v');
        return true;
      case 'b':
        if (in_class) {
          set->ascii.add('\b');
          return true;
        }
        fail("word boundaries (\\b) are not supported");
        return false;
      default:
        break;
    }
    if ((c >= '0' && c <= '9') || c == 'k') {
      fail("backreferences are not supported");
      return false;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      fail(fmt::format("the escape \\{} is not supported", c));
      return false;
    }
    if (static_cast<uint8_t>(c) >= 0x80) {
      fail("an escaped non-ASCII character is not supported");
      return false;
    }
    set->ascii.add(static_cast<uint8_t>(c));  // an escaped punctuation character stands for itself
    return true;
  }

  // \D, \W, \S: the class of the lowercase letter (pos_ at the letter).
  void text_lowered_escape(CharClass* set) {
    const char upper = text_[pos_++];
    const std::string lowered{'\\', static_cast<char>(upper - 'A' + 'a')};
    PatternCompiler inner(g_, lowered);
    inner.pos_ = 1;
    inner.escape(set, false);
  }

  Element char_class() {
    ++pos_;  // '['
    bool negated = false;
    if (!at_end() && peek() == '^') {
      negated = true;
      ++pos_;
    }
    CharClass set;
    bool first = true;
    while (ok_ && !at_end() && (peek() != ']' || first)) {
      first = false;
      CharClass item;
      int single = -1;  // the character, when the item is one character (may start a range)
      const auto byte = static_cast<uint8_t>(peek());
      if (byte >= 0x80) {
        fail("non-ASCII characters in a [class] are not supported");
        return {};
      }
      if (peek() == '\\') {
        ++pos_;
        if (at_end()) break;
        const char escaped = peek();
        if (!escape(&item, true)) return {};
        if (std::string_view("dwsDWS").find(escaped) == std::string_view::npos) {
          for (int b = 0; b < 128; ++b) {
            if (item.ascii.has(static_cast<uint8_t>(b))) single = b;
          }
        }
      } else {
        single = byte;
        item.ascii.add(byte);
        ++pos_;
      }
      if (single >= 0 && pos_ + 1 < text_.size() && peek() == '-' && text_[pos_ + 1] != ']') {
        ++pos_;
        int last = static_cast<uint8_t>(peek());
        if (peek() == '\\') {
          ++pos_;
          CharClass end;
          if (at_end() || !escape(&end, true)) return {};
          last = -1;
          for (int b = 0; b < 128; ++b) {
            if (end.ascii.has(static_cast<uint8_t>(b))) last = b;
          }
        } else {
          ++pos_;
        }
        if (last < 0 || last >= 0x80 || last < single) {
          fail("a [class] range must go up, between ASCII characters");
          return {};
        }
        item.ascii.add_range(static_cast<uint8_t>(single), static_cast<uint8_t>(last));
      }
      set.ascii.add(item.ascii);
      set.non_ascii = set.non_ascii || item.non_ascii;
    }
    if (at_end()) {
      fail("'[' without ']'");
      return {};
    }
    ++pos_;  // ']'
    if (negated) {
      CharClass all = CharClass::any();
      all.ascii.remove(set.ascii);
      all.non_ascii = false;  // as for \S: dialects disagree on which non-ASCII characters a class holds
      set = all;
    }
    if (set.ascii.empty() && !set.non_ascii) {
      fail("a [class] that matches nothing");
      return {};
    }
    return json_string_char(g_, set);
  }

  Grammar& g_;
  std::string_view text_;
  size_t pos_ = 0;
  bool ok_ = true;
  std::string problem_;
  int group_depth_ = 0;
  size_t elements_at_start_ = 0;
};

}  // namespace

CharClass CharClass::any() {
  CharClass all;
  all.ascii = ByteSet::range(0, 0x7F);
  all.non_ascii = true;
  return all;
}

Element json_string_char(Grammar& g, const CharClass& allowed) {
  std::vector<std::vector<Element>> alternatives;
  // Printable ASCII as it stands, but the two characters JSON must escape.
  ByteSet raw = allowed.ascii;
  raw.remove(ByteSet::range(0, 0x1F)).remove(ByteSet::of('"')).remove(ByteSet::of('\\'));
  if (!raw.empty()) alternatives.push_back({g.bytes(raw)});
  const Element backslash = g.bytes(ByteSet::of('\\'));
  // Escapes, one spelling each (two for '/', which JSON may write either way).
  ByteSet short_escapes;
  const std::pair<uint8_t, uint8_t> shorts[] = {{'"', '"'},  {'\\', '\\'}, {'\b', 'b'}, {'\f', 'f'},
                                                {'\n', 'n'}, {'\r', 'r'},  {'\t', 't'}, {'/', '/'}};
  for (const auto& [character, letter] : shorts) {
    if (allowed.ascii.has(character)) short_escapes.add(letter);
  }
  if (!short_escapes.empty()) alternatives.push_back({backslash, g.bytes(short_escapes)});
  // Other control characters: \u00XX.
  for (int c = 0; c < 0x20; ++c) {
    if (!allowed.ascii.has(static_cast<uint8_t>(c)) || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
      continue;
    }
    alternatives.push_back({backslash, g.literal(fmt::format("u{:04x}", c))});
  }
  if (allowed.non_ascii) {
    for (auto& sequence : multibyte_chars(g, {})) alternatives.push_back(std::move(sequence));
  }
  if (allowed.non_ascii && allowed.ascii == ByteSet::range(0, 0x7F)) {
    // \uXXXX for any character of the Basic Multilingual Plane but the surrogates: only where
    // every character is allowed, since it can spell any of them.
    const Element hex = g.bytes(hex_digits());
    ByteSet not_d = hex_digits();
    not_d.remove(ByteSet::of('d')).remove(ByteSet::of('D'));
    const Element below_surrogates = g.bytes(ByteSet::range('0', '7'));
    alternatives.push_back({backslash, g.literal("u"), g.bytes(not_d), hex, hex, hex});
    ByteSet d = ByteSet::of('d');
    d.add('D');
    alternatives.push_back({backslash, g.literal("u"), g.bytes(d), below_surrogates, hex, hex});
  }
  return g.choice(alternatives);
}

Element plain_string_char(Grammar& g, const ByteSet& excluded_first) {
  ByteSet raw = ByteSet::range(0x20, 0x7F);
  raw.remove(ByteSet::of('"')).remove(ByteSet::of('\\')).remove(excluded_first);
  std::vector<std::vector<Element>> alternatives;
  if (!raw.empty()) alternatives.push_back({g.bytes(raw)});
  for (auto& sequence : multibyte_chars(g, excluded_first)) alternatives.push_back(std::move(sequence));
  return g.choice(alternatives);
}

Element json_whitespace(Grammar& g) {
  ByteSet space = ByteSet::of(' ');
  space.add('\t').add('\n');
  return g.repeat(g.bytes(space), 0, kMaxWhitespace);
}

Result<Element> compile_pattern(Grammar& grammar, std::string_view pattern) {
  return PatternCompiler(grammar, pattern).compile();
}

}  // namespace darkbloom::engine::grammar
