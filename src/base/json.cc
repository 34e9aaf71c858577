#include "base/json.h"

#include <cmath>
#include <cstdint>

namespace darkbloom::json {

namespace {

// Whether a number in `value` overflowed a double: "1e400" parses to infinity, which JSON cannot
// write back (it would come out as `Infinity`, which no JSON parser reads).
bool has_non_finite_number(const bj::value& value) {
  switch (value.kind()) {
    case bj::kind::double_:
      return !std::isfinite(value.get_double());
    case bj::kind::array:
      for (const bj::value& item : value.get_array()) {
        if (has_non_finite_number(item)) return true;
      }
      return false;
    case bj::kind::object:
      for (const auto& field : value.get_object()) {
        if (has_non_finite_number(field.value())) return true;
      }
      return false;
    default:
      return false;
  }
}

}  // namespace

Result<bj::value> parse(std::string_view text, std::string_view what, size_t max_depth) {
  boost::system::error_code error;
  bj::parse_options options;
  options.max_depth = max_depth;
  bj::value value = bj::parse(text, error, {}, options);
  if (error) return make_error(Errc::bad_format, std::string(what) + ": invalid JSON: " + error.message());
  // Nesting is bounded by max_depth, and so is this recursion.
  if (has_non_finite_number(value)) {
    return make_error(Errc::bad_format, std::string(what) + ": invalid JSON: a number too large for a double");
  }
  return value;
}

std::string dump(const bj::value& value) {
  return bj::serialize(value);
}

}  // namespace darkbloom::json

namespace darkbloom::json {
namespace {

const bj::object& empty_object() {
  static const bj::object empty;
  return empty;
}

const bj::array& empty_array() {
  static const bj::array empty;
  return empty;
}

}  // namespace

std::string ObjectReader::path(std::string_view key) const {
  return context_.empty() ? std::string(key) : context_ + "." + std::string(key);
}

void ObjectReader::fail(std::string_view key, std::string_view problem) {
  if (!ok_) return;
  ok_ = false;
  failed_field_ = std::string(key);
  error_ = make_error(Errc::invalid_argument, path(key) + ": " + std::string(problem));
}

bool ObjectReader::has(std::string_view key) const {
  const bj::value* v = object_.if_contains(key);
  return v != nullptr && !v->is_null();
}

const bj::value* ObjectReader::find(std::string_view key) const {
  const bj::value* v = object_.if_contains(key);
  return v != nullptr && !v->is_null() ? v : nullptr;
}

const bj::value* ObjectReader::require(std::string_view key) {
  const bj::value* v = find(key);
  if (v == nullptr) fail(key, "is required");
  return v;
}

std::string ObjectReader::string(std::string_view key, size_t max_bytes) {
  const bj::value* v = require(key);
  if (v == nullptr) return {};
  if (!v->is_string()) {
    fail(key, "must be a string");
    return {};
  }
  if (v->as_string().size() > max_bytes) {
    fail(key, "is longer than " + std::to_string(max_bytes) + " bytes");
    return {};
  }
  return std::string(v->as_string());
}

std::optional<std::string> ObjectReader::optional_string(std::string_view key, size_t max_bytes) {
  if (!has(key)) return std::nullopt;
  std::string s = string(key, max_bytes);
  if (!ok_) return std::nullopt;
  return s;
}

int64_t ObjectReader::integer(std::string_view key, int64_t min, int64_t max) {
  const bj::value* v = require(key);
  if (v == nullptr) return 0;
  int64_t value = 0;
  if (v->is_int64()) {
    value = v->as_int64();
  } else if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    value = static_cast<int64_t>(v->as_uint64());
  } else if (v->is_double() && std::abs(v->as_double()) < 9e15 &&
             v->as_double() == static_cast<double>(static_cast<int64_t>(v->as_double()))) {
    // The range first: converting a double beyond int64 (1e300) is undefined behaviour.
    value = static_cast<int64_t>(v->as_double());  // 3.0 is an integer in JSON's eyes
  } else {
    fail(key, "must be an integer");
    return 0;
  }
  if (value < min || value > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return 0;
  }
  return value;
}

std::optional<int64_t> ObjectReader::optional_integer(std::string_view key, int64_t min, int64_t max) {
  if (!has(key)) return std::nullopt;
  const int64_t value = integer(key, min, max);
  if (!ok_) return std::nullopt;
  return value;
}

double ObjectReader::number(std::string_view key, double min, double max) {
  const bj::value* v = require(key);
  if (v == nullptr) return 0;
  double value;
  if (v->is_double()) {
    value = v->as_double();
  } else if (v->is_int64()) {
    value = static_cast<double>(v->as_int64());
  } else if (v->is_uint64()) {
    value = static_cast<double>(v->as_uint64());
  } else {
    fail(key, "must be a number");
    return 0;
  }
  if (!(value >= min && value <= max)) {
    fail(key, "must be between " + bj::serialize(bj::value(min)) + " and " + bj::serialize(bj::value(max)));
    return 0;
  }
  return value;
}

std::optional<double> ObjectReader::optional_number(std::string_view key, double min, double max) {
  if (!has(key)) return std::nullopt;
  const double value = number(key, min, max);
  if (!ok_) return std::nullopt;
  return value;
}

bool ObjectReader::boolean(std::string_view key) {
  const bj::value* v = require(key);
  if (v == nullptr) return false;
  if (!v->is_bool()) {
    fail(key, "must be true or false");
    return false;
  }
  return v->as_bool();
}

std::optional<bool> ObjectReader::optional_boolean(std::string_view key) {
  if (!has(key)) return std::nullopt;
  const bool value = boolean(key);
  if (!ok_) return std::nullopt;
  return value;
}

const bj::object& ObjectReader::object(std::string_view key) {
  const bj::value* v = require(key);
  if (v == nullptr) return empty_object();
  if (!v->is_object()) {
    fail(key, "must be an object");
    return empty_object();
  }
  return v->as_object();
}

const bj::array& ObjectReader::array(std::string_view key, size_t max_items) {
  const bj::value* v = require(key);
  if (v == nullptr) return empty_array();
  if (!v->is_array()) {
    fail(key, "must be an array");
    return empty_array();
  }
  if (v->as_array().size() > max_items) {
    fail(key, "has more than " + std::to_string(max_items) + " items");
    return empty_array();
  }
  return v->as_array();
}

}  // namespace darkbloom::json
