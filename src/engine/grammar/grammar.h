// A context-free grammar over bytes, the form every constraint compiles to (JSON schemas,
// plain JSON, regular expressions), and the builder the compilers use. Rules are lists of
// alternatives; an alternative is a sequence of byte sets and references to other rules.
// Nothing here runs a grammar: matcher.h does.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace darkbloom::engine::grammar {

// A set of byte values.
class ByteSet {
 public:
  ByteSet() = default;
  static ByteSet of(uint8_t byte);
  static ByteSet range(uint8_t first, uint8_t last);

  bool has(uint8_t byte) const { return (bits_[byte >> 6] >> (byte & 63)) & 1; }
  ByteSet& add(uint8_t byte);
  ByteSet& add_range(uint8_t first, uint8_t last);
  ByteSet& add(const ByteSet& other);
  ByteSet& remove(const ByteSet& other);
  bool empty() const { return (bits_[0] | bits_[1] | bits_[2] | bits_[3]) == 0; }
  bool operator==(const ByteSet& other) const = default;

 private:
  std::array<uint64_t, 4> bits_{};
};

// One step of an alternative: match a byte of a set, or a whole rule; `end` closes the alternative.
struct Element {
  enum class Kind : uint8_t { bytes, rule, end };
  Kind kind = Kind::end;
  int32_t index = 0;  // into byte_sets() for bytes, into rules for rule
};

// The grammar. Alternatives are stored flat: each is a run of elements ending with an `end`
// element, so a position in the grammar is one index into elements().
class Grammar {
 public:
  // A new rule without alternatives yet (so rules can refer to themselves).
  int32_t add_rule();
  void add_alternative(int32_t rule, const std::vector<Element>& sequence);

  Element bytes(const ByteSet& set);
  static Element ref(int32_t rule) { return {Element::Kind::rule, rule}; }

  // Ready-made pieces. Each returns an element to place in a sequence.
  Element literal(std::string_view text);               // the exact bytes
  Element sequence(const std::vector<Element>& items);  // all, in order
  Element choice(const std::vector<std::vector<Element>>& alternatives);
  Element optional(Element item);
  // `item` between min and max times; max < 0 = unbounded. `item` must not match the empty text
  // when max is unbounded (the matcher would find no end to it).
  Element repeat(Element item, int min, int max);
  Element empty();

  void set_root(int32_t rule) { root_ = rule; }
  int32_t root() const { return root_; }

  const std::vector<Element>& elements() const { return elements_; }
  const std::vector<ByteSet>& byte_sets() const { return byte_sets_; }
  // Element positions where each alternative of a rule starts.
  const std::vector<int32_t>& alternatives(int32_t rule) const { return rules_[static_cast<size_t>(rule)]; }
  size_t rule_count() const { return rules_.size(); }
  size_t element_count() const { return elements_.size(); }

 private:
  std::vector<Element> elements_;
  std::vector<ByteSet> byte_sets_;
  std::vector<std::vector<int32_t>> rules_;
  int32_t root_ = -1;
};

}  // namespace darkbloom::engine::grammar
