#include "engine/chat/jinja_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>

#include "base/utf8.h"
#include "engine/chat/jinja_syntax.h"

namespace darkbloom::engine::jinja {

// A call's evaluated arguments.
struct CallArguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index`, or the keyword `name`, or undefined.
  const Value& get(size_t index, std::string_view name) const {
    if (index < positional.size()) return positional[index];
    return named(name);
  }
  // Only the keyword `name`, or undefined.
  const Value& named(std::string_view name) const {
    static const Value kUndefined;
    for (const auto& [key, value] : keyword) {
      if (key == name) return value;
    }
    return kUndefined;
  }
};

namespace {

// Render errors unwind the interpreter as this exception and become a Result at render(): an
// error deep in an expression has nothing to clean up on its way out.
struct RenderError {
  std::string message;
};

[[noreturn]] void fail(std::string message) {
  throw RenderError{std::move(message)};
}

struct Scope {
  std::vector<std::pair<std::string, Value>> variables;
  std::shared_ptr<Scope> parent;

  const Value* find(std::string_view name) const {
    for (const Scope* scope = this; scope != nullptr; scope = scope->parent.get()) {
      for (const auto& [key, value] : scope->variables) {
        if (key == name) return &value;
      }
    }
    return nullptr;
  }
  void set(const std::string& name, Value value) {
    for (auto& [key, existing] : variables) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    variables.emplace_back(name, std::move(value));
  }
};
using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { next, break_loop, continue_loop };

// Work done outside the interpreter's own loops, reported in steps (it throws past the budget).
using Charge = std::function<void(size_t)>;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// The first `needle` in `haystack` at or after `from`; Boyer-Moore, so a hostile pair of strings
// cannot make the search quadratic.
size_t find_bytes(std::string_view haystack, std::string_view needle, size_t from = 0) {
  if (from > haystack.size()) return std::string::npos;
  if (needle.empty()) return from;
  if (needle.size() == 1) return haystack.find(needle[0], from);
  const auto begin = haystack.begin() + static_cast<std::ptrdiff_t>(from);
  const auto found = std::search(begin, haystack.end(), std::boyer_moore_searcher(needle.begin(), needle.end()));
  return found == haystack.end() ? std::string::npos : static_cast<size_t>(found - haystack.begin());
}

size_t count_code_points(std::string_view bytes) {
  size_t count = 0;
  for (const char c : bytes) count += (static_cast<unsigned char>(c) & 0xc0) != 0x80 ? 1 : 0;
  return count;
}

// The byte offset of code point `index` (the end for index == count).
size_t code_point_offset(std::string_view bytes, size_t index) {
  size_t pos = 0;
  for (size_t i = 0; i < index && pos < bytes.size(); ++i) utf8::decode(bytes, &pos);
  return pos;
}

// Python's slice of a sequence of `length` items: `count` items from `start`, `step` apart.
struct SliceRange {
  int64_t start = 0, step = 1;
  size_t count = 0;
  size_t at(size_t k) const { return static_cast<size_t>(start + static_cast<int64_t>(k) * step); }
};

SliceRange slice_range(int64_t length, const Value& start_value, const Value& stop_value, const Value& step_value) {
  const auto read = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (v.kind() != Value::Kind::integer) fail(fmt::format("a slice {} must be an integer", what));
    return v.as_integer();
  };
  SliceRange out;
  out.step = read(step_value, "step").value_or(1);
  if (out.step == 0) fail("a slice step cannot be zero");
  if (out.step == INT64_MIN) fail("a slice step out of range");
  const auto clamp = [&](std::optional<int64_t> bound, int64_t fallback) {
    if (!bound) return fallback;
    const int64_t v = *bound < 0 ? std::max<int64_t>(*bound, -length - 1) + length : *bound;
    return out.step > 0 ? std::clamp<int64_t>(v, 0, length) : std::clamp<int64_t>(v, -1, length - 1);
  };
  out.start = clamp(read(start_value, "start"), out.step > 0 ? 0 : length - 1);
  const int64_t stop = clamp(read(stop_value, "stop"), out.step > 0 ? length : -1);
  const int64_t span = out.step > 0 ? stop - out.start : out.start - stop;
  const int64_t stride = out.step > 0 ? out.step : -out.step;
  out.count = span <= 0 ? 0 : static_cast<size_t>((span + stride - 1) / stride);
  return out;
}

bool contains(const Value& container, const Value& item, const Charge& charge) {
  if (container.is_undefined()) return false;
  if (container.is_string()) {
    if (!item.is_string()) fail(fmt::format("'in <string>' needs a string, not a {}", item.kind_name()));
    charge(container.as_text().size() >> 10);
    return find_bytes(container.as_text().bytes(), item.as_text().bytes()) != std::string::npos;
  }
  if (container.is_array()) {
    return std::any_of(container.as_array().begin(), container.as_array().end(),
                       [&](const Value& v) { return equal(v, item, charge); });
  }
  if (container.is_object()) return item.is_string() && container.as_object()->find(item.as_text().bytes());
  fail(fmt::format("'in' needs a string, list or mapping, not a {}", container.kind_name()));
}

// Python's str.strip family: `chars` (default whitespace) removed from one or both ends.
Text strip_text(const Text& text, const Value& chars, bool left, bool right) {
  const std::string& bytes = text.bytes();
  const bool whitespace = chars.is_undefined() || chars.is_none();
  if (!whitespace && !chars.is_string()) fail("strip() takes a string of characters");
  const auto strippable = [&](char c) {
    return whitespace ? is_space(c) : chars.as_text().bytes().find(c) != std::string::npos;
  };
  size_t begin = 0, end = bytes.size();
  while (left && begin < end && strippable(bytes[begin])) ++begin;
  while (right && end > begin && strippable(bytes[end - 1])) --end;
  return text.substr(begin, end);
}

bool affix_matches(const Text& text, const Value& affix, bool prefix) {
  const auto one = [&](const Value& candidate) {
    if (!candidate.is_string()) fail("startswith() and endswith() take a string or a tuple of strings");
    const std::string& bytes = text.bytes();
    const std::string& part = candidate.as_text().bytes();
    if (part.size() > bytes.size()) return false;
    return prefix ? bytes.compare(0, part.size(), part) == 0
                  : bytes.compare(bytes.size() - part.size(), part.size(), part) == 0;
  };
  if (affix.is_array()) return std::any_of(affix.as_array().begin(), affix.as_array().end(), one);
  return one(affix);
}

Array split_text(const Text& text, const Value& separator, const Value& max_split_value) {
  const int64_t max_split = max_split_value.kind() == Value::Kind::integer ? max_split_value.as_integer() : -1;
  const std::string& bytes = text.bytes();
  Array out;
  int64_t splits = 0;
  if (separator.is_undefined() || separator.is_none()) {
    size_t pos = 0;
    while (true) {
      while (pos < bytes.size() && is_space(bytes[pos])) ++pos;
      if (pos >= bytes.size()) break;
      if (max_split >= 0 && splits >= max_split) {
        size_t end = bytes.size();
        while (end > pos && is_space(bytes[end - 1])) --end;
        out.push_back(Value::string(text.substr(pos, end)));
        break;
      }
      size_t end = pos;
      while (end < bytes.size() && !is_space(bytes[end])) ++end;
      out.push_back(Value::string(text.substr(pos, end)));
      ++splits;
      pos = end;
    }
    return out;
  }
  if (!separator.is_string()) fail("split() takes a string separator");
  const std::string& sep = separator.as_text().bytes();
  if (sep.empty()) fail("split() got an empty separator");
  size_t pos = 0;
  while (max_split < 0 || splits < max_split) {
    const size_t found = find_bytes(bytes, sep, pos);
    if (found == std::string::npos) break;
    out.push_back(Value::string(text.substr(pos, found)));
    pos = found + sep.size();
    ++splits;
  }
  out.push_back(Value::string(text.substr(pos, bytes.size())));
  return out;
}

std::string ascii_case(std::string bytes, bool upper) {
  for (char& c : bytes)
    c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                : std::tolower(static_cast<unsigned char>(c)));
  return bytes;
}

std::string title_case(const std::string& bytes) {
  std::string out = bytes;
  bool word_start = true;
  for (char& c : out) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalpha(byte)) {
      c = static_cast<char>(word_start ? std::toupper(byte) : std::tolower(byte));
      word_start = false;
    } else {
      word_start = byte < 0x80;  // letters of other scripts are left as they are
    }
  }
  return out;
}

Text replace_text(const Text& text, const Value& old_value, const Value& new_value, const Value& count_value,
                  size_t max_bytes) {
  if (!old_value.is_string() || !new_value.is_string()) fail("replace() takes two strings");
  const std::string& old_bytes = old_value.as_text().bytes();
  if (old_bytes.empty()) fail("replace() of an empty string is not supported");
  const int64_t count = count_value.kind() == Value::Kind::integer ? count_value.as_integer() : -1;
  const std::string& bytes = text.bytes();
  Text out;
  size_t pos = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    const size_t found = find_bytes(bytes, old_bytes, pos);
    if (found == std::string::npos) break;
    out.append(text.substr(pos, found));
    out.append(new_value.as_text());
    if (out.size() > max_bytes) fail(fmt::format("the template made a text longer than {} bytes", max_bytes));
    pos = found + old_bytes.size();
  }
  out.append(text.substr(pos, bytes.size()));
  return out;
}

}  // namespace

class Interpreter {
 public:
  Interpreter(const RenderLimits& limits, std::time_t now) : limits_(limits), now_(now) {}
  // Namespaces are the only values a template can change, so the only ones that can hold
  // themselves: emptied at the end, no cycle outlives the render.
  ~Interpreter() {
    for (const auto& object : namespaces_) object->clear();
  }
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  void track_namespace(std::shared_ptr<Object> object) { namespaces_.push_back(std::move(object)); }

  Text render(const Program& program, const ScopePtr& globals) {
    Text out;
    render_block(program.body, globals, &out);
    return out;
  }

  Flow render_block(const Block& block, const ScopePtr& scope, Text* out) {
    for (const Node& node : block) {
      const Flow flow = render_node(node, scope, out);
      if (flow != Flow::next) return flow;
    }
    return Flow::next;
  }

  Value eval(const Expr& expr, const ScopePtr& scope);

  Value call_function(const Value& callee, CallArguments& arguments) {
    if (callee.kind() != Value::Kind::function) fail(fmt::format("a {} is not callable", callee.kind_name()));
    auto result = callee.as_function()(*this, arguments);
    if (!result) fail(result.error().message);
    if (result->is_array()) step(result->as_array().size());
    return std::move(*result);
  }

  Value call_macro(const Node& macro, const ScopePtr& defined_in, CallArguments& arguments) {
    if (++call_depth_ > limits_.max_call_depth) fail("macros call each other too deeply");
    auto scope = std::make_shared<Scope>();
    scope->parent = defined_in;
    if (arguments.positional.size() > macro.parameters.size()) {
      fail(fmt::format("macro {} takes at most {} arguments", macro.names[0], macro.parameters.size()));
    }
    for (size_t i = 0; i < macro.parameters.size(); ++i) {
      const Parameter& parameter = macro.parameters[i];
      Value value = arguments.get(i, parameter.name);
      if (value.is_undefined() && parameter.default_value != nullptr) value = eval(*parameter.default_value, scope);
      scope->set(parameter.name, std::move(value));
    }
    Text out;
    render_block(macro.body, scope, &out);
    --call_depth_;
    return make_string(std::move(out));
  }

  std::time_t now() const { return now_; }

 private:
  // Work is counted in steps: one per tag and expression, one per item a list operation copies.
  void step(size_t count = 1) {
    steps_ += count;
    if (steps_ > limits_.max_steps) fail("the template took too many steps");
  }
  // Bytes are counted apart: every string made adds its length.
  void made(size_t bytes) {
    bytes_made_ += bytes;
    if (bytes_made_ > limits_.max_bytes_made) {
      fail(fmt::format("the template made more than {} bytes of text", limits_.max_bytes_made));
    }
  }
  Value make_string(Text text) {
    check_size(text.size());
    made(text.size());
    return Value::string(std::move(text));
  }
  Value make_array(Array items) {
    step(items.size());
    Value out = Value::array(std::move(items));
    check_depth(out);
    return out;
  }
  void check_depth(const Value& value) const {
    if (value.depth() > static_cast<int>(json::kMaxDepth)) fail("lists and mappings nest too deeply");
  }
  // Reading through text costs a step per KiB.
  void scan(size_t bytes) { step(bytes >> 10); }
  void check_size(size_t bytes) const {
    if (bytes > limits_.max_text_bytes)
      fail(fmt::format("the template made a text longer than {} bytes", limits_.max_text_bytes));
  }
  void append(Text* out, const Text& text) {
    check_size(out->size() + text.size());
    made(text.size());
    out->append(text);
  }
  // Two values printed one after the other; strings are read in place.
  Value concat(const Value& left, const Value& right) {
    Text printed_left, printed_right;
    const Text& a = left.is_string() ? left.as_text() : (printed_left = text_of(left));
    const Text& b = right.is_string() ? right.as_text() : (printed_right = text_of(right));
    check_size(a.size() + b.size());
    Text out;
    out.reserve(a.size() + b.size());
    out.append(a);
    out.append(b);
    return make_string(std::move(out));
  }
  Text text_of(const Value& value) {
    auto text = value.to_text(limits_.max_text_bytes);
    if (!text) fail(text.error().message);
    return std::move(*text);
  }

  Flow render_node(const Node& node, const ScopePtr& scope, Text* out);
  Flow render_for(const Node& node, const ScopePtr& scope, Text* out);
  void assign(const Node& node, const ScopePtr& scope, Value value);

  CallArguments evaluate_arguments(const std::vector<Argument>& arguments, const ScopePtr& scope) {
    CallArguments out;
    for (const Argument& argument : arguments) {
      Value value = eval(*argument.value, scope);
      if (argument.keyword.empty()) {
        out.positional.push_back(std::move(value));
      } else {
        out.keyword.emplace_back(argument.keyword, std::move(value));
      }
    }
    return out;
  }

  Value binary(const Expr& expr, const ScopePtr& scope);
  Value dict_literal(const Expr& expr, const ScopePtr& scope);
  Value slice(const Expr& expr, const ScopePtr& scope);
  Value arithmetic(const std::string& op, const Value& left, const Value& right);
  Value member(const Value& object, const Value& key);
  Value call(const Expr& expr, const ScopePtr& scope);
  Value method(const Value& object, const std::string& name, CallArguments& arguments);
  Value string_method(const Text& text, const std::string& name, CallArguments& arguments);
  Value filter(const Value& operand, const std::string& name, CallArguments& arguments);
  Value string_filter(const Text& text, const std::string& name, CallArguments& arguments);
  Value list_filter(const Value& operand, const std::string& name, CallArguments& arguments);
  Value sort_filter(const Array& items, CallArguments& arguments);
  Value number_filter(const Value& operand, const std::string& name);
  // A filter block's chain (a | b | c whose innermost operand is the block) applied to `body`.
  Value filter_chain(const Expr& expr, Value body, const ScopePtr& scope) {
    Value operand = expr.object == nullptr ? std::move(body) : filter_chain(*expr.object, std::move(body), scope);
    CallArguments arguments = evaluate_arguments(expr.arguments, scope);
    return filter(operand, expr.name, arguments);
  }
  bool test(const Value& operand, const std::string& name, CallArguments& arguments);
  Value select_attribute(const Value& operand, CallArguments& arguments, bool keep);

  const RenderLimits& limits_;
  std::time_t now_;
  size_t steps_ = 0;
  size_t bytes_made_ = 0;
  int call_depth_ = 0;
  std::vector<ScopePtr> scopes_with_macros_;
  std::vector<std::shared_ptr<Object>> namespaces_;
  Charge charge_ = [this](size_t count) { step(count); };
};

Flow Interpreter::render_node(const Node& node, const ScopePtr& scope, Text* out) {
  step();
  switch (node.kind) {
    case Node::Kind::text:
      append(out, node.text);
      return Flow::next;
    case Node::Kind::output:
      append(out, text_of(eval(*node.expr, scope)));
      return Flow::next;
    case Node::Kind::if_:
      return render_block(eval(*node.expr, scope).truthy() ? node.body : node.other, scope, out);
    case Node::Kind::for_:
      return render_for(node, scope, out);
    case Node::Kind::set:
      assign(node, scope, eval(*node.expr, scope));
      return Flow::next;
    case Node::Kind::set_block: {
      Text body;
      render_block(node.body, scope, &body);
      scope->set(node.names[0], make_string(std::move(body)));
      return Flow::next;
    }
    case Node::Kind::macro: {
      // The macro resolves free names in the scope it was defined in. It holds that scope weakly
      // (the scope holds the macro) and the interpreter keeps the scope alive until the end.
      const Node* macro = &node;
      std::weak_ptr<Scope> defined_in = scope;
      scopes_with_macros_.push_back(scope);
      scope->set(node.names[0], Value::function([macro, defined_in](Interpreter& interpreter, CallArguments& args) {
                   return Result<Value>(interpreter.call_macro(*macro, defined_in.lock(), args));
                 }));
      return Flow::next;
    }
    case Node::Kind::filter: {
      Text body;
      render_block(node.body, scope, &body);
      append(out, text_of(filter_chain(*node.expr, make_string(std::move(body)), scope)));
      return Flow::next;
    }
    case Node::Kind::break_:
      return Flow::break_loop;
    case Node::Kind::continue_:
      return Flow::continue_loop;
  }
  return Flow::next;
}

void Interpreter::assign(const Node& node, const ScopePtr& scope, Value value) {
  if (node.target != nullptr) {
    const Value object = eval(*node.target->object, scope);
    if (!object.is_object() || !object.as_object()->is_namespace) {
      fail(fmt::format("cannot set '{}': only attributes of a namespace() can be set", node.target->name));
    }
    object.as_object()->set(node.target->name, std::move(value));
    return;
  }
  if (node.names.size() == 1) {
    scope->set(node.names[0], std::move(value));
    return;
  }
  if (!value.is_array() || value.as_array().size() != node.names.size()) {
    fail(fmt::format("cannot unpack a {} into {} names", value.kind_name(), node.names.size()));
  }
  for (size_t i = 0; i < node.names.size(); ++i) scope->set(node.names[i], value.as_array()[i]);
}

Flow Interpreter::render_for(const Node& node, const ScopePtr& scope, Text* out) {
  const Value iterable = eval(*node.expr, scope);
  Array listed;  // the items of a mapping or a string
  const Array* candidates = &listed;
  if (iterable.is_array()) {
    candidates = &iterable.as_array();
  } else if (iterable.is_object()) {
    const Object& object = *iterable.as_object();
    for (const auto& item : object.items) {
      step();
      listed.push_back(make_string(object.client_keys ? Text::client(item.first) : Text::literal(item.first)));
    }
  } else if (iterable.is_string()) {
    const Text& text = iterable.as_text();
    for (size_t pos = 0; pos < text.size();) {
      step();
      const size_t start = pos;
      utf8::decode(text.bytes(), &pos);
      listed.push_back(make_string(text.substr(start, pos)));
    }
  } else if (!iterable.is_undefined() && !iterable.is_none()) {
    fail(fmt::format("cannot loop over a {}", iterable.kind_name()));
  }
  auto loop_scope = std::make_shared<Scope>();
  loop_scope->parent = scope;
  const auto bind = [&](const Value& item) {
    if (node.names.size() == 1) {
      loop_scope->set(node.names[0], item);
      return;
    }
    if (!item.is_array() || item.as_array().size() != node.names.size()) {
      fail(fmt::format("cannot unpack a {} into {} loop variables", item.kind_name(), node.names.size()));
    }
    for (size_t i = 0; i < node.names.size(); ++i) loop_scope->set(node.names[i], item.as_array()[i]);
  };
  std::vector<size_t> selected;  // indexes of the items the loop's condition keeps
  for (size_t i = 0; i < candidates->size(); ++i) {
    step();
    if (node.condition != nullptr) {
      bind((*candidates)[i]);
      if (!eval(*node.condition, loop_scope).truthy()) continue;
    }
    selected.push_back(i);
  }
  const auto length = static_cast<int64_t>(selected.size());
  for (int64_t i = 0; i < length; ++i) {
    const auto item = [&](int64_t k) { return (*candidates)[selected[static_cast<size_t>(k)]]; };
    // A fresh loop object each pass: it holds items, so its depth is known only now.
    auto loop = std::make_shared<Object>();
    loop->items.reserve(9);
    loop->items.emplace_back("index", Value::integer(i + 1));
    loop->items.emplace_back("index0", Value::integer(i));
    loop->items.emplace_back("revindex", Value::integer(length - i));
    loop->items.emplace_back("revindex0", Value::integer(length - i - 1));
    loop->items.emplace_back("first", Value::boolean(i == 0));
    loop->items.emplace_back("last", Value::boolean(i == length - 1));
    loop->items.emplace_back("length", Value::integer(length));
    loop->items.emplace_back("previtem", i > 0 ? item(i - 1) : Value());
    loop->items.emplace_back("nextitem", i + 1 < length ? item(i + 1) : Value());
    Value loop_value = Value::object(std::move(loop));
    check_depth(loop_value);
    loop_scope->set("loop", std::move(loop_value));
    bind(item(i));
    if (render_block(node.body, loop_scope, out) == Flow::break_loop) break;
  }
  if (selected.empty()) return render_block(node.other, loop_scope, out);
  return Flow::next;
}

Value Interpreter::dict_literal(const Expr& expr, const ScopePtr& scope) {
  auto object = std::make_shared<Object>();
  for (size_t i = 0; i + 1 < expr.items.size(); i += 2) {
    const Value key = eval(*expr.items[i], scope);
    if (!key.is_string()) fail("mapping keys must be strings");
    object->client_keys = object->client_keys || key.as_text().has_client_bytes();
    object->set(key.as_text().bytes(), eval(*expr.items[i + 1], scope));
  }
  step(object->items.size());
  Value out = Value::object(std::move(object));
  check_depth(out);
  return out;
}

Value Interpreter::slice(const Expr& expr, const ScopePtr& scope) {
  const Value object = eval(*expr.object, scope);
  const auto bound = [&](size_t i) { return expr.items[i] ? eval(*expr.items[i], scope) : Value(); };
  const Value start = bound(0), stop = bound(1), step_value = bound(2);
  if (object.is_array()) {
    const Array& items = object.as_array();
    const SliceRange range = slice_range(static_cast<int64_t>(items.size()), start, stop, step_value);
    step(range.count);
    Array out;
    out.reserve(range.count);
    for (size_t k = 0; k < range.count; ++k) out.push_back(items[range.at(k)]);
    return make_array(std::move(out));
  }
  if (!object.is_string()) fail(fmt::format("cannot slice a {}", object.kind_name()));
  const Text& text = object.as_text();
  scan(text.size());
  const SliceRange range = slice_range(static_cast<int64_t>(count_code_points(text.bytes())), start, stop, step_value);
  step(range.count);
  if (range.count == 0) return make_string(Text());
  if (range.step == 1) {
    const size_t begin = code_point_offset(text.bytes(), range.at(0));
    return make_string(text.substr(begin, code_point_offset(text.bytes(), range.at(range.count - 1) + 1)));
  }
  // One pass over the code points, keeping the selected ones, then in the slice's order.
  const size_t first = std::min(range.at(0), range.at(range.count - 1));
  const auto stride = static_cast<size_t>(range.step > 0 ? range.step : -range.step);
  std::vector<Text> pieces;
  pieces.reserve(range.count);
  size_t pos = 0;
  for (size_t index = 0; pos < text.size() && pieces.size() < range.count; ++index) {
    const size_t begin = pos;
    utf8::decode(text.bytes(), &pos);
    if (index >= first && (index - first) % stride == 0) pieces.push_back(text.substr(begin, pos));
  }
  if (range.step < 0) std::reverse(pieces.begin(), pieces.end());
  Text out;
  for (const Text& piece : pieces) out.append(piece);
  return make_string(std::move(out));
}

Value Interpreter::eval(const Expr& expr, const ScopePtr& scope) {
  step();
  switch (expr.kind) {
    case Expr::Kind::literal:
      return expr.value;
    case Expr::Kind::name: {
      const Value* value = scope->find(expr.name);
      return value != nullptr ? *value : Value();
    }
    case Expr::Kind::list:
    case Expr::Kind::tuple: {
      Array items;
      for (const ExprPtr& item : expr.items) items.push_back(eval(*item, scope));
      return make_array(std::move(items));
    }
    case Expr::Kind::dict:
      return dict_literal(expr, scope);
    case Expr::Kind::attribute:
      return member(eval(*expr.object, scope), Value::literal(expr.name));
    case Expr::Kind::index:
      return member(eval(*expr.object, scope), eval(*expr.items[0], scope));
    case Expr::Kind::slice:
      return slice(expr, scope);
    case Expr::Kind::call:
      return call(expr, scope);
    case Expr::Kind::filter: {
      const Value operand = eval(*expr.object, scope);
      CallArguments arguments = evaluate_arguments(expr.arguments, scope);
      return filter(operand, expr.name, arguments);
    }
    case Expr::Kind::test: {
      const Value operand = eval(*expr.object, scope);
      CallArguments arguments = evaluate_arguments(expr.arguments, scope);
      return Value::boolean(test(operand, expr.name, arguments) != expr.negate);
    }
    case Expr::Kind::unary: {
      const Value operand = eval(*expr.object, scope);
      if (expr.name == "not") return Value::boolean(!operand.truthy());
      const int sign = expr.name == "-" ? -1 : 1;
      if (operand.kind() == Value::Kind::integer) {
        if (sign < 0 && operand.as_integer() == INT64_MIN) fail("integer overflow");
        return Value::integer(sign * operand.as_integer());
      }
      if (operand.kind() == Value::Kind::boolean) return Value::integer(sign * (operand.as_bool() ? 1 : 0));
      if (operand.kind() == Value::Kind::number) return Value::number(sign * operand.as_double());
      fail(fmt::format("unary {} of a {}", expr.name, operand.kind_name()));
    }
    case Expr::Kind::binary:
      return binary(expr, scope);
    case Expr::Kind::ternary:
      if (eval(*expr.condition, scope).truthy()) return eval(*expr.object, scope);
      return expr.other ? eval(*expr.other, scope) : Value();
  }
  return Value();
}

Value Interpreter::binary(const Expr& expr, const ScopePtr& scope) {
  const std::string& op = expr.name;
  const Value left = eval(*expr.object, scope);
  if (op == "and") return left.truthy() ? eval(*expr.other, scope) : left;
  if (op == "or") return left.truthy() ? left : eval(*expr.other, scope);
  const Value right = eval(*expr.other, scope);
  if (op == "==") return Value::boolean(equal(left, right, charge_));
  if (op == "!=") return Value::boolean(!equal(left, right, charge_));
  if (op == "in") return Value::boolean(contains(right, left, charge_));
  if (op == "not in") return Value::boolean(!contains(right, left, charge_));
  if (op == "~") {
    if (left.is_none() || right.is_none()) fail("cannot concatenate none with ~");
    return concat(left, right);
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int order = 0;
    if (left.is_number() && right.is_number()) {
      order = left.as_double() < right.as_double() ? -1 : left.as_double() > right.as_double() ? 1 : 0;
    } else if (left.is_string() && right.is_string()) {
      order = left.as_text().bytes().compare(right.as_text().bytes());
    } else {
      fail(fmt::format("cannot compare a {} with a {}", left.kind_name(), right.kind_name()));
    }
    if (op == "<") return Value::boolean(order < 0);
    if (op == ">") return Value::boolean(order > 0);
    if (op == "<=") return Value::boolean(order <= 0);
    return Value::boolean(order >= 0);
  }
  return arithmetic(op, left, right);
}

Value Interpreter::arithmetic(const std::string& op, const Value& left, const Value& right) {
  if (left.is_none() || right.is_none() || left.is_undefined() || right.is_undefined()) {
    fail(fmt::format("cannot apply {} to {} and {}", op, left.kind_name(), right.kind_name()));
  }
  if (op == "+" && (left.is_string() || right.is_string())) return concat(left, right);
  if (op == "+" && left.is_array() && right.is_array()) {
    Array items = left.as_array();
    items.insert(items.end(), right.as_array().begin(), right.as_array().end());
    return make_array(std::move(items));
  }
  if (op == "*" && left.is_string() && right.kind() == Value::Kind::integer) {
    const int64_t times = left.as_text().size() == 0 ? 0 : std::max<int64_t>(0, right.as_integer());
    check_size(left.as_text().size() * static_cast<size_t>(std::min<int64_t>(times, 1 << 30)));
    Text text;
    for (int64_t i = 0; i < times; ++i) text.append(left.as_text());
    return make_string(std::move(text));
  }
  const auto numeric = [](const Value& v) { return v.is_number() || v.kind() == Value::Kind::boolean; };
  if (!numeric(left) || !numeric(right)) {
    fail(fmt::format("cannot apply {} to {} and {}", op, left.kind_name(), right.kind_name()));
  }
  const auto integer_of = [](const Value& v) {
    return v.kind() == Value::Kind::boolean ? (v.as_bool() ? 1 : 0) : v.as_integer();
  };
  const auto double_of = [](const Value& v) {
    return v.kind() == Value::Kind::boolean ? (v.as_bool() ? 1.0 : 0.0) : v.as_double();
  };
  const bool floating = left.kind() == Value::Kind::number || right.kind() == Value::Kind::number;
  if (!floating && op != "/" && op != "**") {
    const int64_t a = integer_of(left), b = integer_of(right);
    int64_t result = 0;
    bool overflow = false;
    if (op == "+") {
      overflow = __builtin_add_overflow(a, b, &result);
    } else if (op == "-") {
      overflow = __builtin_sub_overflow(a, b, &result);
    } else if (op == "*") {
      overflow = __builtin_mul_overflow(a, b, &result);
    } else if (op == "//" || op == "%") {
      if (b == 0) fail("integer division or modulo by zero");
      if (a == INT64_MIN && b == -1) fail("integer overflow");
      int64_t quotient = a / b, remainder = a % b;
      if (remainder != 0 && ((remainder < 0) != (b < 0))) {
        --quotient;
        remainder += b;
      }
      result = op == "//" ? quotient : remainder;
    }
    if (overflow) fail("integer overflow");
    return Value::integer(result);
  }
  const double a = double_of(left), b = double_of(right);
  if (op == "+") return Value::number(a + b);
  if (op == "-") return Value::number(a - b);
  if (op == "*") return Value::number(a * b);
  if (op == "/" || op == "//" || op == "%") {
    if (b == 0) fail("division by zero");
    if (op == "/") return Value::number(a / b);
    if (op == "//") return Value::number(std::floor(a / b));
    return Value::number(a - b * std::floor(a / b));
  }
  const double result = std::pow(a, b);
  if (!std::isfinite(result)) fail("the power is not a finite number");
  if (!floating && b >= 0 && std::fabs(result) < 9e18) return Value::integer(static_cast<int64_t>(result));
  return Value::number(result);
}

Value Interpreter::member(const Value& object, const Value& key) {
  if (object.is_object()) {
    if (!key.is_string()) return Value();
    const Value* value = object.as_object()->find(key.as_text().bytes());
    return value != nullptr ? *value : Value();
  }
  if (key.kind() == Value::Kind::integer && (object.is_array() || object.is_string())) {
    int64_t index = key.as_integer();
    if (object.is_array()) {
      const auto size = static_cast<int64_t>(object.as_array().size());
      if (index < 0) index += size;
      if (index < 0 || index >= size) return Value();
      return object.as_array()[static_cast<size_t>(index)];
    }
    const Text& text = object.as_text();
    scan(text.size());
    const auto size = static_cast<int64_t>(count_code_points(text.bytes()));
    if (index < 0) index += size;
    if (index < 0 || index >= size) return Value();
    const size_t begin = code_point_offset(text.bytes(), static_cast<size_t>(index));
    return make_string(text.substr(begin, code_point_offset(text.bytes(), static_cast<size_t>(index) + 1)));
  }
  return Value();  // as Hugging Face's renderer: a missing attribute is undefined, not an error
}

Value Interpreter::call(const Expr& expr, const ScopePtr& scope) {
  if (expr.object->kind == Expr::Kind::attribute) {
    const Value object = eval(*expr.object->object, scope);
    const std::string& name = expr.object->name;
    CallArguments arguments = evaluate_arguments(expr.arguments, scope);
    // A namespace's attribute may be a macro; a mapping's keys never hide its methods.
    const bool builtin = name == "items" || name == "keys" || name == "values" || name == "get";
    if (object.is_object() && (object.as_object()->is_namespace || !builtin)) {
      if (const Value* function = object.as_object()->find(name); function != nullptr) {
        const Value held = *function;  // the call may replace the attribute that holds it
        return call_function(held, arguments);
      }
    }
    return method(object, name, arguments);
  }
  const Value callee = eval(*expr.object, scope);
  CallArguments arguments = evaluate_arguments(expr.arguments, scope);
  return call_function(callee, arguments);
}

Value Interpreter::method(const Value& object, const std::string& name, CallArguments& arguments) {
  if (object.is_string()) return string_method(object.as_text(), name, arguments);
  if (object.is_object()) {
    const Object& mapping = *object.as_object();
    const auto key_value = [&](const std::string& key) {
      return make_string(mapping.client_keys ? Text::client(key) : Text::literal(key));
    };
    Array out;
    if (name == "items") {
      for (const auto& [key, value] : mapping.items) out.push_back(make_array({key_value(key), value}));
      return make_array(std::move(out));
    }
    if (name == "keys") {
      for (const auto& item : mapping.items) out.push_back(key_value(item.first));
      return make_array(std::move(out));
    }
    if (name == "values") {
      for (const auto& item : mapping.items) out.push_back(item.second);
      return make_array(std::move(out));
    }
    if (name == "get") {
      const Value& key = arguments.get(0, "key");
      const Value* found = key.is_string() ? mapping.find(key.as_text().bytes()) : nullptr;
      if (found != nullptr) return *found;
      const Value& fallback = arguments.get(1, "default");
      return fallback.is_undefined() ? Value::none() : fallback;
    }
  }
  fail(fmt::format("a {} has no method {}()", object.kind_name(), name));
}

Value Interpreter::string_method(const Text& text, const std::string& name, CallArguments& arguments) {
  const std::string& bytes = text.bytes();
  scan(bytes.size());  // every method reads the text, some of them more than once
  if (name == "strip") return make_string(strip_text(text, arguments.get(0, "chars"), true, true));
  if (name == "lstrip") return make_string(strip_text(text, arguments.get(0, "chars"), true, false));
  if (name == "rstrip") return make_string(strip_text(text, arguments.get(0, "chars"), false, true));
  if (name == "startswith") return Value::boolean(affix_matches(text, arguments.get(0, "prefix"), true));
  if (name == "endswith") return Value::boolean(affix_matches(text, arguments.get(0, "suffix"), false));
  if (name == "split") {
    made(bytes.size());
    return make_array(split_text(text, arguments.get(0, "sep"), arguments.get(1, "maxsplit")));
  }
  if (name == "upper" || name == "lower") {
    return make_string(Text::derived(ascii_case(bytes, name == "upper"), text.has_client_bytes()));
  }
  if (name == "title") return make_string(Text::derived(title_case(bytes), text.has_client_bytes()));
  if (name == "capitalize") {
    std::string out = ascii_case(bytes, false);
    if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    return make_string(Text::derived(std::move(out), text.has_client_bytes()));
  }
  if (name == "replace") {
    scan(bytes.size());
    Text out = replace_text(text, arguments.get(0, "old"), arguments.get(1, "new"), arguments.get(2, "count"),
                            limits_.max_text_bytes);
    check_size(out.size());
    return make_string(std::move(out));
  }
  if (name == "find") {
    const Value& needle = arguments.get(0, "sub");
    if (!needle.is_string()) fail("find() takes a string");
    scan(bytes.size());
    const size_t found = find_bytes(bytes, needle.as_text().bytes());
    return Value::integer(found == std::string::npos ? -1 : static_cast<int64_t>(found));
  }
  if (name == "join") {
    const Value& items = arguments.get(0, "iterable");
    if (!items.is_array()) fail("join() takes a list");
    Text out;
    for (size_t i = 0; i < items.as_array().size(); ++i) {
      step();
      if (i > 0) out.append(text);
      out.append(text_of(items.as_array()[i]));
      check_size(out.size());
    }
    return make_string(std::move(out));
  }
  fail(fmt::format("a string has no method {}()", name));
}

Value Interpreter::select_attribute(const Value& operand, CallArguments& arguments, bool keep) {
  if (!operand.is_array()) fail("selectattr and rejectattr take a list");
  const Value& attribute = arguments.get(0, "attribute");
  if (!attribute.is_string()) fail("selectattr and rejectattr take an attribute name");
  CallArguments test_arguments;
  for (size_t i = 2; i < arguments.positional.size(); ++i) test_arguments.positional.push_back(arguments.positional[i]);
  const Value& test_name = arguments.get(1, "test");
  Array out;
  for (const Value& item : operand.as_array()) {
    step();
    const Value value = member(item, attribute);
    const bool passes = test_name.is_undefined()
                            ? value.truthy()
                            : test(value, test_name.is_string() ? test_name.as_text().bytes() : "", test_arguments);
    if (passes == keep) out.push_back(item);
  }
  return make_array(std::move(out));
}

Value Interpreter::filter(const Value& operand, const std::string& name, CallArguments& arguments) {
  if (name == "safe") return operand;
  if (name == "tojson") {
    const Value& indent = arguments.get(0, "indent");
    const int spaces =
        indent.kind() == Value::Kind::integer ? static_cast<int>(std::clamp<int64_t>(indent.as_integer(), 0, 64)) : 0;
    auto json = to_json(operand, spaces, limits_.max_text_bytes);
    if (!json) fail(json.error().message);
    check_size(json->size());
    return make_string(std::move(*json));
  }
  if (name == "string") return make_string(text_of(operand));
  if (name == "default" || name == "d") {
    const bool falsy = arguments.get(1, "boolean").truthy();
    if (operand.is_undefined() || (falsy && !operand.truthy())) {
      const Value& fallback = arguments.get(0, "default_value");
      return fallback.is_undefined() ? Value::literal("") : fallback;
    }
    return operand;
  }
  if (name == "length" || name == "count") {
    if (operand.is_string()) {
      scan(operand.as_text().size());
      return Value::integer(static_cast<int64_t>(count_code_points(operand.as_text().bytes())));
    }
    if (operand.is_array()) return Value::integer(static_cast<int64_t>(operand.as_array().size()));
    if (operand.is_object()) return Value::integer(static_cast<int64_t>(operand.as_object()->items.size()));
    if (operand.is_undefined()) return Value::integer(0);
    fail(fmt::format("a {} has no length", operand.kind_name()));
  }
  if (name == "items") return method(operand, "items", arguments);
  if (name == "dictsort" && operand.is_object()) {
    Value pairs = method(operand, "items", arguments);
    Array sorted = pairs.as_array();
    step(sorted.size() * 8);
    std::stable_sort(sorted.begin(), sorted.end(), [](const Value& a, const Value& b) {
      return a.as_array()[0].as_text().bytes() < b.as_array()[0].as_text().bytes();
    });
    return make_array(std::move(sorted));
  }
  if (name == "selectattr" || name == "rejectattr") return select_attribute(operand, arguments, name == "selectattr");
  if (operand.is_string()) return string_filter(operand.as_text(), name, arguments);
  if (operand.is_array()) return list_filter(operand, name, arguments);
  if (operand.is_number() || operand.kind() == Value::Kind::boolean) return number_filter(operand, name);
  fail(fmt::format("the filter '{}' does not apply to a {}", name, operand.kind_name()));
}

Value Interpreter::string_filter(const Text& text, const std::string& name, CallArguments& arguments) {
  scan(text.size());
  if (name == "trim") return make_string(strip_text(text, arguments.get(0, "chars"), true, true));
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "replace") {
    return string_method(text, name, arguments);
  }
  if (name == "int" || name == "float") {
    // Leading and trailing whitespace allowed; text that is no number is 0, as in Jinja.
    const Text trimmed = strip_text(text, Value(), true, true);
    const char* begin = trimmed.bytes().data();
    const char* end = begin + trimmed.size();
    if (name == "int") {
      int64_t number = 0;
      const auto [last, ec] = std::from_chars(begin, end, number);
      return Value::integer(ec == std::errc() && last == end ? number : 0);
    }
    double number = 0;
    const auto [last, ec] = std::from_chars(begin, end, number);
    return Value::number(ec == std::errc() && last == end ? number : 0.0);
  }
  if (name == "indent") {
    const Value& width = arguments.get(0, "width");
    const std::string pad(
        width.kind() == Value::Kind::integer ? static_cast<size_t>(std::clamp<int64_t>(width.as_integer(), 0, 64)) : 4,
        ' ');
    const bool first = arguments.get(1, "first").truthy();
    std::string out;
    bool line_start = first;
    for (const char c : text.bytes()) {
      if (line_start && c != '\n') out += pad;
      line_start = false;
      out.push_back(c);
      if (c == '\n') line_start = true;
    }
    check_size(out.size());
    return make_string(Text::derived(std::move(out), text.has_client_bytes()));
  }
  fail(fmt::format("the filter '{}' does not apply to a string", name));
}

Value Interpreter::sort_filter(const Array& items, CallArguments& arguments) {
  // Strings by bytes (case-insensitively unless case_sensitive=true), numbers by value;
  // attribute= sorts mappings by one of their values. Keys are made once, then compared.
  const Value& attribute = arguments.named("attribute");
  const bool case_sensitive = arguments.get(1, "case_sensitive").truthy();
  const bool reverse = arguments.get(0, "reverse").truthy();
  struct Keyed {
    Value key;
    std::string folded;  // strings: the bytes compared
    size_t index;
  };
  std::vector<Keyed> keyed;
  keyed.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    Value key = attribute.is_string() ? member(items[i], attribute) : items[i];
    if (!key.is_number() && !key.is_string()) fail(fmt::format("sort cannot order a {}", key.kind_name()));
    std::string folded;
    if (key.is_string()) {
      scan(key.as_text().size());
      made(key.as_text().size());
      folded = case_sensitive ? key.as_text().bytes() : ascii_case(key.as_text().bytes(), false);
    }
    keyed.push_back({std::move(key), std::move(folded), i});
  }
  step(keyed.size() * 8);
  const auto less = [&](const Keyed& a, const Keyed& b) {
    if (a.key.is_number() && b.key.is_number()) return a.key.as_double() < b.key.as_double();
    if (a.key.is_string() && b.key.is_string()) return a.folded < b.folded;
    fail("sort cannot compare a number with a string");
  };
  std::stable_sort(keyed.begin(), keyed.end(),
                   [&](const Keyed& a, const Keyed& b) { return reverse ? less(b, a) : less(a, b); });
  Array out;
  out.reserve(keyed.size());
  for (const Keyed& entry : keyed) out.push_back(items[entry.index]);
  return make_array(std::move(out));
}

Value Interpreter::list_filter(const Value& operand, const std::string& name, CallArguments& arguments) {
  const Array& items = operand.as_array();
  if (name == "first") return items.empty() ? Value() : items.front();
  if (name == "last") return items.empty() ? Value() : items.back();
  if (name == "list") return operand;
  if (name == "reverse") return make_array(Array(items.rbegin(), items.rend()));
  if (name == "join") {
    const Value& separator = arguments.get(0, "d");
    CallArguments join_arguments;
    join_arguments.positional.push_back(operand);
    return string_method(separator.is_string() ? separator.as_text() : Text(), "join", join_arguments);
  }
  if (name == "select" || name == "reject") {
    // select("test", args...) keeps the items that pass; reject those that fail. No test: truthiness.
    const Value& test_name = arguments.get(0, "test");
    CallArguments test_arguments;
    for (size_t i = 1; i < arguments.positional.size(); ++i)
      test_arguments.positional.push_back(arguments.positional[i]);
    Array out;
    for (const Value& item : items) {
      step();
      const bool passes =
          test_name.is_string() ? test(item, test_name.as_text().bytes(), test_arguments) : item.truthy();
      if (passes == (name == "select")) out.push_back(item);
    }
    return make_array(std::move(out));
  }
  if (name == "sort") return sort_filter(items, arguments);
  if (name == "unique") {
    Array out;
    for (const Value& item : items) {
      step(out.size() + 1);
      if (std::none_of(out.begin(), out.end(), [&](const Value& seen) { return equal(seen, item, charge_); }))
        out.push_back(item);
    }
    return make_array(std::move(out));
  }
  if (name == "map") {
    // map(attribute="name") or map("filter")
    const Value& attribute = arguments.named("attribute");
    const Value& filter_name = arguments.get(0, "filter");
    if (!attribute.is_string() && !filter_name.is_string()) fail("map() takes attribute= or a filter name");
    Array out;
    CallArguments none;
    for (const Value& item : items) {
      out.push_back(attribute.is_string() ? member(item, attribute)
                                          : filter(item, filter_name.as_text().bytes(), none));
    }
    return make_array(std::move(out));
  }
  fail(fmt::format("the filter '{}' does not apply to a list", name));
}

Value Interpreter::number_filter(const Value& operand, const std::string& name) {
  if (name == "int" && operand.kind() == Value::Kind::number) {
    const double value = operand.as_double();
    if (!(std::fabs(value) < 9.2e18)) fail("the number is too large for an integer");
    return Value::integer(static_cast<int64_t>(value));
  }
  if (name == "int")
    return Value::integer(operand.kind() == Value::Kind::integer ? operand.as_integer() : operand.as_bool());
  if (name == "float") return Value::number(operand.is_number() ? operand.as_double() : operand.as_bool());
  if (name == "abs" && operand.kind() == Value::Kind::integer) {
    if (operand.as_integer() == INT64_MIN) fail("integer overflow");
    return Value::integer(std::llabs(operand.as_integer()));
  }
  if (name == "abs" && operand.kind() == Value::Kind::boolean) return Value::integer(operand.as_bool() ? 1 : 0);
  if (name == "abs") return Value::number(std::fabs(operand.as_double()));
  fail(fmt::format("the filter '{}' does not apply to a {}", name, operand.kind_name()));
}

bool Interpreter::test(const Value& operand, const std::string& name, CallArguments& arguments) {
  using Kind = Value::Kind;
  const Value& argument = arguments.get(0, "value");
  if (name == "defined") return !operand.is_undefined();
  if (name == "undefined") return operand.is_undefined();
  if (name == "none") return operand.is_none();
  if (name == "string") return operand.is_string();
  if (name == "number") return operand.is_number();
  if (name == "integer") return operand.kind() == Kind::integer;
  if (name == "float") return operand.kind() == Kind::number;
  if (name == "boolean") return operand.kind() == Kind::boolean;
  if (name == "true") return operand.kind() == Kind::boolean && operand.as_bool();
  if (name == "false") return operand.kind() == Kind::boolean && !operand.as_bool();
  if (name == "mapping") return operand.is_object();
  if (name == "iterable") return operand.is_array() || operand.is_string() || operand.is_object();
  if (name == "sequence") return operand.is_array() || operand.is_string();
  if (name == "callable") return operand.kind() == Kind::function;
  if (name == "odd" || name == "even") {
    if (operand.kind() != Kind::integer) fail("odd and even test integers");
    return (operand.as_integer() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    if (operand.kind() != Kind::integer || argument.kind() != Kind::integer || argument.as_integer() == 0) {
      fail("divisibleby tests an integer by a non-zero integer");
    }
    const int64_t divisor = argument.as_integer();
    return divisor == 1 || divisor == -1 || operand.as_integer() % divisor == 0;
  }
  if (name == "eq" || name == "equalto" || name == "sameas") return equal(operand, argument, charge_);
  if (name == "ne") return !equal(operand, argument, charge_);
  if (name == "in") return contains(argument, operand, charge_);
  if (name == "lower" || name == "upper") {
    return operand.is_string() && ascii_case(operand.as_text().bytes(), name == "upper") == operand.as_text().bytes();
  }
  fail(fmt::format("unknown test '{}'", name));
}

namespace {

// range(stop), range(start, stop[, step]).
Result<Value> range_function(Interpreter&, CallArguments& arguments) {
  constexpr int64_t kMaxRange = 100'000;
  std::vector<int64_t> bounds;
  for (const Value& value : arguments.positional) {
    if (value.kind() != Value::Kind::integer) return make_error(Errc::invalid_argument, "range() takes integers");
    bounds.push_back(value.as_integer());
  }
  if (bounds.empty() || bounds.size() > 3) return make_error(Errc::invalid_argument, "range() takes 1 to 3 integers");
  const int64_t start = bounds.size() == 1 ? 0 : bounds[0];
  const int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
  const int64_t step = bounds.size() == 3 ? bounds[2] : 1;
  if (step == 0) return make_error(Errc::invalid_argument, "range() step cannot be zero");
  Array out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange) {
      return make_error(Errc::out_of_range, fmt::format("range() of more than {} numbers", kMaxRange));
    }
    out.push_back(Value::integer(i));
    if (__builtin_add_overflow(i, step, &i)) break;
  }
  return Value::array(std::move(out));
}

Result<Value> namespace_function(Interpreter& interpreter, CallArguments& arguments) {
  auto object = std::make_shared<Object>();
  object->is_namespace = true;
  for (auto& [key, value] : arguments.keyword) object->set(key, std::move(value));
  interpreter.track_namespace(object);
  return Value::object(std::move(object));
}

Result<Value> raise_exception_function(Interpreter&, CallArguments& arguments) {
  const Value& message = arguments.get(0, "message");
  return make_error(Errc::invalid_argument, message.is_string() ? message.as_text().bytes() : "raise_exception()");
}

Result<Value> strftime_now_function(Interpreter& interpreter, CallArguments& arguments) {
  const Value& format = arguments.get(0, "format");
  if (!format.is_string() || format.as_text().size() > 256) {
    return make_error(Errc::invalid_argument, "strftime_now() takes a format string");
  }
  const std::time_t now = interpreter.now();
  std::tm parts{};
  gmtime_r(&now, &parts);
  char buffer[512];
  const size_t length = std::strftime(buffer, sizeof(buffer), format.as_text().bytes().c_str(), &parts);
  return Value::string(Text::derived(std::string(buffer, length), format.as_text().has_client_bytes()));
}

}  // namespace

Result<Template> Template::compile(std::string_view source) {
  auto program = parse_template(source);
  if (!program) return program.error();
  Template out;
  out.program_ = std::make_shared<const Program>(std::move(*program));
  return out;
}

bool Template::reads(std::string_view name) const {
  return std::binary_search(program_->names_read.begin(), program_->names_read.end(), name);
}

Result<Text> Template::render(const std::vector<std::pair<std::string, Value>>& variables, std::time_t now,
                              const RenderLimits& limits) const {
  auto globals = std::make_shared<Scope>();
  globals->set("range", Value::function(range_function));
  globals->set("namespace", Value::function(namespace_function));
  globals->set("raise_exception", Value::function(raise_exception_function));
  globals->set("strftime_now", Value::function(strftime_now_function));
  for (const auto& [name, value] : variables) globals->set(name, value);
  Interpreter interpreter(limits, now);
  try {
    return interpreter.render(*program_, globals);
  } catch (const RenderError& e) {
    return make_error(Errc::invalid_argument, e.message);
  } catch (const std::exception& e) {  // bad_alloc, length_error: the limits should come first
    return make_error(Errc::resource_exhausted, std::string("the template could not be rendered: ") + e.what());
  }
}

}  // namespace darkbloom::engine::jinja
