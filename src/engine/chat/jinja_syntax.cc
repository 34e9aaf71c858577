#include "engine/chat/jinja_syntax.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "base/utf8.h"

namespace darkbloom::engine::jinja {
namespace {

// The source after transformers' whitespace settings, with the original line of every byte.
struct Source {
  std::string text;
  std::vector<int> line;
};

bool starts_with_at(std::string_view text, size_t pos, std::string_view prefix) {
  return text.size() >= pos + prefix.size() && text.compare(pos, prefix.size(), prefix) == 0;
}

// A final newline is dropped; lstrip_blocks removes spaces and tabs between a line's start and a
// block or comment tag; trim_blocks removes the newline right after one. As @huggingface/jinja
// does it (whose patterns also take "{-" and "-}" for tags), so both render alike.
Source preprocess(std::string_view raw) {
  if (!raw.empty() && raw.back() == '\n') raw.remove_suffix(1);
  Source out;
  out.text.reserve(raw.size());
  out.line.reserve(raw.size());
  int line = 1;
  bool line_start = true;
  for (size_t pos = 0; pos < raw.size();) {
    if (line_start) {
      size_t end = pos;
      while (end < raw.size() && (raw[end] == ' ' || raw[end] == '\t')) ++end;
      if (starts_with_at(raw, end, "{%") || starts_with_at(raw, end, "{#") || starts_with_at(raw, end, "{-")) pos = end;
      line_start = false;
      continue;
    }
    const char c = raw[pos];
    out.text.push_back(c);
    out.line.push_back(line);
    ++pos;
    if ((c == '%' || c == '#' || c == '-') && pos < raw.size() && raw[pos] == '}' && pos + 1 < raw.size() &&
        raw[pos + 1] == '\n') {
      out.text.push_back('}');
      out.line.push_back(line);
      pos += 2;
      ++line;
      line_start = true;
      continue;
    }
    if (c == '\n' || c == '\r') {
      if (c == '\n') ++line;
      line_start = true;
    }
  }
  return out;
}

enum class TokenKind {
  text,
  open_statement,
  close_statement,
  open_expression,
  close_expression,
  name,
  string,
  number,
  symbol
};

struct Token {
  TokenKind kind;
  std::string value;
  int line;
};

// Whitespace as JavaScript's \s sees it, one code point at `pos` (0 when none).
size_t whitespace_length(std::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  const auto byte = static_cast<unsigned char>(text[pos]);
  if (byte == ' ' || (byte >= 9 && byte <= 13)) return 1;
  if (byte < 0x80) return 0;
  size_t next = pos;
  const char32_t c = utf8::decode(text, &next);
  const bool space = c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
                     c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff;
  return space ? next - pos : 0;
}

size_t trailing_whitespace_start(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xc0) == 0x80) --start;
    if (whitespace_length(text, start) != end - start) break;
    end = start;
  }
  return end;
}

class Lexer {
 public:
  explicit Lexer(const Source& source) : src_(source.text), lines_(source.line) {}

  Result<std::vector<Token>> run() {
    while (pos_ < src_.size()) {
      if (outside_tags()) {
        scan_text();
        if (pos_ >= src_.size()) break;
      }
      DARKBLOOM_RETURN_IF_ERROR(scan_token());
    }
    return std::move(tokens_);
  }

 private:
  int line() const { return lines_.empty() ? 1 : lines_[std::min(pos_, lines_.size() - 1)]; }
  Error error(std::string_view message) const {
    return make_error(Errc::bad_format, fmt::format("line {}: {}", line(), message));
  }

  bool outside_tags() const {
    if (tokens_.empty() || after_comment_) return true;
    const TokenKind last = tokens_.back().kind;
    return last == TokenKind::close_statement || last == TokenKind::close_expression || last == TokenKind::text;
  }

  void push(TokenKind kind, std::string value) {
    tokens_.push_back({kind, std::move(value), line()});
    after_comment_ = false;
  }

  void strip_previous_text() {
    if (tokens_.empty() || tokens_.back().kind != TokenKind::text || after_comment_) return;
    std::string& text = tokens_.back().value;
    text.resize(trailing_whitespace_start(text));
    if (text.empty()) tokens_.pop_back();
  }

