// The values a chat template computes with (Jinja's data model: undefined, none, booleans,
// numbers, strings, lists, mappings, callables), and `Text`: a string that remembers which of its
// bytes came from the client. Not a general Jinja runtime: no autoescape, no custom classes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "base/json.h"
#include "base/result.h"

namespace darkbloom::engine::jinja {

// A string and the byte ranges of it that came from the client (message contents, tool
// definitions). The template's own text is what may spell control tokens; client bytes never
// do, wherever string operations move them.
class Text {
 public:
  struct Span {
    uint32_t begin, end;
  };

  Text() = default;
  static Text literal(std::string_view bytes) { return Text(std::string(bytes)); }
  static Text client(std::string bytes);

  const std::string& bytes() const { return bytes_; }
  const std::vector<Span>& client_spans() const { return client_; }
  bool has_client_bytes() const { return !client_.empty(); }
  size_t size() const { return bytes_.size(); }

  void append(const Text& other);
  void reserve(size_t bytes) { bytes_.reserve(bytes); }
  void append_literal(std::string_view bytes) { bytes_.append(bytes); }
  // Bytes [begin, end), keeping their provenance.
  Text substr(size_t begin, size_t end) const;
  // All bytes become client bytes when any of `sources` had one (for transformations such as
  // upper() or replace() that do not keep byte positions).
  static Text derived(std::string bytes, bool from_client);

 private:
  explicit Text(std::string bytes) : bytes_(std::move(bytes)) {}
  void mark_client(uint32_t begin, uint32_t end);

  std::string bytes_;
  std::vector<Span> client_;  // sorted, disjoint, not touching
};

class Value;
using Array = std::vector<Value>;

// A mapping in insertion order (templates print tool definitions in the order they were given).
// Large ones keep a hash index, so a template that looks up every key of a client's schema is
// not quadratic.
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  bool client_keys = false;  // keys came from the client (they are client text when printed)
  bool is_namespace = false;

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
  // Appends a key known not to be present (JSON objects, whose keys are unique).
  void append_new(std::string key, Value value);
  void clear();

 private:
  void index_last();
  std::unordered_map<std::string, size_t> index_;  // key → position, once there are many
};

class Interpreter;
struct CallArguments;
// A callable: a builtin (range, namespace, raise_exception) or a macro.
using Function = std::function<Result<Value>(Interpreter&, CallArguments&)>;

class Value {
 public:
  enum class Kind : uint8_t { undefined, none, boolean, integer, number, string, array, object, function };

  Value() = default;  // undefined
  static Value none() { return Value(Kind::none); }
  static Value boolean(bool value);
  static Value integer(int64_t value);
  static Value number(double value);
  static Value string(Text text);
  static Value literal(std::string_view text) { return string(Text::literal(text)); }
  // Containers record how deeply they nest (freeing and printing them recurse that deep).
  static Value array(Array items);
  static Value object(std::shared_ptr<Object> object);
  static Value function(Function function);
  // JSON from the client: its strings and keys are client text.
  static Value from_client_json(const json::bj::value& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::number; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_integer() const { return std::get<int64_t>(data_); }
  double as_double() const;  // integer or number
  const Text& as_text() const { return *std::get<std::shared_ptr<const Text>>(data_); }
  const Array& as_array() const { return *std::get<std::shared_ptr<Array>>(data_); }
  const std::shared_ptr<Object>& as_object() const { return std::get<std::shared_ptr<Object>>(data_); }
  const Function& as_function() const { return *std::get<std::shared_ptr<Function>>(data_); }

  // Levels of containers inside this value, itself included (0 for scalars; a namespace counts
  // as one level whatever it holds, as its attributes change after it is made).
  int depth() const { return depth_; }

  // Jinja truthiness: undefined, none, false, 0, "" and empty containers are false.
  bool truthy() const;
  // The value as `{{ }}` prints it; none and undefined print nothing. Lists and mappings print
  // as JSON, refused past `max_bytes`.
  Result<Text> to_text(size_t max_bytes) const;
  const char* kind_name() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}

  Kind kind_ = Kind::undefined;
  int depth_ = 0;
  // Strings and containers are shared: copying a value never copies its bytes or items.
  std::variant<std::monostate, bool, int64_t, double, std::shared_ptr<const Text>, std::shared_ptr<Array>,
               std::shared_ptr<Object>, std::shared_ptr<Function>>
      data_;
};

// Equality as templates compare: numbers by value (true == 1), strings by bytes, none equals
// undefined, lists and mappings item by item, callables by identity.
// `charge` (if given) is told the work done: one per item compared, one per KiB of text.
bool equal(const Value& a, const Value& b, const std::function<void(size_t)>& charge = {});

// `tojson`: Python's json.dumps layout (", " and ": "), or with `indent` spaces per level (at
// most 64). Strings are escaped as JSON.stringify does. The result is client text when anything
// in it was; one longer than `max_bytes` is refused as it is written.
Result<Text> to_json(const Value& value, int indent, size_t max_bytes);

}  // namespace darkbloom::engine::jinja
