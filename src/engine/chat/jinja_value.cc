#include "engine/chat/jinja_value.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace darkbloom::engine::jinja {

Text Text::client(std::string bytes) {
  Text text(std::move(bytes));
  text.mark_client(0, static_cast<uint32_t>(text.bytes_.size()));
  return text;
}

Text Text::derived(std::string bytes, bool from_client) {
  return from_client ? client(std::move(bytes)) : Text(std::move(bytes));
}

void Text::mark_client(uint32_t begin, uint32_t end) {
  if (begin >= end) return;
  if (!client_.empty() && client_.back().end >= begin) {
    client_.back().end = std::max(client_.back().end, end);
    return;
  }
  client_.push_back({begin, end});
}

void Text::append(const Text& other) {
  const auto offset = static_cast<uint32_t>(bytes_.size());
  bytes_ += other.bytes_;
  for (const Span& span : other.client_) mark_client(offset + span.begin, offset + span.end);
}

Text Text::substr(size_t begin, size_t end) const {
  end = std::min(end, bytes_.size());
  begin = std::min(begin, end);
  Text out(bytes_.substr(begin, end - begin));
  for (const Span& span : client_) {
    const size_t from = std::max<size_t>(span.begin, begin);
    const size_t to = std::min<size_t>(span.end, end);
    if (from < to) out.mark_client(static_cast<uint32_t>(from - begin), static_cast<uint32_t>(to - begin));
  }
  return out;
}

namespace {
constexpr size_t kIndexFrom = 16;  // objects with more keys get a hash index
}  // namespace

const Value* Object::find(std::string_view key) const {
  if (!index_.empty()) {
    const auto it = index_.find(std::string(key));
    return it == index_.end() ? nullptr : &items[it->second].second;
  }
  for (const auto& [name, value] : items) {
    if (name == key) return &value;
  }
  return nullptr;
}

void Object::set(std::string key, Value value) {
  if (const Value* existing = find(key); existing != nullptr) {
    *const_cast<Value*>(existing) = std::move(value);
    return;
  }
  append_new(std::move(key), std::move(value));
}

void Object::append_new(std::string key, Value value) {
  items.emplace_back(std::move(key), std::move(value));
  index_last();
}

void Object::clear() {
  items.clear();
  index_.clear();
}

void Object::index_last() {
  if (items.size() < kIndexFrom) return;
  if (index_.empty()) {
    for (size_t i = 0; i < items.size(); ++i) index_.emplace(items[i].first, i);
    return;
  }
  index_.emplace(items.back().first, items.size() - 1);
}

Value Value::boolean(bool value) {
  Value out(Kind::boolean);
  out.data_ = value;
  return out;
}

Value Value::integer(int64_t value) {
  Value out(Kind::integer);
  out.data_ = value;
  return out;
}

Value Value::number(double value) {
  Value out(Kind::number);
  out.data_ = value;
  return out;
}

Value Value::string(Text text) {
  Value out(Kind::string);
  out.data_ = std::make_shared<const Text>(std::move(text));
  return out;
}

Value Value::array(Array items) {
  Value out(Kind::array);
  int deepest = 0;
  for (const Value& item : items) deepest = std::max(deepest, item.depth_);
  out.depth_ = deepest + 1;
  out.data_ = std::make_shared<Array>(std::move(items));
  return out;
}

Value Value::object(std::shared_ptr<Object> object) {
  Value out(Kind::object);
  int deepest = 0;
  if (!object->is_namespace) {
    for (const auto& item : object->items) deepest = std::max(deepest, item.second.depth_);
  }
  out.depth_ = deepest + 1;
  out.data_ = std::move(object);
  return out;
}

Value Value::function(Function function) {
  Value out(Kind::function);
  out.data_ = std::make_shared<Function>(std::move(function));
  return out;
}

Value Value::from_client_json(const json::bj::value& json) {
  switch (json.kind()) {
    case json::bj::kind::null:
      return none();
    case json::bj::kind::bool_:
      return boolean(json.get_bool());
    case json::bj::kind::int64:
      return integer(json.get_int64());
    case json::bj::kind::uint64:
      return number(static_cast<double>(json.get_uint64()));
    case json::bj::kind::double_:
      return number(json.get_double());
    case json::bj::kind::string:
      return string(Text::client(std::string(json.get_string())));
    case json::bj::kind::array: {
      Array items;
      items.reserve(json.get_array().size());
      for (const auto& item : json.get_array()) items.push_back(from_client_json(item));
      return array(std::move(items));
    }
    case json::bj::kind::object:
      break;
  }
  auto out = std::make_shared<Object>();
  out->client_keys = true;
  for (const auto& [key, item] : json.get_object()) out->append_new(std::string(key), from_client_json(item));
  return object(std::move(out));
}

double Value::as_double() const {
  return kind_ == Kind::integer ? static_cast<double>(as_integer()) : std::get<double>(data_);
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::undefined:
    case Kind::none:
      return false;
    case Kind::boolean:
      return as_bool();
    case Kind::integer:
      return as_integer() != 0;
    case Kind::number:
      return as_double() != 0.0;
    case Kind::string:
      return as_text().size() > 0;
    case Kind::array:
      return !as_array().empty();
    case Kind::object:
      return !as_object()->items.empty();
    case Kind::function:
      break;
  }
  return true;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::undefined:
      return "undefined";
    case Kind::none:
      return "none";
    case Kind::boolean:
      return "boolean";
    case Kind::integer:
      return "integer";
    case Kind::number:
      return "float";
    case Kind::string:
      return "string";
    case Kind::array:
      return "list";
    case Kind::object:
      return "mapping";
    case Kind::function:
      break;
  }
  return "callable";
}