  void skip_whitespace() {
    while (const size_t n = whitespace_length(src_, pos_)) pos_ += n;
  }

  void scan_text() {
    size_t end = pos_;
    while (true) {
      end = src_.find('{', end);
      if (end == std::string::npos) {
        end = src_.size();
        break;
      }
      if (end + 1 < src_.size() && (src_[end + 1] == '%' || src_[end + 1] == '{' || src_[end + 1] == '#')) break;
      ++end;
    }
    if (end > pos_) {
      push(TokenKind::text, src_.substr(pos_, end - pos_));
      pos_ = end;
    }
  }

  Status scan_comment() {
    pos_ += 2;
    const bool strip_before = pos_ < src_.size() && src_[pos_] == '-';
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) return error("a comment is not closed with #}");
    const bool strip_after = end > pos_ && src_[end - 1] == '-';
    if (strip_before) strip_previous_text();
    pos_ = end + 2;
    after_comment_ = true;
    if (strip_after) skip_whitespace();
    return {};
  }

  Status scan_token() {
    if (starts_with_at(src_, pos_, "{#")) return scan_comment();
    if (starts_with_at(src_, pos_, "{%") || starts_with_at(src_, pos_, "{{")) {
      const bool statement = src_[pos_ + 1] == '%';
      if (pos_ + 2 < src_.size() && src_[pos_ + 2] == '-') strip_previous_text();
      push(statement ? TokenKind::open_statement : TokenKind::open_expression, statement ? "{%" : "{{");
      pos_ += 2;
      if (pos_ < src_.size() && src_[pos_] == '-') ++pos_;
      curly_depth_ = 0;
      return {};
    }
    skip_whitespace();
    if (pos_ >= src_.size()) return error("the template ends inside a tag");
    if (src_[pos_] == '-' && pos_ + 2 < src_.size() && src_[pos_ + 2] == '}' &&
        (src_[pos_ + 1] == '%' || src_[pos_ + 1] == '}')) {
      push(src_[pos_ + 1] == '%' ? TokenKind::close_statement : TokenKind::close_expression,
           src_[pos_ + 1] == '%' ? "%}" : "}}");
      pos_ += 3;
      skip_whitespace();
      return {};
    }
    if (starts_with_at(src_, pos_, "%}")) {
      push(TokenKind::close_statement, "%}");
      pos_ += 2;
      return {};
    }
    if (curly_depth_ == 0 && starts_with_at(src_, pos_, "}}")) {
      push(TokenKind::close_expression, "}}");
      pos_ += 2;
      return {};
    }
    const char c = src_[pos_];
    if (c == '\'' || c == '"') return scan_string(c);
    if (c >= '0' && c <= '9') return scan_number();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const size_t start = pos_;
      while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
      push(TokenKind::name, src_.substr(start, pos_ - start));
      return {};
    }
    static constexpr std::string_view kSymbols[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[",
                                                    "]",  "{",  "}",  ",",  ".",  ":",  "|", "<", ">",
                                                    "+",  "-",  "~",  "*",  "/",  "%",  "="};
    for (std::string_view symbol : kSymbols) {
      if (!starts_with_at(src_, pos_, symbol)) continue;
      if (symbol == "{") ++curly_depth_;
      if (symbol == "}") --curly_depth_;
      push(TokenKind::symbol, std::string(symbol));
      pos_ += symbol.size();
      return {};
    }
    return error(fmt::format("unexpected character '{}'", c));
  }

  Status scan_number() {
    const size_t start = pos_;
    while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
    const bool after_dot = !tokens_.empty() && tokens_.back().kind == TokenKind::symbol && tokens_.back().value == ".";
    if (!after_dot && pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      ++pos_;
      while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
    }
    push(TokenKind::number, src_.substr(start, pos_ - start));
    return {};
  }

  Status scan_string(char quote) {
    ++pos_;
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) return error("a string is not closed");
      const char c = src_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value.push_back(c);
        continue;
      }
      if (pos_ >= src_.size()) return error("a string is not closed");
      const char escaped = src_[pos_++];
      switch (escaped) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case '\'':
        case '"':
        case '\\':
          value.push_back(escaped);
          break;
        case 'x':
        case 'u': {
          const size_t digits = escaped == 'x' ? 2 : 4;
          uint32_t code = 0;
          const char* begin = src_.data() + pos_;
          const auto [end, ec] = std::from_chars(begin, begin + std::min(digits, src_.size() - pos_), code, 16);
          if (ec != std::errc() || static_cast<size_t>(end - begin) != digits) {
            return error(fmt::format("invalid escape \\{} in a string", escaped));
          }
          pos_ += digits;
          utf8::append(&value, static_cast<char32_t>(code));
          break;
        }
        default:
          return error(fmt::format("unknown escape \\{} in a string", escaped));
      }
    }
    push(TokenKind::string, std::move(value));
    return {};
  }

  const std::string& src_;
  const std::vector<int>& lines_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
  bool after_comment_ = false;
  std::vector<Token> tokens_;
};

