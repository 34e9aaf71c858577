// The syntax of chat templates: the subset of Jinja that Hugging Face chat templates use, read
// with the settings transformers renders them with (trim_blocks, lstrip_blocks, a final newline
// dropped). Parsing only; jinja_template.h runs the tree. Tags outside the subset (include,
// extends, import, call, raw, ...) are refused here, with their line.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "engine/chat/jinja_value.h"

namespace darkbloom::engine::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// A call argument: positional when `keyword` is empty.
struct Argument {
  std::string keyword;
  ExprPtr value;
};

struct Expr {
  enum class Kind {
    literal,    // value
    name,       // name
    list,       // items
    tuple,      // items
    dict,       // items: key, value, key, value, ...
    attribute,  // object.name
    index,      // object[items[0]]
    slice,      // object[items[0]:items[1]:items[2]] (null items are omitted bounds)
    call,       // object(arguments)
    filter,     // object | name(arguments)
    test,       // object is [not] name(arguments)
    unary,      // name ("not", "-", "+") applied to object
    binary,     // object name other
    ternary,    // object if condition else other (other null: undefined)
  };

  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  ExprPtr object, other, condition;
  std::vector<ExprPtr> items;
  std::vector<Argument> arguments;
  bool negate = false;
};

struct Node;
using Block = std::vector<Node>;

struct Parameter {
  std::string name;
  ExprPtr default_value;  // null: none given
};

struct Node {
  enum class Kind {
    text,       // text
    output,     // {{ expr }}
    if_,        // if expr: body, else: other (an elif is an if inside other)
    for_,       // for names in expr [if condition]: body, else: other
    set,        // set names = expr, or set expr(attribute of a namespace) = other_expr
    set_block,  // set names[0]: body
    macro,      // macro names[0](parameters): body
    filter,     // filter expr (a filter expression applied to the body, whose object is null)
    break_,
    continue_,
  };

  Kind kind;
  int line = 0;
  Text text;
  ExprPtr expr, condition, target;  // target: the namespace attribute a set assigns
  std::vector<std::string> names;
  std::vector<Parameter> parameters;
  Block body, other;
};

struct Program {
  Block body;
  std::vector<std::string> names_read;  // every variable name the template reads (for feature checks)
};

// Limits on what a template may be (it comes from a model file, which may be hostile).
inline constexpr size_t kMaxTemplateBytes = 1u << 20;
inline constexpr int kMaxNesting = 100;

// Errors are `unsupported` or `bad_format` with "line N: ..." messages.
Result<Program> parse_template(std::string_view source);

}  // namespace darkbloom::engine::jinja
