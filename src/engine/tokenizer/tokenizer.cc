#include "engine/tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <queue>

#include "base/log.h"
#include "base/unicode.h"
#include "base/utf8.h"
#include "engine/tokenizer/byte_level.h"

namespace darkbloom::engine {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// Chat end markers that end generation even when the file names only one EOS.
constexpr std::string_view kEndMarkers[] = {"<|eot_id|>",    "<|im_end|>",      "<|end|>",   "<end_of_turn>",
                                            "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>"};

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (;;) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::optional<PretokenizerKind> pretokenizer_for(std::string_view pre) {
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2" || pre == "smollm" || pre.empty())
    return PretokenizerKind::gpt2;
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "smaug-bpe" || pre == "dbrx") {
    return PretokenizerKind::llama3;
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return PretokenizerKind::qwen2;
  return std::nullopt;
}

// Reads an optional token-id key; out-of-range ids are errors.
Result<std::optional<int32_t>> optional_token_id(const GgufFile& file, const char* key, size_t n_vocab) {
  const GgufValue* value = file.find(key);
  if (value == nullptr) return std::optional<int32_t>{};
  const auto id = value->as_int();
  if (!id) return make_error(Errc::bad_format, fmt::format("{}: metadata '{}' must be an integer", file.name(), key));
  // -1 (as some converters write) means "none".
  if (*id < 0) return std::optional<int32_t>{};
  if (static_cast<uint64_t>(*id) >= n_vocab) {
    return make_error(Errc::bad_format, fmt::format("{}: metadata '{}' = {} is outside the vocabulary of {}",
                                                    file.name(), key, *id, n_vocab));
  }
  return std::optional<int32_t>{static_cast<int32_t>(*id)};
}

Result<bool> optional_bool(const GgufFile& file, const char* key, bool fallback) {
  const GgufValue* value = file.find(key);
  if (value == nullptr) return fallback;
  const auto b = value->as_bool();
  if (!b) return make_error(Errc::bad_format, fmt::format("{}: metadata '{}' must be a bool", file.name(), key));
  return *b;
}

Result<Tokenizer::Kind> model_kind(const GgufFile& file) {
  const GgufValue* model_value = file.find("tokenizer.ggml.model");
  const std::string* model = model_value ? model_value->as_string() : nullptr;
  if (model == nullptr)
    return make_error(Errc::bad_format, file.name() + ": the file has no tokenizer (tokenizer.ggml.model is missing)");
  if (*model == "llama") return Tokenizer::Kind::spm;
  if (*model == "gpt2") return Tokenizer::Kind::bpe;
  return make_error(Errc::unsupported,
                    fmt::format("{}: tokenizer '{}' is not supported (supported: llama, gpt2)", file.name(), *model));
}

}  // namespace

Result<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  auto kind = model_kind(file);
  if (!kind) return kind.error();
  Tokenizer t;
  t.kind_ = *kind;
  DARKBLOOM_RETURN_IF_ERROR(t.read_vocabulary(file));
  DARKBLOOM_RETURN_IF_ERROR(t.read_special_tokens(file));
  t.index_special_texts();
  t.compute_pieces();
  t.index_byte_tokens();
  if (t.kind_ == Kind::spm) return t;
  t.choose_pretokenizer(file);
  DARKBLOOM_RETURN_IF_ERROR(t.read_merges(file));
  return t;
}

Status Tokenizer::read_vocabulary(const GgufFile& file) {
  const GgufValue* tokens_value = file.find("tokenizer.ggml.tokens");
  const GgufArray* tokens = tokens_value ? tokens_value->as_array() : nullptr;
  if (tokens == nullptr || tokens->element_type != GgufValueType::string || tokens->strings.empty()) {
    return make_error(Errc::bad_format, file.name() + ": tokenizer.ggml.tokens must be a non-empty array of strings");
  }
  tokens_ = tokens->strings;
  const size_t n = tokens_.size();

  scores_.assign(n, 0.0f);
  if (const GgufValue* v = file.find("tokenizer.ggml.scores")) {
    const GgufArray* scores = v->as_array();
    if (scores == nullptr || scores->size() != n || scores->element_type == GgufValueType::string ||
        scores->element_type == GgufValueType::array) {
      return make_error(Errc::bad_format, file.name() + ": tokenizer.ggml.scores must be numbers, one per token");
    }
    for (size_t i = 0; i < n; ++i) scores_[i] = static_cast<float>(*scores->number_at(i));
  }
  types_.assign(n, TokenType::normal);
  if (const GgufValue* v = file.find("tokenizer.ggml.token_type")) {
    const GgufArray* types = v->as_array();
    if (types == nullptr || types->size() != n) {
      return make_error(Errc::bad_format, file.name() + ": tokenizer.ggml.token_type must have one entry per token");
    }
    for (size_t i = 0; i < n; ++i) {
      const auto type = types->int_at(i);
      if (!type || *type < 0 || *type > 6) {
        return make_error(Errc::bad_format, fmt::format("{}: token {} has an invalid token type", file.name(), i));
      }
      types_[i] = static_cast<TokenType>(*type);
    }
  }

  ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) ids_.emplace(tokens_[i], static_cast<int32_t>(i));  // first id wins
  return {};
}