// Recursive descent over the tokens. Errors are thrown as ParseError inside and returned as a
// Result at the edge: a failure deep in an expression has nothing to clean up on the way out.
struct ParseError {
  Error error;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Program run() {
    Program program;
    program.body = block({});
    if (pos_ < tokens_.size()) fail(fmt::format("unexpected '{}'", tokens_[pos_].value));
    std::sort(names_.begin(), names_.end());
    names_.erase(std::unique(names_.begin(), names_.end()), names_.end());
    program.names_read = std::move(names_);
    return program;
  }

 private:
  [[noreturn]] void fail(std::string_view message, Errc code = Errc::bad_format) const {
    const int line = pos_ < tokens_.size() ? tokens_[pos_].line : (tokens_.empty() ? 1 : tokens_.back().line);
    throw ParseError{make_error(code, fmt::format("line {}: {}", line, message))};
  }

  const Token* peek(size_t ahead = 0) const { return pos_ + ahead < tokens_.size() ? &tokens_[pos_ + ahead] : nullptr; }
  bool at(TokenKind kind, std::string_view value = {}, size_t ahead = 0) const {
    const Token* token = peek(ahead);
    return token != nullptr && token->kind == kind && (value.empty() || token->value == value);
  }
  bool at_symbol(std::string_view value) const { return at(TokenKind::symbol, value); }
  bool at_keyword() const {
    for (std::string_view keyword : {"and", "or", "not", "in", "is", "if", "else"}) {
      if (at_name(keyword)) return true;
    }
    return false;
  }
  bool at_name(std::string_view value) const { return at(TokenKind::name, value); }
  int line() const { return pos_ < tokens_.size() ? tokens_[pos_].line : 0; }

  void expect(TokenKind kind, std::string_view value, std::string_view what) {
    if (!at(kind, value)) fail(fmt::format("expected {}", what));
    ++pos_;
  }
  bool accept_symbol(std::string_view value) {
    if (!at_symbol(value)) return false;
    ++pos_;
    return true;
  }
  bool accept_name(std::string_view value) {
    if (!at_name(value)) return false;
    ++pos_;
    return true;
  }
  std::string expect_name(std::string_view what) {
    if (!at(TokenKind::name)) fail(fmt::format("expected {}", what));
    return tokens_[pos_++].value;
  }

  // Whether the next tag is {% <one of names> %}.
  bool at_tag(const std::vector<std::string_view>& names) const {
    if (!at(TokenKind::open_statement)) return false;
    const Token* name = peek(1);
    return name != nullptr && name->kind == TokenKind::name &&
           std::find(names.begin(), names.end(), name->value) != names.end();
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* parser) : parser_(parser) {
      if (++parser_->depth_ > kMaxNesting) parser_->fail("the template nests too deeply", Errc::out_of_range);
    }
    ~DepthGuard() { --parser_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;
    Parser* parser_;
  };

