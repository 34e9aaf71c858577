// Tool calls read out of a model's answer as it streams, in the syntax its family was trained on
// (chat_template.h: ToolCallSyntax), or from the JSON a forced call was constrained to. Calls
// stream as they are written: a call's first piece names the function (once its name is read and
// its arguments have begun), later pieces carry the arguments' original text. What is not a call
// is content; a call that names no offered function, or whose arguments are not an object, is
// content too.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace darkbloom::engine {

// A piece of the answer's `index`-th call: its first piece names the function; any piece may
// carry a fragment of the arguments (JSON text; the fragments of a call add up to an object, or
// to a prefix of one when the answer was cut short).
struct ToolCallPiece {
  int index = 0;
  std::string name;
  std::string arguments;
};

// A stretch of the answer: content, or a piece of a call.
struct ToolCallSegment {
  std::string content;
  std::optional<ToolCallPiece> call;
};

class ToolCallParser {
 public:
  enum class Mode {
    hermes,        // <tool_call>{"name": ..., "arguments": {...}}</tool_call> anywhere in the text
    llama3_json,   // the whole answer is {"name": ..., "parameters": {...}} (several: joined by ';')
    forced_named,  // the whole answer is the arguments of `forced_name` (grammar-constrained)
    forced_list,   // the whole answer is [{"name": ..., "arguments": {...}}, ...] (grammar-constrained)
  };
  // `tools` are the names the model may call; calls beyond `max_calls` stay content.
  ToolCallParser(Mode mode, std::vector<std::string> tools, size_t max_calls, std::string forced_name = {});
  ToolCallParser(const ToolCallParser&) = default;
  ToolCallParser& operator=(const ToolCallParser&) = default;
  ~ToolCallParser();  // held text is wiped

  // What the answer's next text makes, in order; text that may still turn out to be part of a
  // call is held back (at most kMaxHeldBytes before it is given up as content).
  std::vector<ToolCallSegment> feed(std::string_view text);
  // The end of the answer: what was held back; a call cut short ends with the arguments it has.
  std::vector<ToolCallSegment> finish();
  // Calls begun so far.
  int calls() const { return calls_; }

  // Text held while deciding whether it is a call, before it is given up as content.
  static constexpr size_t kMaxHeldBytes = 4096;
  // Text swallowed around a call (whitespace, separators, a closing tag, members after the
  // arguments) before the rest is content: the coordinator bounds usage by what it relays.
  static constexpr size_t kMaxSwallowBytes = 32;

 private:
  // One JSON object being read as a call: {"name": "...", "arguments" | "parameters": {...}}.
  struct CallObject {
    int depth = 0;  // 1: among the object's members
    bool in_string = false, escaped = false;
    bool expecting_value = false;  // after a member's ':'
    std::string key;               // the member being read
    bool reading_key = false, reading_name = false;
    std::string name;
    bool name_done = false;
    char arguments_kind = 0;  // the first character of the arguments' value, 0 before it
    bool in_arguments = false, arguments_done = false;
    std::string held_arguments;  // before the call has started (its name unknown yet)
    std::string raw;             // the object's text, given back as content if it is no call
    std::string tail;            // a started call's text after its arguments
    bool started = false;        // its first piece was emitted
    bool rejected = false;       // not a call (unknown name, arguments not an object, too many)
    bool done = false;           // its closing brace was read
  };
  enum class State { content, block_start, in_object, after_object, opening, between_calls, rest_is_content };

  void step(char c);
  void step_hermes(char c);
  void step_llama(char c);
  void step_forced_list(char c);
  void begin_object();
  void object_char(char c);
  void object_string_char(char c);
  void object_structure_char(char c);
  void try_start_call();
  // A character of the arguments: a piece once the call has started, held before.
  void add_argument(char c);
  // The object is over (closed, or cut off): emits what is still due, or gives it back as
  // content. Whether it was a call.
  bool end_object(bool closed);
  // Gives up an object held longer than kMaxHeldBytes without becoming a call: it is content,
  // and the parser goes on in state `next`.
  void give_up_if_too_long(State next);
  // After each character of an object: gives up one that cannot be a call (its text is content
  // at once) and ends a call whose object goes on too long after its arguments.
  void settle_object(State next);
  // Held text re-read as content (held_ is emptied first).
  void reread_as_content(State next);
  void add_content(std::string_view text);
  void add_piece(std::string name, std::string_view arguments);
  void flush_whitespace_if_no_call();

  Mode mode_;
  std::vector<std::string> tools_;
  size_t max_calls_;
  std::string forced_name_;
  int calls_ = 0;
  State state_ = State::content;
  std::string held_;        // hermes: a possible "<tool_call>" / "</tool_call>"; llama: leading text
  std::string whitespace_;  // content whitespace held: dropped if a call follows it
  CallObject object_;
  int list_depth_ = 0;  // forced_list: nesting of the array
  bool list_in_string_ = false, list_escaped_ = false;
  std::vector<ToolCallSegment> out_;
};

}  // namespace darkbloom::engine