Status Tokenizer::read_special_tokens(const GgufFile& file) {
  const size_t n = tokens_.size();
  auto read_id = [&](const char* key, std::optional<int32_t>* out) -> Status {
    auto id = optional_token_id(file, key, n);
    if (!id) return id.error();
    *out = *id;
    return {};
  };
  std::optional<int32_t> eot, eom;
  DARKBLOOM_RETURN_IF_ERROR(read_id("tokenizer.ggml.bos_token_id", &bos_));
  DARKBLOOM_RETURN_IF_ERROR(read_id("tokenizer.ggml.eos_token_id", &eos_));
  DARKBLOOM_RETURN_IF_ERROR(read_id("tokenizer.ggml.unknown_token_id", &unknown_));
  DARKBLOOM_RETURN_IF_ERROR(read_id("tokenizer.ggml.eot_token_id", &eot));
  DARKBLOOM_RETURN_IF_ERROR(read_id("tokenizer.ggml.eom_token_id", &eom));

  auto add_bos = optional_bool(file, "tokenizer.ggml.add_bos_token", kind_ == Kind::spm);
  if (!add_bos) return add_bos.error();
  add_bos_ = *add_bos && bos_.has_value();
  auto add_eos = optional_bool(file, "tokenizer.ggml.add_eos_token", false);
  if (!add_eos) return add_eos.error();
  add_eos_ = *add_eos && eos_.has_value();
  auto space_prefix = optional_bool(file, "tokenizer.ggml.add_space_prefix", kind_ == Kind::spm);
  if (!space_prefix) return space_prefix.error();
  add_space_prefix_ = *space_prefix;

  for (const auto& id : {eos_, eot, eom}) {
    if (id) end_of_generation_.push_back(*id);
  }
  for (std::string_view marker : kEndMarkers) {
    const auto it = ids_.find(std::string(marker));
    if (it != ids_.end() && types_[static_cast<size_t>(it->second)] == TokenType::control) {
      end_of_generation_.push_back(it->second);
    }
  }
  return {};
}

void Tokenizer::index_special_texts() {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const TokenType type = types_[i];
    // As llama.cpp does, the unknown token's text (SentencePiece's "<unk>") is matched like a
    // control token's.
    const bool special = type == TokenType::control || type == TokenType::user_defined || type == TokenType::unknown;
    if (special && !tokens_[i].empty()) {
      special_texts_.emplace_back(tokens_[i], static_cast<int32_t>(i));
    }
  }
  std::stable_sort(special_texts_.begin(), special_texts_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (size_t i = 0; i < special_texts_.size(); ++i) {
    special_by_first_byte_[static_cast<uint8_t>(special_texts_[i].first[0])].push_back(static_cast<uint32_t>(i));
  }
}

void Tokenizer::compute_pieces() {
  pieces_.resize(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& text = tokens_[i];
    const TokenType type = types_[i];
    if (kind_ == Kind::spm) {
      unsigned byte = 0;
      if (type == TokenType::byte && text.size() == 6 && std::sscanf(text.c_str(), "<0x%02X>", &byte) == 1) {
        pieces_[i] = std::string(1, static_cast<char>(byte));
      } else {
        pieces_[i] = replace_all(text, kSpmSpace, " ");
      }
    } else if (type == TokenType::normal || type == TokenType::byte) {
      std::string bytes;
      for (size_t pos = 0; pos < text.size();) {
        const size_t start = pos;
        const char32_t cp = utf8::decode(text, &pos);
        if (const auto b = symbol_to_byte(cp)) {
          bytes.push_back(static_cast<char>(*b));
        } else {
          bytes.append(text, start, pos - start);  // not byte-level: keep the character itself
        }
      }
      pieces_[i] = std::move(bytes);
    } else {
      pieces_[i] = text;
    }
  }
}