  // Loops that build left-deep trees (a + b + c, a.b.c, x | f | g) count each link as a level:
  // evaluating and freeing the tree recurses once per level.
  struct ChainGuard {
    explicit ChainGuard(Parser* parser) : parser_(parser) {}
    ~ChainGuard() { parser_->depth_ -= links_; }
    ChainGuard(const ChainGuard&) = delete;
    ChainGuard& operator=(const ChainGuard&) = delete;
    void link() {
      ++links_;
      if (++parser_->depth_ > kMaxNesting) parser_->fail("the template nests too deeply", Errc::out_of_range);
    }
    Parser* parser_;
    int links_ = 0;
  };

  // Nodes until one of the `until` tags (not consumed) or the end.
  Block block(const std::vector<std::string_view>& until) {
    DepthGuard guard(this);
    Block out;
    while (pos_ < tokens_.size()) {
      const Token& token = tokens_[pos_];
      if (token.kind == TokenKind::text) {
        out.push_back(Node{Node::Kind::text, token.line, Text::literal(token.value)});
        ++pos_;
      } else if (token.kind == TokenKind::open_expression) {
        ++pos_;
        Node node{Node::Kind::output, token.line};
        node.expr = expression();
        expect(TokenKind::close_expression, "}}", "}} to close the expression");
        out.push_back(std::move(node));
      } else if (token.kind == TokenKind::open_statement) {
        if (at_tag(until)) return out;
        ++pos_;
        if (auto node = statement()) out.push_back(std::move(*node));
      } else {
        fail(fmt::format("unexpected '{}'", token.value));
      }
    }
    if (!until.empty()) fail(fmt::format("the template ends without {{% {} %}}", until.back()));
    return out;
  }

  void close_tag() { expect(TokenKind::close_statement, "%}", "%} to close the tag"); }
  void end_tag(std::string_view name) {
    expect(TokenKind::open_statement, "", "{%");
    expect(TokenKind::name, name, fmt::format("{{% {} %}}", name));
    close_tag();
  }

  std::optional<Node> statement() {
    const int at_line = line();
    const std::string keyword = expect_name("a tag name after {%");
    if (keyword == "if") return if_statement(at_line);
    if (keyword == "for") return for_statement(at_line);
    if (keyword == "set") return set_statement(at_line);
    if (keyword == "macro") return macro_statement(at_line);
    if (keyword == "filter") return filter_statement(at_line);
    if (keyword == "break" || keyword == "continue") {
      close_tag();
      return Node{keyword == "break" ? Node::Kind::break_ : Node::Kind::continue_, at_line};
    }
    if (keyword == "generation" || keyword == "endgeneration") {
      // transformers' marker of the assistant's tokens; it renders as nothing.
      close_tag();
      return std::nullopt;
    }
    --pos_;
    fail(fmt::format("the tag '{}' is not supported in chat templates", keyword), Errc::unsupported);
  }

  Node if_statement(int at_line) {
    DepthGuard guard(this);  // an elif is an if nested in the else branch
    Node node{Node::Kind::if_, at_line};
    node.expr = expression();
    close_tag();
    node.body = block({"elif", "else", "endif"});
    if (at_tag({"elif"})) {
      pos_ += 2;
      node.other.push_back(if_statement(line()));
      return node;  // the nested if consumed the endif
    }
    if (at_tag({"else"})) {
      pos_ += 2;
      close_tag();
      node.other = block({"endif"});
    }
    end_tag("endif");
    return node;
  }

  Node for_statement(int at_line) {
    Node node{Node::Kind::for_, at_line};
    do {
      node.names.push_back(expect_name("a loop variable"));
    } while (accept_symbol(","));
    expect(TokenKind::name, "in", "'in' after the loop variables");
    node.expr = ternary_free_expression();
    if (accept_name("if")) node.condition = expression();
    if (accept_name("recursive")) fail("recursive loops are not supported", Errc::unsupported);
    close_tag();
    node.body = block({"else", "endfor"});
    if (at_tag({"else"})) {
      pos_ += 2;
      close_tag();
      node.other = block({"endfor"});
    }
    end_tag("endfor");
    return node;
  }

