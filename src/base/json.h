// JSON: the project uses Boost.JSON; this header is the one place that includes it, plus
// helpers that turn parse failures into Result errors.
#pragma once

#include <boost/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace darkbloom::json {

namespace bj = boost::json;

// How deeply arrays and objects may nest in what parse() takes (deeper is an error, not a deep
// recursion later).
inline constexpr size_t kMaxDepth = 64;

// Parses a complete JSON text; `what` names the source in error messages. `max_depth` is for
// envelopes that wrap a document already held to kMaxDepth (one level each).
Result<bj::value> parse(std::string_view text, std::string_view what, size_t max_depth = kMaxDepth);

// Compact serialisation.
std::string dump(const bj::value& value);

}  // namespace darkbloom::json

namespace darkbloom::json {

// Reads fields of a JSON object strictly, remembering the first problem so decoders read
// top to bottom and check once at the end:
//   ObjectReader r(object, "register");
//   msg.version = r.integer("protocol_version", 1, 100);
//   if (!r.ok()) return r.error();
// Errors name the field with its path ("register.hardware.cores: must be an integer").
class ObjectReader {
 public:
  ObjectReader(const bj::object& object, std::string context) : object_(object), context_(std::move(context)) {}

  bool has(std::string_view key) const;
  const bj::value* find(std::string_view key) const;

  std::string string(std::string_view key, size_t max_bytes);
  std::optional<std::string> optional_string(std::string_view key, size_t max_bytes);
  int64_t integer(std::string_view key, int64_t min, int64_t max);
  std::optional<int64_t> optional_integer(std::string_view key, int64_t min, int64_t max);
  double number(std::string_view key, double min, double max);
  std::optional<double> optional_number(std::string_view key, double min, double max);
  bool boolean(std::string_view key);
  std::optional<bool> optional_boolean(std::string_view key);
  // A required nested object or array; an empty one (and an error) when absent or mistyped.
  const bj::object& object(std::string_view key);
  const bj::array& array(std::string_view key, size_t max_items);

  // Records a problem with a field found by the caller's own checks.
  void fail(std::string_view key, std::string_view problem);

  bool ok() const { return ok_; }
  const Error& error() const { return error_; }
  // The field that failed first ("" when ok): for OpenAI's `param`.
  const std::string& failed_field() const { return failed_field_; }
  std::string path(std::string_view key) const;

 private:
  const bj::value* require(std::string_view key);

  const bj::object& object_;
  std::string context_;
  bool ok_ = true;
  Error error_;
  std::string failed_field_;
};

}  // namespace darkbloom::json
