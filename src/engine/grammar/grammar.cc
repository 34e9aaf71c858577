#include "engine/grammar/grammar.h"

#include <algorithm>

namespace darkbloom::engine::grammar {

ByteSet ByteSet::of(uint8_t byte) {
  return ByteSet().add(byte);
}

ByteSet ByteSet::range(uint8_t first, uint8_t last) {
  return ByteSet().add_range(first, last);
}

ByteSet& ByteSet::add(uint8_t byte) {
  bits_[byte >> 6] |= uint64_t{1} << (byte & 63);
  return *this;
}

ByteSet& ByteSet::add_range(uint8_t first, uint8_t last) {
  for (int b = first; b <= last; ++b) add(static_cast<uint8_t>(b));
  return *this;
}

ByteSet& ByteSet::add(const ByteSet& other) {
  for (size_t i = 0; i < bits_.size(); ++i) bits_[i] |= other.bits_[i];
  return *this;
}

ByteSet& ByteSet::remove(const ByteSet& other) {
  for (size_t i = 0; i < bits_.size(); ++i) bits_[i] &= ~other.bits_[i];
  return *this;
}

int32_t Grammar::add_rule() {
  rules_.emplace_back();
  return static_cast<int32_t>(rules_.size() - 1);
}

void Grammar::add_alternative(int32_t rule, const std::vector<Element>& sequence) {
  rules_[static_cast<size_t>(rule)].push_back(static_cast<int32_t>(elements_.size()));
  for (const Element& element : sequence) elements_.push_back(element);
  elements_.push_back({Element::Kind::end, 0});
}

Element Grammar::bytes(const ByteSet& set) {
  // Sets repeat a lot (digits, string characters): keep one copy of the recent ones.
  const size_t lookback = std::min<size_t>(byte_sets_.size(), 64);
  for (size_t i = byte_sets_.size() - lookback; i < byte_sets_.size(); ++i) {
    if (byte_sets_[i] == set) return {Element::Kind::bytes, static_cast<int32_t>(i)};
  }
  byte_sets_.push_back(set);
  return {Element::Kind::bytes, static_cast<int32_t>(byte_sets_.size() - 1)};
}

Element Grammar::literal(std::string_view text) {
  std::vector<Element> items;
  items.reserve(text.size());
  for (char c : text) items.push_back(bytes(ByteSet::of(static_cast<uint8_t>(c))));
  if (items.size() == 1) return items[0];
  return sequence(items);
}

Element Grammar::sequence(const std::vector<Element>& items) {
  const int32_t rule = add_rule();
  add_alternative(rule, items);
  return ref(rule);
}

Element Grammar::choice(const std::vector<std::vector<Element>>& alternatives) {
  const int32_t rule = add_rule();
  for (const auto& alternative : alternatives) add_alternative(rule, alternative);
  return ref(rule);
}

Element Grammar::optional(Element item) {
  return choice({{item}, {}});
}

Element Grammar::empty() {
  return choice({{}});
}

Element Grammar::repeat(Element item, int min, int max) {
  std::vector<Element> items(static_cast<size_t>(min), item);
  if (max < 0) {
    // R := item R | ε
    const int32_t rest = add_rule();
    add_alternative(rest, {item, ref(rest)});
    add_alternative(rest, {});
    items.push_back(ref(rest));
  } else if (max > min) {
    // (item (item (...)?)?)? nested, so each extra item is optional only after the previous one.
    Element tail = optional(item);
    for (int i = min + 1; i < max; ++i) tail = optional(sequence({item, tail}));
    items.push_back(tail);
  }
  if (items.size() == 1) return items[0];
  return sequence(items);
}

}  // namespace darkbloom::engine::grammar