  Node set_statement(int at_line) {
    Node node{Node::Kind::set, at_line};
    const std::string first = expect_name("a variable name after set");
    if (accept_symbol(".")) {
      auto target = std::make_unique<Expr>(Expr{Expr::Kind::attribute, at_line});
      target->object = std::make_unique<Expr>(Expr{Expr::Kind::name, at_line});
      target->object->name = first;
      target->name = expect_name("an attribute name");
      node.target = std::move(target);
    } else {
      node.names.push_back(first);
      while (accept_symbol(",")) node.names.push_back(expect_name("a variable name"));
    }
    if (accept_symbol("=")) {
      node.expr = expression();
      close_tag();
      return node;
    }
    if (node.target != nullptr || node.names.size() != 1) fail("expected '=' in set");
    close_tag();
    node.kind = Node::Kind::set_block;
    node.body = block({"endset"});
    end_tag("endset");
    return node;
  }

  Node macro_statement(int at_line) {
    Node node{Node::Kind::macro, at_line};
    node.names.push_back(expect_name("a macro name"));
    expect(TokenKind::symbol, "(", "( after the macro name");
    while (!accept_symbol(")")) {
      Parameter parameter{expect_name("a parameter name")};
      if (accept_symbol("=")) parameter.default_value = expression();
      node.parameters.push_back(std::move(parameter));
      if (!at_symbol(")")) expect(TokenKind::symbol, ",", ", or ) in the parameters");
    }
    close_tag();
    node.body = block({"endmacro"});
    end_tag("endmacro");
    return node;
  }

  Node filter_statement(int at_line) {
    Node node{Node::Kind::filter, at_line};
    node.expr = filter_chain(nullptr);
    close_tag();
    node.body = block({"endfilter"});
    end_tag("endfilter");
    return node;
  }

  ExprPtr make(Expr::Kind kind, int at_line) { return std::make_unique<Expr>(Expr{kind, at_line}); }

  int64_t integer_literal(const std::string& text) const {
    int64_t number = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (ec != std::errc()) fail("an integer out of range");
    return number;
  }

  // expression := or ["if" or ["else" expression]]
  ExprPtr expression() {
    DepthGuard guard(this);
    ExprPtr value = or_expression();
    if (!at_name("if")) return value;
    const int at_line = line();
    ++pos_;
    auto node = make(Expr::Kind::ternary, at_line);
    node->object = std::move(value);
    node->condition = or_expression();
    if (accept_name("else")) node->other = expression();
    return node;
  }

  // A for loop's iterable: its "if" starts the loop's filter, not an inline if.
  ExprPtr ternary_free_expression() {
    DepthGuard guard(this);
    return or_expression();
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int at_line) {
    auto node = make(Expr::Kind::binary, at_line);
    node->name = std::move(op);
    node->object = std::move(left);
    node->other = std::move(right);
    return node;
  }

  ExprPtr or_expression() {
    ChainGuard chain(this);
    ExprPtr left = and_expression();
    while (at_name("or")) {
      chain.link();
      const int at_line = line();
      ++pos_;
      left = binary("or", std::move(left), and_expression(), at_line);
    }
    return left;
  }

  ExprPtr and_expression() {
    ChainGuard chain(this);
    ExprPtr left = not_expression();
    while (at_name("and")) {
      chain.link();
      const int at_line = line();
      ++pos_;
      left = binary("and", std::move(left), not_expression(), at_line);
    }
    return left;
  }

  ExprPtr not_expression() {
    if (!at_name("not")) return comparison();
    DepthGuard guard(this);
    auto node = make(Expr::Kind::unary, line());
    ++pos_;
    node->name = "not";
    node->object = not_expression();
    return node;
  }