void Tokenizer::index_byte_tokens() {
  if (kind_ == Kind::spm) {
    byte_token_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      const auto it = ids_.find(fmt::format("<0x{:02X}>", b));
      if (it != ids_.end()) byte_token_ids_[static_cast<size_t>(b)] = it->second;
    }
    return;
  }
  byte_symbol_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    const auto it = ids_.find(byte_to_symbol(static_cast<uint8_t>(b)));
    if (it != ids_.end()) byte_symbol_ids_[static_cast<size_t>(b)] = it->second;
  }
}

void Tokenizer::choose_pretokenizer(const GgufFile& file) {
  const GgufValue* pre_value = file.find("tokenizer.ggml.pre");
  pre_name_ = pre_value && pre_value->as_string() ? *pre_value->as_string() : "default";
  const auto pretokenizer = pretokenizer_for(pre_name_);
  if (!pretokenizer) {
    log::warn(
        "{}: unknown pre-tokenizer '{}'; splitting text the GPT-2 way, which may differ from the model's own tokenizer",
        file.name(), pre_name_);
  }
  pretokenizer_ = pretokenizer.value_or(PretokenizerKind::gpt2);
  // Qwen2-family tokenizers NFC-normalise their input; Llama 3 takes whole words that are in the
  // vocabulary as they are, before any merge.
  normalize_nfc_ = pretokenizer_ == PretokenizerKind::qwen2;
  ignore_merges_ = pretokenizer_ == PretokenizerKind::llama3;
}

Status Tokenizer::read_merges(const GgufFile& file) {
  const GgufValue* merges_value = file.find("tokenizer.ggml.merges");
  const GgufArray* merges = merges_value ? merges_value->as_array() : nullptr;
  if (merges == nullptr || merges->element_type != GgufValueType::string) {
    return make_error(Errc::bad_format,
                      file.name() + ": a gpt2 tokenizer needs tokenizer.ggml.merges (an array of strings)");
  }
  merges_.reserve(merges->strings.size());
  size_t skipped = 0;
  for (size_t rank = 0; rank < merges->strings.size(); ++rank) {
    const std::string& merge = merges->strings[rank];
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos) {
      ++skipped;
      continue;
    }
    const auto left = ids_.find(merge.substr(0, space));
    const auto right = ids_.find(merge.substr(space + 1));
    const auto merged = ids_.find(merge.substr(0, space) + merge.substr(space + 1));
    if (left == ids_.end() || right == ids_.end() || merged == ids_.end()) {
      ++skipped;
      continue;
    }
    merges_.emplace(pair_key(left->second, right->second), std::make_pair(static_cast<int32_t>(rank), merged->second));
  }
  if (skipped > 0) log::debug("{}: skipped {} merges whose parts are not in the vocabulary", file.name(), skipped);
  return {};
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  const auto it = ids_.find(std::string(text));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::find(end_of_generation_.begin(), end_of_generation_.end(), id) != end_of_generation_.end();
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_special && add_bos_) out.push_back(*bos_);
  bool after_special = true;  // start of text counts as following a special token
  size_t fragment_start = 0;
  size_t pos = 0;
  size_t plain = 0;  // the first plain range that does not end before `pos`
  while (pos < text.size()) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    while (plain < options.plain_ranges.size() && options.plain_ranges[plain].end <= pos) ++plain;
    for (uint32_t index : special_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const auto& special = special_texts_[index];
      if (types_[static_cast<size_t>(special.second)] == TokenType::control) {
        if (!options.parse_special) continue;
        if (plain < options.plain_ranges.size() && options.plain_ranges[plain].begin < pos + special.first.size()) {
          continue;
        }
      }
      if (text.compare(pos, special.first.size(), special.first) == 0) {
        hit = &special;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    if (pos > fragment_start) encode_fragment(text.substr(fragment_start, pos - fragment_start), after_special, &out);
    out.push_back(hit->second);
    after_special = true;
    pos += hit->first.size();
    fragment_start = pos;
  }
  if (pos > fragment_start) encode_fragment(text.substr(fragment_start), after_special, &out);
  if (options.add_special && add_eos_) out.push_back(*eos_);
  return out;
}

