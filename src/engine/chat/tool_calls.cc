#include "engine/chat/tool_calls.h"

#include <string.h>  // explicit_bzero

#include <algorithm>

#include "base/json.h"

namespace darkbloom::engine {
namespace {

namespace bj = json::bj;

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxOpeningBytes = 256;  // llama3_json: leading text before the answer's first character

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool only_space(std::string_view text) {
  return std::all_of(text.begin(), text.end(), is_space);
}

bool is_arguments_key(std::string_view key) {
  return key == "arguments" || key == "parameters";
}

// How many bytes at the end of `text` could begin `marker` (without being all of it).
size_t partial_suffix(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

void wipe(std::string& text) {
  if (!text.empty()) explicit_bzero(text.data(), text.size());
  text.clear();
}

}  // namespace

ToolCallParser::ToolCallParser(Mode mode, std::vector<std::string> tools, size_t max_calls, std::string forced_name)
    : mode_(mode), tools_(std::move(tools)), max_calls_(max_calls), forced_name_(std::move(forced_name)) {
  if (mode_ == Mode::llama3_json) state_ = State::opening;
}

ToolCallParser::~ToolCallParser() {
  wipe(held_);
  wipe(whitespace_);
  wipe(object_.raw);
  wipe(object_.held_arguments);
  for (auto& segment : out_) wipe(segment.content);
}

// ---- output ----

void ToolCallParser::add_content(std::string_view text) {
  if (text.empty()) return;
  // Whitespace is held until something visible follows: a call right after it drops it, so an
  // answer that only calls has no content.
  size_t visible_end = text.size();
  while (visible_end > 0 && is_space(text[visible_end - 1])) --visible_end;
  if (visible_end > 0) {
    if (out_.empty() || out_.back().call) out_.emplace_back();
    out_.back().content += whitespace_;
    out_.back().content.append(text.substr(0, visible_end));
    wipe(whitespace_);
  }
  whitespace_.append(text.substr(visible_end));
  if (calls_ > 0 && whitespace_.size() > kMaxSwallowBytes) {
    // Not a little whitespace around calls any more: content, which the coordinator counts.
    if (out_.empty() || out_.back().call) out_.emplace_back();
    out_.back().content += whitespace_;
    wipe(whitespace_);
  }
}

void ToolCallParser::add_piece(std::string name, std::string_view arguments) {
  if (name.empty() && arguments.empty()) return;
  wipe(whitespace_);
  const int index = calls_ - 1;
  if (name.empty() && !out_.empty() && out_.back().call && out_.back().call->index == index) {
    out_.back().call->arguments.append(arguments);
    return;
  }
  out_.push_back({{}, ToolCallPiece{index, std::move(name), std::string(arguments)}});
}

void ToolCallParser::flush_whitespace_if_no_call() {
  if (calls_ == 0 && !whitespace_.empty()) {
    if (out_.empty() || out_.back().call) out_.emplace_back();
    out_.back().content += whitespace_;
  }
  wipe(whitespace_);
}

// ---- one call object ----

void ToolCallParser::begin_object() {
  wipe(object_.raw);
  wipe(object_.held_arguments);
  wipe(object_.tail);
  wipe(object_.key);
  wipe(object_.name);
  object_ = CallObject{};
}

void ToolCallParser::try_start_call() {
  CallObject& o = object_;
  if (o.started || o.rejected || !o.name_done) return;
  const bool offered = std::find(tools_.begin(), tools_.end(), o.name) != tools_.end();
  // A forced call's text is what its grammar allowed: whatever its arguments are, they stream.
  const bool forced = mode_ == Mode::forced_list;
  if (!offered || static_cast<size_t>(calls_) >= max_calls_ ||
      (!forced && o.arguments_kind != 0 && o.arguments_kind != '{' && o.arguments_kind != '"')) {
    o.rejected = true;
    return;
  }
  if (o.arguments_kind == 0 || (!forced && o.arguments_kind != '{')) {
    return;  // no arguments yet, or arguments as a string: decided at the end
  }
  o.started = true;
  calls_ += 1;
  add_piece(o.name, o.held_arguments);
  wipe(o.held_arguments);
}

void ToolCallParser::add_argument(char c) {
  if (object_.started) {
    add_piece({}, std::string_view(&c, 1));
  } else {
    object_.held_arguments.push_back(c);  // until the name is known
  }
}

void ToolCallParser::object_string_char(char c) {
  CallObject& o = object_;
  if (o.in_arguments) add_argument(c);
  if (o.escaped) {
    o.escaped = false;
  } else if (c == '\\') {
    o.escaped = true;
    return;
  } else if (c == '"') {
    o.in_string = false;
    if (o.reading_key) {
      o.reading_key = false;
      // A call has a name and arguments (and perhaps a type); other members make it something else.
      if (o.depth == 1 && mode_ != Mode::forced_list && o.key != "name" && o.key != "type" &&
          !is_arguments_key(o.key)) {
        o.rejected = true;
      }
    }
    if (o.reading_name) {
      o.reading_name = false;
      o.name_done = true;
      try_start_call();
    }
    if (o.in_arguments && o.depth == 1) {  // arguments given as a string of JSON
      o.in_arguments = false;
      o.arguments_done = true;
    }
    return;
  }
  if (o.reading_key) o.key.push_back(c);
  if (o.reading_name) o.name.push_back(c);
  if (o.key.size() > kMaxNameBytes || o.name.size() > kMaxNameBytes) o.rejected = true;
}

void ToolCallParser::object_structure_char(char c) {
  CallObject& o = object_;
  auto arguments_begin = [&] {
    return o.depth == 1 && o.expecting_value && !o.in_arguments && !o.arguments_done && is_arguments_key(o.key);
  };
  if (is_space(c)) {
    if (o.in_arguments) add_argument(c);
    return;
  }
  if (arguments_begin()) {
    o.in_arguments = true;
    o.arguments_kind = c;
    o.expecting_value = false;
    try_start_call();
  }
  switch (c) {
    case '"':
      o.in_string = true;
      if (o.in_arguments) {
        add_argument(c);
      } else if (o.depth == 1 && !o.expecting_value) {
        o.reading_key = true;
        o.key.clear();
      } else if (o.depth == 1 && o.key == "name") {
        o.reading_name = true;
        o.name.clear();
      }
      break;
    case '{':
    case '[':
      if (o.in_arguments) add_argument(c);
      o.depth += 1;
      break;
    case '}':
    case ']':
      if (o.in_arguments) add_argument(c);
      o.depth -= 1;
      if (o.in_arguments && o.depth == 1) {
        o.in_arguments = false;
        o.arguments_done = true;
      }
      if (o.depth <= 0) o.done = true;
      break;
    case ':':
      if (o.in_arguments) {
        add_argument(c);
      } else if (o.depth == 1) {
        o.expecting_value = true;
      }
      break;
    case ',':
      if (o.in_arguments && o.depth > 1) {
        add_argument(c);
      } else if (o.depth == 1) {
        if (o.in_arguments) {
          o.in_arguments = false;
          o.arguments_done = true;
        }
        o.expecting_value = false;
      }
      break;
    default:
      if (o.in_arguments) add_argument(c);
      break;
  }
  if (o.depth == 1 && o.expecting_value && c != ':' && !o.in_string && !o.in_arguments) o.expecting_value = false;
}

void ToolCallParser::object_char(char c) {
  if (!object_.started) object_.raw.push_back(c);
  if (object_.started && object_.arguments_done) object_.tail.push_back(c);
  if (object_.in_string) {
    object_string_char(c);
  } else {
    object_structure_char(c);
  }
}

bool ToolCallParser::end_object(bool closed) {
  CallObject& o = object_;
  if (!o.started && !o.rejected && o.name_done && closed) {
    // A call whose arguments were absent or a string: decided now that it is whole.
    std::string arguments = "{}";
    bool ok = o.arguments_kind == 0;
    if (o.arguments_kind == '"' && o.arguments_done) {
      auto literal = json::parse(o.held_arguments, "tool call arguments");
      if (literal && literal->is_string()) {
        auto inner = json::parse(literal->as_string(), "tool call arguments");
        ok = inner && inner->is_object();
        if (ok) arguments = std::string(literal->as_string());
      }
    }
    if (ok) {
      o.arguments_kind = '{';
      wipe(o.held_arguments);
      try_start_call();
      if (o.started) add_piece({}, arguments);
      wipe(arguments);
    }
  }
  const bool call = o.started;
  if (!call && mode_ != Mode::forced_list) add_content(o.raw);
  begin_object();
  return call;
}

void ToolCallParser::settle_object(State next) {
  CallObject& o = object_;
  if (!o.started && o.rejected && mode_ != Mode::forced_list) {
    add_content(o.raw);  // known now not to be a call: no need to hold it to its end
    begin_object();
    state_ = next;
    return;
  }
  if (o.started && o.tail.size() > kMaxSwallowBytes) {
    // The call is over; what its object goes on with is content.
    std::string tail = std::move(o.tail);
    begin_object();
    state_ = next;
    add_content(tail);
    wipe(tail);
    return;
  }
  give_up_if_too_long(next);
}

void ToolCallParser::reread_as_content(State next) {
  std::string text = std::move(held_);
  held_.clear();
  state_ = next;
  for (char ch : text) step(ch);
  wipe(text);
}

void ToolCallParser::give_up_if_too_long(State next) {
  if (object_.started || object_.raw.size() <= kMaxHeldBytes) return;
  // Too long to still be the start of a call: what was held is content, and so is what follows.
  add_content(object_.raw);
  begin_object();
  state_ = next;
}

// ---- the syntaxes ----

void ToolCallParser::step_hermes(char c) {
  switch (state_) {
    case State::content: {
      held_.push_back(c);
      if (held_ == kOpen) {
        wipe(held_);
        state_ = State::block_start;
        return;
      }
      const size_t keep = std::string_view(kOpen).starts_with(held_) ? held_.size() : partial_suffix(held_, kOpen);
      add_content(std::string_view(held_).substr(0, held_.size() - keep));
      held_.erase(0, held_.size() - keep);
      return;
    }
    case State::block_start:
      held_.push_back(c);
      if (is_space(c) && held_.size() <= kMaxSwallowBytes) return;
      if (c != '{') {  // not a call after all
        std::string text = std::string(kOpen) + held_;
        wipe(held_);
        state_ = State::content;
        add_content(text);
        wipe(text);
        return;
      }
      begin_object();
      object_.raw = std::string(kOpen) + held_.substr(0, held_.size() - 1);
      wipe(held_);
      state_ = State::in_object;
      object_char(c);
      return;
    case State::in_object:
      if (c == '<' && !object_.in_string) {
        // JSON has no '<' outside strings: a tag inside the object means it was malformed. A call
        // keeps the arguments it has; the tag is read on.
        state_ = end_object(false) ? State::after_object : State::content;
        step_hermes(c);
        return;
      }
      object_char(c);
      if (object_.done) {
        // After a call its closing tag is swallowed; what was no call is content, tag and all.
        state_ = end_object(true) ? State::after_object : State::content;
      } else {
        settle_object(State::content);
      }
      return;
    case State::after_object: {
      // A little whitespace and the closing tag after a call are swallowed; anything else is content.
      held_.push_back(c);
      const size_t visible = held_.find_first_not_of(" \t\r\n");
      const std::string_view rest =
          visible == std::string::npos ? std::string_view() : std::string_view(held_).substr(visible);
      if (rest == kClose) {
        wipe(held_);
        state_ = State::content;
      } else if (!std::string_view(kClose).starts_with(rest) || held_.size() > kMaxSwallowBytes + kClose.size()) {
        reread_as_content(State::content);
      }
      return;
    }
    default:
      return;
  }
}

void ToolCallParser::step_llama(char c) {
  switch (state_) {
    case State::opening: {
      held_.push_back(c);
      std::string_view rest = held_;
      while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
      if (rest.starts_with(kPythonTag)) rest.remove_prefix(kPythonTag.size());
      while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
      const bool undecided = rest.empty() || (rest.size() < kPythonTag.size() && kPythonTag.starts_with(rest));
      if (undecided && held_.size() <= kMaxOpeningBytes) return;
      if (undecided || rest.front() != '{') {
        state_ = State::rest_is_content;
        add_content(held_);
        wipe(held_);
        return;
      }
      begin_object();
      object_.raw = held_.substr(0, held_.size() - 1);
      wipe(held_);
      state_ = State::in_object;
      object_char(c);
      return;
    }
    case State::in_object:
      object_char(c);
      if (object_.done) {
        state_ = end_object(true) ? State::between_calls : State::rest_is_content;
      } else {
        settle_object(State::rest_is_content);
      }
      return;
    case State::between_calls:
      // Calls are joined by ';'. Anything but another call after them is content.
      held_.push_back(c);
      if ((is_space(c) || c == ';') && held_.size() <= kMaxSwallowBytes) return;
      if (c == '{') {
        begin_object();
        object_.raw = held_.substr(0, held_.size() - 1);  // the separator is content if no call follows
        wipe(held_);
        state_ = State::in_object;
        object_char(c);
        return;
      }
      state_ = State::rest_is_content;
      add_content(held_);
      wipe(held_);
      return;
    case State::rest_is_content:
      add_content(std::string_view(&c, 1));
      return;
    default:
      return;
  }
}

void ToolCallParser::step_forced_list(char c) {
  // [ {call} , {call} ]: each element is read as a call object.
  if (state_ == State::in_object) {
    object_char(c);
    if (object_.done) {
      end_object(true);
      state_ = State::content;
    }
    return;
  }
  if (list_in_string_) {
    if (list_escaped_) {
      list_escaped_ = false;
    } else if (c == '\\') {
      list_escaped_ = true;
    } else if (c == '"') {
      list_in_string_ = false;
    }
    return;
  }
  if (c == '{' && list_depth_ == 1) {
    begin_object();
    state_ = State::in_object;
    object_char(c);
  } else if (c == '[' || c == '{') {
    list_depth_ += 1;
  } else if (c == ']' || c == '}') {
    list_depth_ -= 1;
  } else if (c == '"') {
    list_in_string_ = true;
  }
}

void ToolCallParser::step(char c) {
  switch (mode_) {
    case Mode::hermes:
      step_hermes(c);
      break;
    case Mode::llama3_json:
      step_llama(c);
      break;
    case Mode::forced_list:
      step_forced_list(c);
      break;
    case Mode::forced_named:
      break;
  }
}

std::vector<ToolCallSegment> ToolCallParser::feed(std::string_view text) {
  if (mode_ == Mode::forced_named) {
    if (!text.empty()) {
      if (calls_ == 0) {
        calls_ = 1;
        add_piece(forced_name_, text);
      } else {
        add_piece({}, text);
      }
    }
  } else {
    for (char c : text) step(c);
  }
  return std::exchange(out_, {});
}

std::vector<ToolCallSegment> ToolCallParser::finish() {
  switch (state_) {
    case State::content:
      add_content(held_);  // a partial "<tool_call>" is text
      break;
    case State::block_start:
      add_content(std::string(kOpen) + held_);
      break;
    case State::in_object:
      end_object(false);  // cut short: a started call keeps the arguments it has
      break;
    case State::opening:
      add_content(held_);
      break;
    case State::after_object:
    case State::between_calls:
      if (!only_space(held_) && mode_ == Mode::hermes &&
          !std::string_view(kClose).starts_with(held_.substr(held_.find_first_not_of(" \t\r\n"))))
        add_content(held_);
      break;
    case State::rest_is_content:
      break;
  }
  wipe(held_);
  state_ = State::rest_is_content;
  flush_whitespace_if_no_call();  // whitespace is content only in an answer without calls
  return std::exchange(out_, {});
}

}  // namespace darkbloom::engine