  ExprPtr comparison() {
    ChainGuard chain(this);
    ExprPtr left = additive();
    while (true) {
      const int at_line = line();
      std::string op;
      if (at(TokenKind::symbol) && (at_symbol("==") || at_symbol("!=") || at_symbol("<") || at_symbol(">") ||
                                    at_symbol("<=") || at_symbol(">="))) {
        op = tokens_[pos_++].value;
      } else if (at_name("in")) {
        ++pos_;
        op = "in";
      } else if (at_name("not") && at(TokenKind::name, "in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return left;
      }
      chain.link();
      left = binary(op, std::move(left), additive(), at_line);
    }
  }

  ExprPtr additive() {
    ChainGuard chain(this);
    ExprPtr left = multiplicative();
    while (at_symbol("+") || at_symbol("-") || at_symbol("~")) {
      chain.link();
      const int at_line = line();
      std::string op = tokens_[pos_++].value;
      left = binary(op, std::move(left), multiplicative(), at_line);
    }
    return left;
  }

  ExprPtr multiplicative() {
    ChainGuard chain(this);
    ExprPtr left = power();
    while (at_symbol("*") || at_symbol("/") || at_symbol("//") || at_symbol("%")) {
      chain.link();
      const int at_line = line();
      std::string op = tokens_[pos_++].value;
      left = binary(op, std::move(left), power(), at_line);
    }
    return left;
  }

  ExprPtr power() {
    ChainGuard chain(this);
    ExprPtr left = unary();
    while (at_symbol("**")) {
      chain.link();
      const int at_line = line();
      ++pos_;
      left = binary("**", std::move(left), unary(), at_line);
    }
    return left;
  }

  // Filters bind after a sign, as in Jinja: -x|abs is (-x)|abs.
  ExprPtr unary() { return filter_chain(signed_operand()); }

  ExprPtr signed_operand() {
    if (at_symbol("-") || at_symbol("+")) {
      DepthGuard guard(this);
      auto node = make(Expr::Kind::unary, line());
      node->name = tokens_[pos_++].value;
      node->object = signed_operand();
      return node;
    }
    return postfix(primary());
  }

  std::vector<Argument> call_arguments() {
    std::vector<Argument> out;
    while (!accept_symbol(")")) {
      Argument argument;
      if (at(TokenKind::name) && at(TokenKind::symbol, "=", 1)) {
        argument.keyword = tokens_[pos_].value;
        pos_ += 2;
      }
      argument.value = expression();
      out.push_back(std::move(argument));
      if (!at_symbol(")")) expect(TokenKind::symbol, ",", ", or ) in the arguments");
    }
    return out;
  }

  ExprPtr postfix(ExprPtr value) {
    ChainGuard chain(this);
    while (true) {
      const int at_line = line();
      if (at_symbol(".") || at_symbol("[") || at_symbol("(")) chain.link();
      if (accept_symbol(".")) {
        auto node = make(Expr::Kind::attribute, at_line);
        node->object = std::move(value);
        if (at(TokenKind::number)) {
          auto index = make(Expr::Kind::literal, at_line);
          index->value = Value::integer(integer_literal(tokens_[pos_++].value));
          node->kind = Expr::Kind::index;
          node->items.push_back(std::move(index));
        } else {
          node->name = expect_name("an attribute name after '.'");
        }
        value = std::move(node);
      } else if (accept_symbol("[")) {
        value = subscript(std::move(value), at_line);
      } else if (accept_symbol("(")) {
        auto node = make(Expr::Kind::call, at_line);
        node->object = std::move(value);
        node->arguments = call_arguments();
        value = std::move(node);
      } else {
        return value;
      }
    }
  }

  ExprPtr subscript(ExprPtr object, int at_line) {
    DepthGuard guard(this);
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!accept_symbol("]")) {
      if (accept_symbol(":")) {
        is_slice = true;
        if (++part > 2) fail("a slice has at most three parts");
        continue;
      }
      if (parts[part] != nullptr) fail("expected ] or : in the subscript");
      parts[part] = expression();
    }
    auto node = make(is_slice ? Expr::Kind::slice : Expr::Kind::index, at_line);
    node->object = std::move(object);
    if (!is_slice && parts[0] == nullptr) fail("an empty subscript");
    for (int i = 0; i < (is_slice ? 3 : 1); ++i) node->items.push_back(std::move(parts[i]));
    return node;
  }