void Tokenizer::encode_fragment(std::string_view text, bool after_special, std::vector<int32_t>* out) const {
  if (kind_ == Kind::spm) {
    // SentencePiece adds a space before the text that starts each run between special tokens.
    std::string prepared = add_space_prefix_ && after_special ? " " : "";
    prepared.append(text);
    encode_spm(replace_all(prepared, " ", kSpmSpace), out);
    return;
  }
  const std::string normalized = normalize_nfc_ ? unicode::nfc(text) : std::string(text);
  for (std::string_view word : pretokenize(pretokenizer_, normalized)) encode_bpe_word(word, out);
}

void Tokenizer::encode_spm(std::string_view text, std::vector<int32_t>* out) const {
  // Symbols start as single characters and merge pairwise, highest-scoring vocabulary entry
  // first (leftmost on ties), until no adjacent pair forms a vocabulary entry.
  struct Symbol {
    size_t start, length;
    int prev, next;
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    utf8::decode(text, &pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({start, pos - start, index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    float score;
    int left, right;
    size_t length;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
  auto try_pair = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t length = symbols[static_cast<size_t>(left)].length + symbols[static_cast<size_t>(right)].length;
    const auto it = ids_.find(std::string(text.substr(symbols[static_cast<size_t>(left)].start, length)));
    if (it == ids_.end()) return;
    queue.push({scores_[static_cast<size_t>(it->second)], left, right, length});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_pair(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Candidate best = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(best.left)];
    Symbol& right = symbols[static_cast<size_t>(best.right)];
    if (left.length == 0 || right.length == 0 || left.next != best.right || left.length + right.length != best.length) {
      continue;  // stale: one side already merged elsewhere
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = best.left;
    try_pair(left.prev, best.left);
    try_pair(best.left, left.next);
  }

  for (int i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
    const Symbol& symbol = symbols[static_cast<size_t>(i)];
    const std::string_view piece = text.substr(symbol.start, symbol.length);
    const auto it = ids_.find(std::string(piece));
    if (it != ids_.end()) {
      out->push_back(it->second);
      continue;
    }
    for (char c : piece) {  // byte fallback
      const int32_t byte_id = byte_token_ids_[static_cast<uint8_t>(c)];
      if (byte_id >= 0) {
        out->push_back(byte_id);
      } else if (unknown_) {
        out->push_back(*unknown_);
        break;
      }
    }
  }
}

void Tokenizer::encode_bpe_word(std::string_view word, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    const auto it = ids_.find(bytes_to_symbols(word));
    if (it != ids_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // One symbol per byte; merges are applied lowest rank first (leftmost on ties).
  struct Symbol {
    int32_t id;
    int prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (char c : word) {
    const int32_t id = byte_symbol_ids_[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // a byte the vocabulary cannot spell is dropped, as the reference does
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int left, right;
    int32_t left_id, right_id, merged_id;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
  auto try_pair = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const int32_t left_id = symbols[static_cast<size_t>(left)].id;
    const int32_t right_id = symbols[static_cast<size_t>(right)].id;
    const auto it = merges_.find(pair_key(left_id, right_id));
    if (it == merges_.end()) return;
    queue.push({it->second.first, left, right, left_id, right_id, it->second.second});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_pair(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Candidate best = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(best.left)];
    Symbol& right = symbols[static_cast<size_t>(best.right)];
    if (left.id != best.left_id || right.id != best.right_id || left.next != best.right) continue;  // stale
    left.id = best.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = best.left;
    right.id = -1;
    try_pair(left.prev, best.left);
    try_pair(best.left, left.next);
  }
  for (int i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) out->push_back(symbols[static_cast<size_t>(i)].id);
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  if (id < 0 || id >= n_vocab()) return {};
  switch (types_[static_cast<size_t>(id)]) {
    case TokenType::control:
    case TokenType::unknown:
      return render_special ? tokens_[static_cast<size_t>(id)] : std::string();
    case TokenType::unused:
      return {};
    default:
      return pieces_[static_cast<size_t>(id)];
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string text;
  for (int32_t id : ids) text += token_to_piece(id, render_special);
  if (kind_ == Kind::spm && add_space_prefix_ && !text.empty() && text.front() == ' ') text.erase(0, 1);
  return text;
}

}  // namespace darkbloom::engine
