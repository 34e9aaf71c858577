#include "engine/grammar/json_schema.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/grammar/json_text.h"

namespace darkbloom::engine::grammar {
namespace {

namespace bj = json::bj;

// Integers without bounds have at most this many digits, as do fractions.
constexpr int kMaxDigits = 16;
constexpr int64_t kLargestInteger = 9'999'999'999'999'999;  // 16 nines
// String lengths and item counts beyond these are refused: each unit is a grammar rule.
constexpr int64_t kMaxLengthBound = 4096;
constexpr int64_t kMaxItemsBound = 1024;
// A schema whose grammar grows past this many elements is refused.
constexpr size_t kMaxElements = 1u << 20;
constexpr size_t kMaxProperties = 1024;
constexpr size_t kMaxEnumValues = 4096;

const std::set<std::string, std::less<>> kAnnotations = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
};
const std::set<std::string, std::less<>> kKeywords = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "nullable",
};

// Regular expressions for the formats we generate; each produces only valid instances.
const std::map<std::string, std::string, std::less<>> kFormats = {
    {"date",
     "^[1-9][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1["
     "0-9]|2[0-8]))$"},
    {"time", "^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"},
    {"date-time",
     "^[1-9][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2["
     "0-8]))T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"},
    {"uuid", "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
    {"email",
     "^[A-Za-z0-9]([A-Za-z0-9._+-]{0,30}[A-Za-z0-9])?@[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-"
     "z]{2,8}){1,2}$"},
};

std::string pointer_escape(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const bj::value& root) : root_(root) { ws_ = json_whitespace(g_); }

  Result<Grammar> compile() {
    const Element value = schema_value(root_, "#");
    if (!ok_) return make_error(Errc::invalid_argument, problem_);
    finish(value);
    return std::move(g_);
  }

  Grammar any_object() {
    finish(generic_object());
    return std::move(g_);
  }

 private:
  void finish(Element value) {
    const int32_t root = g_.add_rule();
    g_.add_alternative(root, {ws_, value, ws_});
    g_.set_root(root);
  }

  Element fail(const std::string& path, const std::string& problem) {
    if (ok_) {
      ok_ = false;
      problem_ = fmt::format("{} at {}", problem, path);
    }
    return g_.empty();
  }
  Element unsupported(const std::string& path, std::string_view keyword) {
    return fail(path, fmt::format("the keyword '{}' is not supported", keyword));
  }

  // ---- plain JSON ----

  Element generic_value() {
    if (generic_value_ >= 0) return Grammar::ref(generic_value_);
    generic_value_ = g_.add_rule();
    const Element value = Grammar::ref(generic_value_);
    const Element string = generic_string();
    const Element sep = g_.sequence({ws_, g_.literal(","), ws_});
    const Element member = g_.sequence({string, ws_, g_.literal(":"), ws_, value});
    const Element object = g_.sequence(
        {g_.literal("{"), ws_, g_.optional(g_.sequence({member, g_.repeat(g_.sequence({sep, member}), 0, -1)})), ws_,
         g_.literal("}")});
    const Element array = g_.sequence({g_.literal("["), ws_,
                                       g_.optional(g_.sequence({value, g_.repeat(g_.sequence({sep, value}), 0, -1)})),
                                       ws_, g_.literal("]")});
    generic_object_ = object;
    for (const Element& alternative :
         {object, array, string, number(), g_.literal("true"), g_.literal("false"), g_.literal("null")}) {
      g_.add_alternative(generic_value_, {alternative});
    }
    return value;
  }

  Element generic_object() {
    generic_value();
    return generic_object_;
  }

  Element generic_string() {
    return g_.sequence({g_.literal("\""), g_.repeat(json_string_char(g_, CharClass::any()), 0, -1), g_.literal("\"")});
  }

  Element digits(int min, int max) { return g_.repeat(g_.bytes(ByteSet::range('0', '9')), min, max); }

  Element integer() {
    const Element magnitude =
        g_.choice({{g_.literal("0")}, {g_.bytes(ByteSet::range('1', '9')), digits(0, kMaxDigits - 1)}});
    return g_.sequence({g_.optional(g_.literal("-")), magnitude});
  }

  Element number() {
    ByteSet e = ByteSet::of('e');
    e.add('E');
    ByteSet sign = ByteSet::of('+');
    sign.add('-');
    const Element fraction = g_.optional(g_.sequence({g_.literal("."), digits(1, kMaxDigits)}));
    const Element exponent = g_.optional(g_.sequence({g_.bytes(e), g_.optional(g_.bytes(sign)), digits(1, 3)}));
    return g_.sequence({integer(), fraction, exponent});
  }

  // ---- integers within bounds ----

  // Alternatives for the decimal numbers from `low` to `high`, both of the same length, leading
  // zeros allowed (they are inner digits of a longer number).
  std::vector<std::vector<Element>> same_length_range(const std::string& low, const std::string& high) {
    const Element any_digit = g_.bytes(ByteSet::range('0', '9'));
    if (low.size() == 1) {
      return {{g_.bytes(ByteSet::range(static_cast<uint8_t>(low[0]), static_cast<uint8_t>(high[0])))}};
    }
    const std::string low_rest = low.substr(1);
    const std::string high_rest = high.substr(1);
    std::vector<std::vector<Element>> out;
    auto prefixed = [&](char first, std::vector<std::vector<Element>> rest) {
      for (auto& alternative : rest) {
        alternative.insert(alternative.begin(), g_.bytes(ByteSet::of(static_cast<uint8_t>(first))));
        out.push_back(std::move(alternative));
      }
    };
    if (low[0] == high[0]) {
      prefixed(low[0], same_length_range(low_rest, high_rest));
      return out;
    }
    char middle_first = low[0];
    char middle_last = high[0];
    if (low_rest.find_first_not_of('0') != std::string::npos) {
      prefixed(low[0], same_length_range(low_rest, std::string(low_rest.size(), '9')));
      middle_first = static_cast<char>(low[0] + 1);
    }
    if (high_rest.find_first_not_of('9') != std::string::npos) {
      prefixed(high[0], same_length_range(std::string(high_rest.size(), '0'), high_rest));
      middle_last = static_cast<char>(high[0] - 1);
    }
    if (middle_first <= middle_last) {
      std::vector<Element> middle{
          g_.bytes(ByteSet::range(static_cast<uint8_t>(middle_first), static_cast<uint8_t>(middle_last)))};
      for (size_t i = 0; i < low_rest.size(); ++i) middle.push_back(any_digit);
      out.push_back(std::move(middle));
    }
    return out;
  }

  // Alternatives for the non-negative integers from `low` to `high`, without leading zeros.
  std::vector<std::vector<Element>> unsigned_range(int64_t low, int64_t high) {
    std::vector<std::vector<Element>> out;
    const std::string low_text = std::to_string(low);
    const std::string high_text = std::to_string(high);
    for (size_t length = low_text.size(); length <= high_text.size(); ++length) {
      const int64_t smallest = length == 1 ? 0 : static_cast<int64_t>(std::pow(10, length - 1));
      const int64_t largest = static_cast<int64_t>(std::pow(10, length)) - 1;
      const std::string from = std::to_string(std::max(low, smallest));
      const std::string to = std::to_string(std::min(high, largest));
      for (auto& alternative : same_length_range(from, to)) out.push_back(std::move(alternative));
    }
    return out;
  }

  Element integer_range(int64_t low, int64_t high) {
    std::vector<std::vector<Element>> alternatives;
    if (low < 0) {
      for (auto& alternative : unsigned_range(std::max<int64_t>(1, -std::min<int64_t>(high, -1)), -low)) {
        alternative.insert(alternative.begin(), g_.bytes(ByteSet::of('-')));
        alternatives.push_back(std::move(alternative));
      }
    }
    if (high >= 0) {
      for (auto& alternative : unsigned_range(std::max<int64_t>(low, 0), high)) {
        alternatives.push_back(std::move(alternative));
      }
    }
    return g_.choice(alternatives);
  }

  // A bound of an integer schema: the keyword's value rounded inwards, or the default.
  std::optional<int64_t> integer_bound(const bj::object& schema, std::string_view keyword, bool lower,
                                       const std::string& path) {
    const bj::value* value = schema.if_contains(keyword);
    if (value == nullptr) return std::nullopt;
    const bool exclusive = keyword.starts_with("exclusive");
    if (value->is_bool()) return fail(path, fmt::format("'{}' as a boolean (draft 4) is not supported", keyword)), 0;
    if (!value->is_number()) return fail(path, fmt::format("'{}' must be a number", keyword)), 0;
    if (value->is_int64() || value->is_uint64()) {
      const int64_t exact = value->is_int64() ? value->as_int64()
                                              : static_cast<int64_t>(std::min<uint64_t>(value->as_uint64(), INT64_MAX));
      if (exact > kLargestInteger || exact < -kLargestInteger) {
        return fail(path, fmt::format("'{}' must be within ±{}", keyword, kLargestInteger)), 0;
      }
      return exclusive ? exact + (lower ? 1 : -1) : exact;
    }
    const double bound = value->to_number<double>();
    if (!std::isfinite(bound) || std::fabs(bound) > static_cast<double>(kLargestInteger)) {
      return fail(path, fmt::format("'{}' must be within ±{}", keyword, kLargestInteger)), 0;
    }
    double rounded = lower ? std::ceil(bound) : std::floor(bound);
    if (exclusive && rounded == bound) rounded += lower ? 1 : -1;
    return static_cast<int64_t>(rounded);
  }

  Element integer_schema(const bj::object& schema, const std::string& path) {
    const auto minimum = integer_bound(schema, "minimum", true, path);
    const auto exclusive_minimum = integer_bound(schema, "exclusiveMinimum", true, path);
    const auto maximum = integer_bound(schema, "maximum", false, path);
    const auto exclusive_maximum = integer_bound(schema, "exclusiveMaximum", false, path);
    if (!minimum && !exclusive_minimum && !maximum && !exclusive_maximum) return integer();
    int64_t low = -kLargestInteger;
    int64_t high = kLargestInteger;
    if (minimum) low = std::max(low, *minimum);
    if (exclusive_minimum) low = std::max(low, *exclusive_minimum);
    if (maximum) high = std::min(high, *maximum);
    if (exclusive_maximum) high = std::min(high, *exclusive_maximum);
    if (low > high) return fail(path, "no integer lies within 'minimum' and 'maximum'");
    return integer_range(low, high);
  }

  // ---- strings ----

  std::optional<int64_t> count(const bj::object& schema, std::string_view keyword, int64_t limit,
                               const std::string& path) {
    const bj::value* value = schema.if_contains(keyword);
    if (value == nullptr) return std::nullopt;
    const auto number = value->is_int64()    ? std::optional<int64_t>(value->as_int64())
                        : value->is_uint64() ? std::optional<int64_t>(static_cast<int64_t>(value->as_uint64()))
                        : value->is_double() && std::floor(value->as_double()) == value->as_double() &&
                                std::fabs(value->as_double()) < 1e15
                            ? std::optional<int64_t>(static_cast<int64_t>(value->as_double()))
                            : std::nullopt;
    if (!number || *number < 0) return fail(path, fmt::format("'{}' must be a non-negative integer", keyword)), 0;
    if (*number > limit) {
      return fail(path, fmt::format("'{}' above {} is not supported", keyword, limit)), 0;
    }
    return *number;
  }

  Element string_schema(const bj::object& schema, const std::string& path) {
    const auto min_length = count(schema, "minLength", kMaxLengthBound, path);
    const auto max_length = count(schema, "maxLength", kMaxLengthBound, path);
    const bj::value* pattern = schema.if_contains("pattern");
    const bj::value* format = schema.if_contains("format");
    if (pattern && format) return fail(path, "'pattern' together with 'format' is not supported");
    std::string regex;
    if (pattern) {
      if (!pattern->is_string()) return fail(path, "'pattern' must be a string");
      regex = std::string(pattern->as_string());
    } else if (format) {
      if (!format->is_string()) return fail(path, "'format' must be a string");
      auto known = kFormats.find(format->as_string());
      if (known == kFormats.end()) {
        return fail(path,
                    fmt::format("the format '{}' is not supported (supported: date, time, date-time, uuid, email)",
                                std::string_view(format->as_string())));
      }
      regex = known->second;
    }
    if (!regex.empty()) {
      if (min_length || max_length)
        return fail(path, "'minLength'/'maxLength' together with 'pattern' or 'format' is not supported");
      auto content = compile_pattern(g_, regex);
      if (!content) return fail(path, fmt::format("the pattern is not supported: {}", content.error().message));
      return g_.sequence({g_.literal("\""), *content, g_.literal("\"")});
    }
    const int min = static_cast<int>(min_length.value_or(0));
    const int max = max_length ? static_cast<int>(*max_length) : -1;
    if (max >= 0 && max < min) return fail(path, "'maxLength' is below 'minLength'");
    return g_.sequence(
        {g_.literal("\""), g_.repeat(json_string_char(g_, CharClass::any()), min, max), g_.literal("\"")});
  }

  // ---- objects ----

  // A property name that is none of `taken`, spelled without escapes (so no escape can spell a
  // taken name either).
  Element key_except(const std::vector<std::string>& taken, const std::string& path) {
    struct TrieNode {
      std::map<uint8_t, int> children;
      bool word = false;
    };
    std::vector<TrieNode> trie(1);
    for (const std::string& name : taken) {
      int node = 0;
      for (char c : name) {
        const auto byte = static_cast<uint8_t>(c);
        if (byte < 0x20 || byte >= 0x80 || c == '"' || c == '\\') {
          return fail(
              path,
              "additionalProperties beside properties whose names need escapes or are not ASCII is not supported");
        }
        auto it = trie[static_cast<size_t>(node)].children.find(byte);
        if (it == trie[static_cast<size_t>(node)].children.end()) {
          trie.emplace_back();
          const int child = static_cast<int>(trie.size() - 1);
          trie[static_cast<size_t>(node)].children[byte] = child;
          node = child;
        } else {
          node = it->second;
        }
      }
      trie[static_cast<size_t>(node)].word = true;
    }
    const Element quote = g_.literal("\"");
    const Element free_rest = g_.sequence({g_.repeat(plain_string_char(g_), 0, -1), quote});
    std::vector<int32_t> rules(trie.size());
    for (auto& rule : rules) rule = g_.add_rule();
    for (size_t n = 0; n < trie.size(); ++n) {
      ByteSet children;
      for (const auto& [byte, child] : trie[n].children) {
        children.add(byte);
        g_.add_alternative(rules[n], {g_.bytes(ByteSet::of(byte)), Grammar::ref(rules[static_cast<size_t>(child)])});
      }
      if (!trie[n].word) g_.add_alternative(rules[n], {quote});
      g_.add_alternative(rules[n], {plain_string_char(g_, children), free_rest});
    }
    return g_.sequence({quote, Grammar::ref(rules[0])});
  }

  Element object_schema(const bj::object& schema, const std::string& path) {
    std::vector<std::pair<std::string, Element>> properties;
    std::vector<std::string> names;
    if (const bj::value* declared = schema.if_contains("properties")) {
      if (!declared->is_object()) return fail(path, "'properties' must be an object");
      if (declared->as_object().size() > kMaxProperties) {
        return fail(path, fmt::format("more than {} properties are not supported", kMaxProperties));
      }
      for (const auto& [name, sub] : declared->as_object()) {
        names.emplace_back(name);
        properties.emplace_back(std::string(name), schema_value(sub, path + "/properties/" + pointer_escape(name)));
      }
    }
    std::set<std::string, std::less<>> required;
    if (const bj::value* list = schema.if_contains("required")) {
      if (!list->is_array()) return fail(path, "'required' must be an array of strings");
      for (const bj::value& name : list->as_array()) {
        if (!name.is_string()) return fail(path, "'required' must be an array of strings");
        required.emplace(name.as_string());
      }
    }
    // Undeclared properties only where the schema asks for them, or declares none at all (then
    // any object will do).
    std::optional<Element> extra_value;
    if (const bj::value* additional = schema.if_contains("additionalProperties")) {
      if (additional->is_bool()) {
        if (additional->as_bool()) extra_value = generic_value();
      } else {
        extra_value = schema_value(*additional, path + "/additionalProperties");
      }
    } else if (!schema.contains("properties")) {
      extra_value = generic_value();
    }
    for (const auto& name : required) {
      if (std::find(names.begin(), names.end(), name) != names.end()) continue;
      if (!extra_value) {
        return fail(
            path,
            fmt::format("'{}' is required but not among 'properties' and additionalProperties is not allowed", name));
      }
      names.push_back(name);
      properties.emplace_back(name, *extra_value);
    }
    const Element colon = g_.sequence({ws_, g_.literal(":"), ws_});
    const Element sep = g_.sequence({ws_, g_.literal(","), ws_});
    // rest[i][first]: the members from property i on; `first` when nothing came before (no comma).
    std::vector<std::array<int32_t, 2>> rest(properties.size() + 1);
    for (auto& pair : rest) pair = {g_.add_rule(), g_.add_rule()};
    const size_t n = properties.size();
    if (extra_value) {
      const Element extra =
          g_.sequence({names.empty() ? generic_string() : key_except(names, path), colon, *extra_value});
      const Element more = g_.repeat(g_.sequence({sep, extra}), 0, -1);
      g_.add_alternative(rest[n][1], {g_.optional(g_.sequence({extra, more}))});
      g_.add_alternative(rest[n][0], {more});
    } else {
      g_.add_alternative(rest[n][1], {});
      g_.add_alternative(rest[n][0], {});
    }
    for (size_t i = n; i-- > 0;) {
      const auto& [name, value] = properties[i];
      const Element member = g_.sequence({g_.literal(json::dump(bj::value(name))), colon, value});
      for (int first = 0; first < 2; ++first) {
        std::vector<Element> with{member, Grammar::ref(rest[i + 1][0])};
        if (!first) with.insert(with.begin(), sep);
        g_.add_alternative(rest[i][static_cast<size_t>(first)], with);
        if (!required.count(name)) {
          g_.add_alternative(rest[i][static_cast<size_t>(first)],
                             {Grammar::ref(rest[i + 1][static_cast<size_t>(first)])});
        }
      }
    }
    return g_.sequence({g_.literal("{"), ws_, Grammar::ref(rest[0][1]), ws_, g_.literal("}")});
  }

  // ---- arrays ----

  Element array_schema(const bj::object& schema, const std::string& path) {
    const int64_t min = count(schema, "minItems", kMaxItemsBound, path).value_or(0);
    const auto max_items = count(schema, "maxItems", kMaxItemsBound, path);
    const int64_t max = max_items.value_or(-1);
    if (max >= 0 && max < min) return fail(path, "'maxItems' is below 'minItems'");
    std::vector<Element> prefix;
    if (const bj::value* items = schema.if_contains("prefixItems")) {
      if (!items->is_array()) return fail(path, "'prefixItems' must be an array of schemas");
      for (size_t i = 0; i < items->as_array().size(); ++i) {
        prefix.push_back(schema_value(items->as_array()[i], fmt::format("{}/prefixItems/{}", path, i)));
      }
    }
    std::optional<Element> item = generic_value();
    if (const bj::value* items = schema.if_contains("items")) {
      if (items->is_bool() && !items->as_bool()) {
        item.reset();
      } else {
        item = schema_value(*items, path + "/items");
      }
    }
    const Element sep = g_.sequence({ws_, g_.literal(","), ws_});
    const auto k = static_cast<int64_t>(prefix.size());
    if (!item && min > k) return fail(path, "'minItems' asks for more items than 'prefixItems' allows");
    // What follows the prefix: items, each after a comma unless it is the first of the array.
    auto tail = [&](int64_t already) -> Element {
      if (!item) return g_.empty();
      const int64_t lo = std::max<int64_t>(min - already, 0);
      const int64_t hi = max < 0 ? -1 : std::max<int64_t>(max - already, 0);
      if (hi == 0) return g_.empty();
      if (already > 0) return g_.repeat(g_.sequence({sep, *item}), static_cast<int>(lo), static_cast<int>(hi));
      const Element rest = g_.repeat(g_.sequence({sep, *item}), static_cast<int>(std::max<int64_t>(lo - 1, 0)),
                                     hi < 0 ? -1 : static_cast<int>(hi - 1));
      const Element some = g_.sequence({*item, rest});
      return lo > 0 ? some : g_.optional(some);
    };
    const int64_t prefix_used = max < 0 ? k : std::min(k, max);
    Element body = tail(prefix_used);
    for (int64_t j = prefix_used; j-- > 0;) {
      std::vector<Element> with{prefix[static_cast<size_t>(j)], body};
      if (j > 0) with.insert(with.begin(), sep);
      body = j >= min ? g_.optional(g_.sequence(with)) : g_.sequence(with);
    }
    return g_.sequence({g_.literal("["), ws_, body, ws_, g_.literal("]")});
  }

  // ---- schemas ----

  Element literal_value(const bj::value& value) { return g_.literal(json::dump(value)); }

  // Whether `value` has one of the schema's types (true when it names none).
  static bool type_allows(const bj::object& schema, const bj::value& value) {
    const bj::value* type = schema.if_contains("type");
    if (type == nullptr) return true;
    auto matches = [&](std::string_view name) {
      if (name == "null") return value.is_null();
      if (name == "boolean") return value.is_bool();
      if (name == "string") return value.is_string();
      if (name == "array") return value.is_array();
      if (name == "object") return value.is_object();
      if (name == "number") return value.is_number();
      if (name == "integer") {
        return value.is_int64() || value.is_uint64() ||
               (value.is_double() && std::floor(value.as_double()) == value.as_double());
      }
      return false;
    };
    if (type->is_string()) return matches(type->as_string());
    if (!type->is_array()) return true;
    for (const bj::value& one : type->as_array()) {
      if (one.is_string() && matches(one.as_string())) return true;
    }
    return false;
  }

  Element reference(const std::string& target, const std::string& path) {
    if (auto it = refs_.find(target); it != refs_.end()) return Grammar::ref(it->second);
    if (target != "#" && !target.starts_with("#/")) {
      return fail(path,
                  fmt::format("'$ref' to '{}' is not supported (only '#' and '#/...' within the schema)", target));
    }
    const bj::value* node = &root_;
    std::string_view rest = std::string_view(target).substr(1);
    while (!rest.empty()) {
      rest.remove_prefix(1);  // '/'
      const size_t slash = rest.find('/');
      std::string token(rest.substr(0, slash));
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
      std::string key;
      for (size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '~' && i + 1 < token.size()) {
          key += token[i + 1] == '1' ? '/' : '~';
          ++i;
        } else {
          key += token[i];
        }
      }
      if (node->is_object() && node->as_object().contains(key)) {
        node = &node->as_object().at(key);
      } else if (node->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string::npos &&
                 std::stoul(key) < node->as_array().size()) {
        node = &node->as_array()[std::stoul(key)];
      } else {
        return fail(path, fmt::format("'$ref' points to '{}', which does not exist", target));
      }
    }
    const int32_t rule = g_.add_rule();
    refs_.emplace(target, rule);
    const Element value = schema_value(*node, target);
    g_.add_alternative(rule, {value});
    return Grammar::ref(rule);
  }

  std::string type_of(const bj::object& schema) {
    static const char* const kObject[] = {"properties", "required", "additionalProperties"};
    static const char* const kArray[] = {"items", "prefixItems", "minItems", "maxItems"};
    static const char* const kString[] = {"minLength", "maxLength", "pattern", "format"};
    static const char* const kInteger[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    for (const char* key : kObject)
      if (schema.contains(key)) return "object";
    for (const char* key : kArray)
      if (schema.contains(key)) return "array";
    for (const char* key : kString)
      if (schema.contains(key)) return "string";
    for (const char* key : kInteger)
      if (schema.contains(key)) return "integer";
    return "";
  }

  Element typed(const bj::object& schema, std::string_view type, const std::string& path) {
    if (type == "object") return object_schema(schema, path);
    if (type == "array") return array_schema(schema, path);
    if (type == "string") return string_schema(schema, path);
    if (type == "integer") return integer_schema(schema, path);
    if (type == "number") {
      for (const char* key : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
        if (schema.contains(key))
          return fail(path, fmt::format("'{}' on a number (not an integer) is not supported", key));
      }
      return number();
    }
    if (type == "boolean") return g_.choice({{g_.literal("true")}, {g_.literal("false")}});
    if (type == "null") return g_.literal("null");
    return fail(path,
                fmt::format("'type' must be object, array, string, integer, number, boolean or null, not '{}'", type));
  }

  // allOf: every member an object schema; their properties and requirements merge.
  Element all_of(const bj::object& schema, const std::string& path) {
    const bj::value& members = schema.at("allOf");
    if (!members.is_array() || members.as_array().empty()) return fail(path, "'allOf' must be a non-empty array");
    if (members.as_array().size() == 1 && schema.size() == 1)
      return schema_value(members.as_array()[0], path + "/allOf/0");
    bj::object merged;
    bj::object properties;
    bj::array required;
    bool closed = false;
    auto merge = [&](const bj::object& part, const std::string& where) -> bool {
      for (const auto& [key, value] : part) {
        if (kAnnotations.count(key) || (key == "allOf" && &part == &schema)) continue;
        if (key == "type" && value.is_string() && value.as_string() == "object") continue;
        if (key == "properties" && value.is_object()) {
          for (const auto& [name, sub] : value.as_object()) {
            if (properties.contains(name) && properties.at(name) != sub) {
              fail(where,
                   fmt::format("'allOf' members give the property '{}' different schemas", std::string_view(name)));
              return false;
            }
            properties[name] = sub;
          }
        } else if (key == "required" && value.is_array()) {
          for (const auto& name : value.as_array()) required.push_back(name);
        } else if (key == "additionalProperties" && value.is_bool()) {
          closed = closed || !value.as_bool();
        } else {
          fail(where, fmt::format("'allOf' is supported for object schemas with properties, required and "
                                  "additionalProperties: false; the keyword '{}' is not",
                                  std::string_view(key)));
          return false;
        }
      }
      return true;
    };
    if (!merge(schema, path)) return g_.empty();
    for (size_t i = 0; i < members.as_array().size(); ++i) {
      const bj::value& member = members.as_array()[i];
      const std::string where = fmt::format("{}/allOf/{}", path, i);
      if (!member.is_object()) return fail(where, "'allOf' members must be object schemas");
      if (!merge(member.as_object(), where)) return g_.empty();
    }
    // A member that closes itself (additionalProperties: false) must declare every property the
    // merge may produce, or an answer valid for the others would fail it.
    for (size_t i = 0; i < members.as_array().size(); ++i) {
      const bj::object& member = members.as_array()[i].as_object();
      const bj::value* additional = member.if_contains("additionalProperties");
      if (additional == nullptr || !additional->is_bool() || additional->as_bool()) continue;
      const bj::value* own = member.if_contains("properties");
      for (const auto& [name, sub] : properties) {
        if (own == nullptr || !own->is_object() || !own->as_object().contains(name)) {
          return fail(fmt::format("{}/allOf/{}", path, i),
                      fmt::format("'additionalProperties': false excludes '{}', which another 'allOf' member declares",
                                  std::string_view(name)));
        }
      }
    }
    merged["type"] = "object";
    merged["properties"] = std::move(properties);
    merged["required"] = std::move(required);
    if (closed) merged["additionalProperties"] = false;
    merged_.push_back(std::make_unique<bj::value>(std::move(merged)));
    return object_schema(merged_.back()->as_object(), path);
  }

  // anyOf, and oneOf generated as anyOf (an answer may match several branches).
  Element any_of(const bj::object& object, const char* key, const std::string& path) {
    const bj::value* members = object.if_contains(key);
    if (!members->is_array() || members->as_array().empty()) {
      return fail(path, fmt::format("'{}' must be a non-empty array", key));
    }
    for (const auto& [other, value] : object) {
      if (other != key && other != "$defs" && other != "definitions" && !kAnnotations.count(other)) {
        return fail(path, fmt::format("'{}' beside '{}' is not supported", key, std::string_view(other)));
      }
    }
    std::vector<std::vector<Element>> alternatives;
    for (size_t i = 0; i < members->as_array().size(); ++i) {
      alternatives.push_back({schema_value(members->as_array()[i], fmt::format("{}/{}/{}", path, key, i))});
    }
    return g_.choice(alternatives);
  }

  Element schema_value(const bj::value& schema, const std::string& path) {
    if (!ok_) return g_.empty();
    if (g_.element_count() > kMaxElements) return fail(path, "the schema is too large");
    if (++depth_ > 64) return fail(path, "the schema nests too deeply");
    struct Leave {
      int& depth;
      ~Leave() { --depth; }
    } leave{depth_};
    if (schema.is_bool()) {
      if (schema.as_bool()) return generic_value();
      return fail(path, "the schema 'false' accepts nothing");
    }
    if (!schema.is_object()) return fail(path, "a schema must be an object or a boolean");
    const bj::object& object = schema.as_object();
    for (const auto& [key, value] : object) {
      if (!kKeywords.count(key) && !kAnnotations.count(key)) return unsupported(path, key);
    }
    if (const bj::value* nullable = object.if_contains("nullable");
        nullable && nullable->is_bool() && nullable->as_bool()) {
      bj::object without = object;
      without.erase("nullable");
      merged_.push_back(std::make_unique<bj::value>(std::move(without)));
      return g_.choice({{schema_value(*merged_.back(), path)}, {g_.literal("null")}});
    }
    if (const bj::value* ref = object.if_contains("$ref")) {
      if (!ref->is_string()) return fail(path, "'$ref' must be a string");
      for (const auto& [key, value] : object) {
        if (key != "$ref" && key != "$defs" && key != "definitions" && !kAnnotations.count(key)) {
          return fail(path, fmt::format("'$ref' beside '{}' is not supported", std::string_view(key)));
        }
      }
      return reference(std::string(ref->as_string()), path);
    }
    if (const bj::value* value = object.if_contains("const")) {
      if (!type_allows(object, *value)) return fail(path, "the 'const' value does not have the schema's 'type'");
      return literal_value(*value);
    }
    if (const bj::value* values = object.if_contains("enum")) {
      if (!values->is_array() || values->as_array().empty()) return fail(path, "'enum' must be a non-empty array");
      if (values->as_array().size() > kMaxEnumValues) {
        return fail(path, fmt::format("'enum' with more than {} values is not supported", kMaxEnumValues));
      }
      std::vector<std::vector<Element>> alternatives;
      for (const bj::value& value : values->as_array()) {
        if (type_allows(object, value)) alternatives.push_back({literal_value(value)});
      }
      if (alternatives.empty()) return fail(path, "no 'enum' value has the schema's 'type'");
      return g_.choice(alternatives);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (object.contains(key)) return any_of(object, key, path);
    }
    if (object.contains("allOf")) return all_of(object, path);
    const bj::value* type = object.if_contains("type");
    if (type == nullptr) {
      const std::string inferred = type_of(object);
      return inferred.empty() ? generic_value() : typed(object, inferred, path);
    }
    if (type->is_string()) return typed(object, type->as_string(), path);
    if (!type->is_array() || type->as_array().empty())
      return fail(path, "'type' must be a string or a non-empty array");
    std::vector<std::vector<Element>> alternatives;
    for (const bj::value& one : type->as_array()) {
      if (!one.is_string()) return fail(path, "'type' must list strings");
      alternatives.push_back({typed(object, one.as_string(), path)});
    }
    return g_.choice(alternatives);
  }

  const bj::value& root_;
  Grammar g_;
  Element ws_;
  bool ok_ = true;
  std::string problem_;
  int depth_ = 0;
  int32_t generic_value_ = -1;
  Element generic_object_;
  std::map<std::string, int32_t> refs_;
  std::vector<std::unique_ptr<bj::value>> merged_;  // schemas built here (allOf, nullable), kept alive
};

}  // namespace

Result<Grammar> compile_json_schema(const bj::value& schema) {
  return SchemaCompiler(schema).compile();
}

Grammar json_object_grammar() {
  static const bj::value kNone;
  return SchemaCompiler(kNone).any_object();
}

}  // namespace darkbloom::engine::grammar