  // filters and tests: value | name(args) ..., value is [not] name(args)
  ExprPtr filter_chain(ExprPtr value) {
    ChainGuard chain(this);
    while (true) {
      const int at_line = line();
      if (value == nullptr || at_symbol("|") || at_name("is")) chain.link();
      if (value == nullptr || accept_symbol("|")) {
        auto node = make(Expr::Kind::filter, at_line);
        node->object = std::move(value);
        node->name = expect_name("a filter name");
        if (accept_symbol("(")) node->arguments = call_arguments();
        value = std::move(node);
        continue;
      }
      if (!accept_name("is")) return value;
      auto node = make(Expr::Kind::test, at_line);
      node->object = std::move(value);
      node->negate = accept_name("not");
      node->name = expect_name("a test name after 'is'");
      if (accept_symbol("(")) {
        node->arguments = call_arguments();
      } else if (at(TokenKind::number) || at(TokenKind::string) || (at(TokenKind::name) && !at_keyword())) {
        node->arguments.push_back(Argument{{}, primary()});  // one argument without parentheses
      }
      value = std::move(node);
    }
  }

  ExprPtr primary() {
    DepthGuard guard(this);
    const int at_line = line();
    const Token* token = peek();
    if (token == nullptr) fail("the template ends inside an expression");
    if (token->kind == TokenKind::string) {
      auto node = make(Expr::Kind::literal, at_line);
      std::string text;
      while (at(TokenKind::string)) text += tokens_[pos_++].value;  // adjacent literals join
      node->value = Value::literal(text);
      return node;
    }
    if (token->kind == TokenKind::number) {
      auto node = make(Expr::Kind::literal, at_line);
      const std::string& text = tokens_[pos_++].value;
      if (text.find('.') != std::string::npos) {
        double number = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc()) fail("a number out of range");
        node->value = Value::number(number);
      } else {
        node->value = Value::integer(integer_literal(text));
      }
      return node;
    }
    if (token->kind == TokenKind::name) return name(at_line);
    if (accept_symbol("(")) {
      if (accept_symbol(")")) return make(Expr::Kind::tuple, at_line);
      ExprPtr first = expression();
      if (accept_symbol(")")) return first;
      auto tuple = make(Expr::Kind::tuple, at_line);
      tuple->items.push_back(std::move(first));
      while (accept_symbol(",") && !at_symbol(")")) tuple->items.push_back(expression());
      expect(TokenKind::symbol, ")", ") to close the tuple");
      return tuple;
    }
    if (accept_symbol("[")) {
      auto list = make(Expr::Kind::list, at_line);
      while (!accept_symbol("]")) {
        list->items.push_back(expression());
        if (!at_symbol("]")) expect(TokenKind::symbol, ",", ", or ] in the list");
      }
      return list;
    }
    if (accept_symbol("{")) {
      auto dict = make(Expr::Kind::dict, at_line);
      while (!accept_symbol("}")) {
        dict->items.push_back(expression());
        expect(TokenKind::symbol, ":", ": after a key");
        dict->items.push_back(expression());
        if (!at_symbol("}")) expect(TokenKind::symbol, ",", ", or } in the mapping");
      }
      return dict;
    }
    fail(fmt::format("unexpected '{}' in an expression", token->value));
  }

  ExprPtr name(int at_line) {
    const std::string& word = tokens_[pos_++].value;
    auto node = make(Expr::Kind::literal, at_line);
    if (word == "true" || word == "True") {
      node->value = Value::boolean(true);
    } else if (word == "false" || word == "False") {
      node->value = Value::boolean(false);
    } else if (word == "none" || word == "None") {
      node->value = Value::none();
    } else {
      node->kind = Expr::Kind::name;
      node->name = word;
      names_.push_back(word);
    }
    return node;
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::vector<std::string> names_;
};

}  // namespace

Result<Program> parse_template(std::string_view source) {
  if (source.size() > kMaxTemplateBytes) {
    return make_error(Errc::out_of_range, fmt::format("the template has {} bytes, more than the {} allowed",
                                                      source.size(), kMaxTemplateBytes));
  }
  const Source prepared = preprocess(source);
  auto tokens = Lexer(prepared).run();
  if (!tokens) return tokens.error();
  try {
    return Parser(std::move(*tokens)).run();
  } catch (const ParseError& e) {
    return e.error;
  } catch (const std::exception& e) {  // bad_alloc: the limits should come first
    return make_error(Errc::resource_exhausted, std::string("the template could not be read: ") + e.what());
  }
}

}  // namespace darkbloom::engine::jinja