namespace {

// A float as Jinja prints it: integral values keep ".0" (Python's repr).
std::string float_text(double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e16) {
    return fmt::format("{:.1f}", value);
  }
  return fmt::format("{}", value);
}

// JSON.stringify's string escaping: quotes, backslashes and control characters; other bytes as
// they are.
void append_json_string(std::string_view bytes, std::string* out) {
  out->push_back('"');
  for (const char c : bytes) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          *out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

struct JsonWriter {
  int indent;
  size_t max_bytes;
  std::string out;
  bool from_client = false;
  int depth = 0;

  Status check_size() const {
    if (out.size() <= max_bytes) return {};
    return make_error(Errc::out_of_range, fmt::format("tojson: the text is longer than {} bytes", max_bytes));
  }

  void newline(int level) {
    out.push_back('\n');
    out.append(static_cast<size_t>(indent * level), ' ');
  }

  Status write(const Value& value) {
    if (depth > static_cast<int>(json::kMaxDepth)) return make_error(Errc::out_of_range, "tojson: nested too deeply");
    switch (value.kind()) {
      case Value::Kind::undefined:
      case Value::Kind::none:
        out += "null";
        return {};
      case Value::Kind::boolean:
        out += value.as_bool() ? "true" : "false";
        return {};
      case Value::Kind::integer:
        out += fmt::format("{}", value.as_integer());
        return {};
      case Value::Kind::number:
        // JSON has one number type: integral floats lose their ".0" as JSON.stringify's do.
        out += std::isfinite(value.as_double()) ? fmt::format("{}", value.as_double()) : "null";
        return {};
      case Value::Kind::string:
        from_client = from_client || value.as_text().has_client_bytes();
        append_json_string(value.as_text().bytes(), &out);
        return {};
      case Value::Kind::array:
        return write_array(value.as_array());
      case Value::Kind::object:
        return write_object(*value.as_object());
      case Value::Kind::function:
        break;
    }
    return make_error(Errc::invalid_argument, "tojson: a callable has no JSON form");
  }

  Status write_array(const Array& items) {
    out.push_back('[');
    ++depth;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += indent > 0 ? "," : ", ";
      if (indent > 0) newline(depth);
      DARKBLOOM_RETURN_IF_ERROR(write(items[i]));
      DARKBLOOM_RETURN_IF_ERROR(check_size());
    }
    --depth;
    if (indent > 0 && !items.empty()) newline(depth);
    out.push_back(']');
    return {};
  }

  Status write_object(const Object& object) {
    out.push_back('{');
    from_client = from_client || (object.client_keys && !object.items.empty());
    ++depth;
    for (size_t i = 0; i < object.items.size(); ++i) {
      if (i > 0) out += indent > 0 ? "," : ", ";
      if (indent > 0) newline(depth);
      append_json_string(object.items[i].first, &out);
      out += ": ";
      DARKBLOOM_RETURN_IF_ERROR(write(object.items[i].second));
      DARKBLOOM_RETURN_IF_ERROR(check_size());
    }
    --depth;
    if (indent > 0 && !object.items.empty()) newline(depth);
    out.push_back('}');
    return {};
  }
};

}  // namespace

Result<Text> Value::to_text(size_t max_bytes) const {
  switch (kind_) {
    case Kind::undefined:
    case Kind::none:
      return Text();
    case Kind::boolean:
      return Text::literal(as_bool() ? "true" : "false");
    case Kind::integer:
      return Text::literal(fmt::format("{}", as_integer()));
    case Kind::number:
      return Text::literal(float_text(as_double()));
    case Kind::string:
      return as_text();
    case Kind::array:
    case Kind::object:
      return to_json(*this, 0, max_bytes);
    case Kind::function:
      break;
  }
  return make_error(Errc::invalid_argument, "a callable cannot be printed");
}

bool equal(const Value& a, const Value& b, const std::function<void(size_t)>& charge) {
  using Kind = Value::Kind;
  const auto numeric = [](const Value& v) { return v.is_number() || v.kind() == Kind::boolean; };
  if (numeric(a) && numeric(b)) {
    const auto as_number = [](const Value& v) {
      return v.kind() == Kind::boolean ? (v.as_bool() ? 1.0 : 0.0) : v.as_double();
    };
    return as_number(a) == as_number(b);
  }
  const auto nothing = [](const Value& v) { return v.is_none() || v.is_undefined(); };
  if (nothing(a) || nothing(b)) return nothing(a) && nothing(b);
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::string:
      if (charge) charge(1 + (a.as_text().size() >> 10));
      return a.as_text().bytes() == b.as_text().bytes();
    case Kind::array: {
      const Array& x = a.as_array();
      const Array& y = b.as_array();
      if (&x == &y) return true;
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (charge) charge(1);
        if (!equal(x[i], y[i], charge)) return false;
      }
      return true;
    }
    case Kind::object: {
      const Object& x = *a.as_object();
      const Object& y = *b.as_object();
      if (&x == &y) return true;
      if (x.is_namespace || y.is_namespace || x.items.size() != y.items.size()) return false;
      for (const auto& [key, value] : x.items) {
        if (charge) charge(1);
        const Value* other = y.find(key);
        if (other == nullptr || !equal(value, *other, charge)) return false;
      }
      return true;
    }
    case Kind::function:
      return &a.as_function() == &b.as_function();
    default:
      break;
  }
  return false;
}

Result<Text> to_json(const Value& value, int indent, size_t max_bytes) {
  JsonWriter writer{std::clamp(indent, 0, 64), max_bytes};
  DARKBLOOM_RETURN_IF_ERROR(writer.write(value));
  return Text::derived(std::move(writer.out), writer.from_client);
}

}  // namespace darkbloom::engine::jinja
