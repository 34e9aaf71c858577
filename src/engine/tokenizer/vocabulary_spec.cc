#include "engine/tokenizer/vocabulary_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "base/file.h"
#include "base/json.h"
#include "base/log.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pretokenizer.h"

namespace darkbloom::engine {
namespace {

namespace bj = boost::json;

// The Split patterns of the two BPE families we recognise, as tokenizer.json files spell them.
constexpr std::string_view kLlama3Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
constexpr std::string_view kQwen2Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

constexpr std::string_view kChatMlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Training text for the synthetic vocabulary: plain prose so that common English words become
// single tokens and generated text from a random model looks like words.
constexpr std::string_view kTrainingText =
    "The morning was cold and clear, and the river ran fast under the old stone bridge. People walked to work "
    "with their hands in their pockets, talking about the weather, the price of bread and the news from the city. "
    "A small shop on the corner sold coffee, tea and warm rolls; its owner had opened the door at six, as she did "
    "every day, and she knew most of her customers by name. In the afternoon the wind turned, clouds came in from "
    "the west and the first drops of rain fell on the market square. Children ran home from school, laughing, "
    "while their parents closed windows and brought the washing inside. By evening the streets were quiet again. "
    "Lights came on in the houses along the water, and somewhere a radio played an old song about the sea. "
    "Engineers at the station checked the machines one more time before the night shift began: the pumps, the "
    "pipes, the gauges and the long rows of cables that carried power to the town. Everything was in order. "
    "They wrote their numbers in a book, made another pot of tea and waited for the morning to come. "
    "Good software is written the same way: one careful step at a time, tested, measured and written down so that "
    "the next person can read it, understand it and make it better. There is no magic in it, only patience.";

Result<std::string> string_field(const bj::value& value, std::string_view what) {
  if (value.is_string()) return std::string(value.as_string());
  if (value.is_object()) {
    if (const auto* content = value.as_object().if_contains("content"); content && content->is_string()) {
      return std::string(content->as_string());
    }
  }
  return make_error(Errc::bad_format, fmt::format("{} must be a string or an object with 'content'", what));
}

void collect_split_patterns(const bj::value& pre, std::vector<std::string>* patterns, bool* byte_level_regex) {
  if (!pre.is_object()) return;
  const auto& object = pre.as_object();
  const auto* type = object.if_contains("type");
  if (type == nullptr || !type->is_string()) return;
  if (type->as_string() == "Sequence") {
    if (const auto* list = object.if_contains("pretokenizers"); list && list->is_array()) {
      for (const auto& item : list->as_array()) collect_split_patterns(item, patterns, byte_level_regex);
    }
  } else if (type->as_string() == "Split") {
    if (const auto* pattern = object.if_contains("pattern"); pattern && pattern->is_object()) {
      if (const auto* regex = pattern->as_object().if_contains("Regex"); regex && regex->is_string()) {
        patterns->emplace_back(regex->as_string());
      }
    }
  } else if (type->as_string() == "ByteLevel") {
    const auto* use_regex = object.if_contains("use_regex");
    if (use_regex == nullptr || (use_regex->is_bool() && use_regex->as_bool())) *byte_level_regex = true;
  }
}

// A byte-level BPE tokenizer (GPT-2 style): its split pattern must be one the engine implements.
Status check_byte_level(const bj::object& root, const std::string& tokenizer_json_path, VocabularySpec* out) {
  VocabularySpec& spec = *out;
  std::vector<std::string> patterns;
  bool byte_level_regex = false;
  if (const auto* pre = root.if_contains("pre_tokenizer")) collect_split_patterns(*pre, &patterns, &byte_level_regex);
  if (patterns.size() == 1 && patterns[0] == kLlama3Pattern) {
    spec.pre = "llama-bpe";
  } else if (patterns.size() == 1 && patterns[0] == kQwen2Pattern) {
    spec.pre = "qwen2";
  } else if (patterns.empty() && byte_level_regex) {
    spec.pre = "default";
  } else {
    const std::string found = patterns.empty() ? "none" : patterns[0].substr(0, 80);
    return make_error(Errc::unsupported,
                      fmt::format("{}: pre-tokenizer not supported (split pattern: {})", tokenizer_json_path, found));
  }
  if (const auto* normalizer = root.if_contains("normalizer"); normalizer && !normalizer->is_null()) {
    const auto* type = normalizer->is_object() ? normalizer->as_object().if_contains("type") : nullptr;
    const bool nfc = type && type->is_string() && type->as_string() == "NFC";
    if (!nfc || spec.pre != "qwen2") {
      return make_error(
          Errc::unsupported,
          tokenizer_json_path + ": this normalizer is supported only as NFC with the qwen2 pre-tokenizer");
    }
  }
  return {};
}

// A SentencePiece-style BPE tokenizer exported to tokenizer.json (Llama 2, Gemma): spaces are
// "▁", characters outside the vocabulary fall back to <0xXX> byte tokens, and pairs merge in the
// order of their merge rank. As a GGUF "llama" vocabulary the merge order becomes scores: a
// token's score is minus the rank of the first merge that makes it, so the engine's
// highest-score-first merging follows the same order. Single characters, bytes and special
// tokens are never made by a merge.
Status as_sentencepiece(const bj::object& root, const bj::object& model, const std::string& tokenizer_json_path,
                        VocabularySpec* spec) {
  spec->model = "llama";
  spec->pre = "default";
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < spec->tokens.size(); ++i) ids.emplace(spec->tokens[i], static_cast<int32_t>(i));
  spec->scores.assign(spec->tokens.size(), 0.0f);
  std::vector<bool> scored(spec->tokens.size(), false);
  for (size_t rank = 0; rank < spec->merges.size(); ++rank) {
    const std::string& merge = spec->merges[rank];
    const size_t space = merge.find(' ');
    if (space == std::string::npos) continue;
    const auto it = ids.find(merge.substr(0, space) + merge.substr(space + 1));
    if (it == ids.end() || scored[static_cast<size_t>(it->second)]) continue;
    scored[static_cast<size_t>(it->second)] = true;
    spec->scores[static_cast<size_t>(it->second)] = -static_cast<float>(rank) - 1.0f;
  }
  spec->merges.clear();  // a "llama" vocabulary merges by score
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    const std::string& text = spec->tokens[i];
    if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
        spec->token_types[i] == static_cast<int32_t>(TokenType::normal)) {
      spec->token_types[i] = static_cast<int32_t>(TokenType::byte);
    }
  }
  if (const auto* unk = model.if_contains("unk_token"); unk && unk->is_string()) {
    if (const auto it = ids.find(std::string(unk->as_string())); it != ids.end()) {
      spec->unknown = it->second;
      spec->token_types[static_cast<size_t>(it->second)] = static_cast<int32_t>(TokenType::unknown);
    }
  }
  // Normalizers: Replace(" ", "▁"), optionally after Prepend("▁") (Llama 2's space prefix).
  const auto* normalizer = root.if_contains("normalizer");
  std::vector<const bj::object*> steps;
  if (normalizer != nullptr && normalizer->is_object()) {
    const auto* list = normalizer->as_object().if_contains("normalizers");
    if (list != nullptr && list->is_array()) {
      for (const auto& step : list->as_array()) {
        if (step.is_object()) steps.push_back(&step.as_object());
      }
    } else {
      steps.push_back(&normalizer->as_object());
    }
  }
  bool replaces_spaces = false;
  spec->add_space_prefix = false;
  for (const bj::object* step : steps) {
    const auto* type = step->if_contains("type");
    const std::string_view kind = type && type->is_string() ? std::string_view(type->as_string()) : "";
    if (kind == "Prepend") {
      spec->add_space_prefix = true;
    } else if (kind == "Replace") {
      replaces_spaces = true;
    } else {
      return make_error(Errc::unsupported,
                        fmt::format("{}: SentencePiece normalizer '{}' is not supported", tokenizer_json_path, kind));
    }
  }
  if (!replaces_spaces) {
    return make_error(Errc::unsupported, tokenizer_json_path + ": a SentencePiece tokenizer must replace spaces by ▁");
  }
  // No pre-tokenizer, or Gemma's split on " ", which finds nothing once spaces are "▁".
  if (const auto* pre = root.if_contains("pre_tokenizer"); pre != nullptr && !pre->is_null()) {
    const auto* type = pre->is_object() ? pre->as_object().if_contains("type") : nullptr;
    const auto* pattern = pre->is_object() ? pre->as_object().if_contains("pattern") : nullptr;
    const auto* text = pattern && pattern->is_object() ? pattern->as_object().if_contains("String") : nullptr;
    if (!(type && type->is_string() && type->as_string() == "Split" && text && text->is_string() &&
          text->as_string() == " ")) {
      return make_error(Errc::unsupported, tokenizer_json_path + ": this SentencePiece pre-tokenizer is not supported");
    }
  }
  return {};
}

}  // namespace

Result<VocabularySpec> import_hf_tokenizer(const std::string& tokenizer_json_path,
                                           const std::string& tokenizer_config_path) {
  auto text = read_file(tokenizer_json_path);
  if (!text) return text.error();
  auto parsed = json::parse(*text, tokenizer_json_path);
  if (!parsed) return parsed.error();
  if (!parsed->is_object()) return make_error(Errc::bad_format, tokenizer_json_path + ": not a JSON object");
  const auto& root = parsed->as_object();
  auto fail = [&](const std::string& message) {
    return make_error(Errc::bad_format, tokenizer_json_path + ": " + message);
  };

  const auto* model = root.if_contains("model");
  if (model == nullptr || !model->is_object()) return fail("no 'model' object");
  const auto* model_type = model->as_object().if_contains("type");
  if (model_type == nullptr || !model_type->is_string() || model_type->as_string() != "BPE") {
    return make_error(Errc::unsupported, tokenizer_json_path + ": only BPE tokenizers can be imported");
  }
  const auto* vocab = model->as_object().if_contains("vocab");
  if (vocab == nullptr || !vocab->is_object()) return fail("model.vocab must be an object");

  // Ids must be dense enough to be a vocabulary: cap at the number of entries plus added tokens.
  const auto* added = root.if_contains("added_tokens");
  const size_t added_count = added && added->is_array() ? added->as_array().size() : 0;
  const size_t id_limit = vocab->as_object().size() + added_count + 1024;
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;  // id → (text, type)
  for (const auto& entry : vocab->as_object()) {
    if (!entry.value().is_int64() || entry.value().as_int64() < 0 ||
        static_cast<size_t>(entry.value().as_int64()) >= id_limit) {
      return fail(fmt::format("vocab entry '{}' has an invalid id", std::string(entry.key())));
    }
    by_id[entry.value().as_int64()] = {std::string(entry.key()), static_cast<int32_t>(TokenType::normal)};
  }
  if (added && added->is_array()) {
    for (const auto& item : added->as_array()) {
      if (!item.is_object()) return fail("added_tokens entries must be objects");
      const auto& object = item.as_object();
      const auto* id = object.if_contains("id");
      const auto* content = object.if_contains("content");
      if (id == nullptr || !id->is_int64() || id->as_int64() < 0 || static_cast<size_t>(id->as_int64()) >= id_limit ||
          content == nullptr || !content->is_string()) {
        return fail("added_tokens entries need an 'id' and a 'content'");
      }
      const auto* special = object.if_contains("special");
      const bool is_special = special && special->is_bool() && special->as_bool();
      by_id[id->as_int64()] = {std::string(content->as_string()),
                               static_cast<int32_t>(is_special ? TokenType::control : TokenType::user_defined)};
    }
  }
  if (by_id.empty()) return fail("the vocabulary is empty");

  VocabularySpec spec;
  const int64_t n = by_id.rbegin()->first + 1;
  spec.tokens.resize(static_cast<size_t>(n));
  spec.token_types.assign(static_cast<size_t>(n), static_cast<int32_t>(TokenType::unused));
  for (int64_t i = 0; i < n; ++i) spec.tokens[static_cast<size_t>(i)] = fmt::format("[PAD{}]", i);
  for (auto& [id, entry] : by_id) {
    spec.tokens[static_cast<size_t>(id)] = entry.first;
    spec.token_types[static_cast<size_t>(id)] = entry.second;
  }

  const auto* merges = model->as_object().if_contains("merges");
  if (merges == nullptr || !merges->is_array()) return fail("model.merges must be an array");
  spec.merges.reserve(merges->as_array().size());
  for (const auto& merge : merges->as_array()) {
    if (merge.is_string()) {
      spec.merges.emplace_back(merge.as_string());
    } else if (merge.is_array() && merge.as_array().size() == 2 && merge.as_array()[0].is_string() &&
               merge.as_array()[1].is_string()) {
      spec.merges.push_back(std::string(merge.as_array()[0].as_string()) + " " +
                            std::string(merge.as_array()[1].as_string()));
    } else {
      return fail("model.merges entries must be \"a b\" strings or [a, b] pairs");
    }
  }

  const auto* byte_fallback = model->as_object().if_contains("byte_fallback");
  if (byte_fallback != nullptr && byte_fallback->is_bool() && byte_fallback->as_bool()) {
    DARKBLOOM_RETURN_IF_ERROR(as_sentencepiece(root, model->as_object(), tokenizer_json_path, &spec));
  } else {
    DARKBLOOM_RETURN_IF_ERROR(check_byte_level(root, tokenizer_json_path, &spec));
  }

  auto find_id = [&](const std::string& token) -> std::optional<int32_t> {
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      if (spec.tokens[i] == token) return static_cast<int32_t>(i);
    }
    return std::nullopt;
  };
  if (!tokenizer_config_path.empty()) {
    auto config_text = read_file(tokenizer_config_path);
    if (!config_text) return config_text.error();
    auto config = json::parse(*config_text, tokenizer_config_path);
    if (!config) return config.error();
    if (!config->is_object()) return make_error(Errc::bad_format, tokenizer_config_path + ": not a JSON object");
    const auto& object = config->as_object();
    auto special = [&](const char* key, std::optional<int32_t>* out) -> Status {
      const auto* value = object.if_contains(key);
      if (value == nullptr || value->is_null()) return {};
      auto name = string_field(*value, fmt::format("{}: {}", tokenizer_config_path, key));
      if (!name) return name.error();
      *out = find_id(*name);
      if (!*out)
        return make_error(Errc::bad_format,
                          fmt::format("{}: {} '{}' is not in the vocabulary", tokenizer_config_path, key, *name));
      return {};
    };
    DARKBLOOM_RETURN_IF_ERROR(special("bos_token", &spec.bos));
    DARKBLOOM_RETURN_IF_ERROR(special("eos_token", &spec.eos));
    DARKBLOOM_RETURN_IF_ERROR(special("pad_token", &spec.padding));
    if (const auto* add_bos = object.if_contains("add_bos_token"); add_bos && add_bos->is_bool())
      spec.add_bos = add_bos->as_bool();
    if (const auto* chat = object.if_contains("chat_template")) {
      if (chat->is_string()) {
        spec.chat_template = std::string(chat->as_string());
      } else if (chat->is_array()) {
        for (const auto& named : chat->as_array()) {
          const auto* name = named.is_object() ? named.as_object().if_contains("name") : nullptr;
          const auto* body = named.is_object() ? named.as_object().if_contains("template") : nullptr;
          if (name && body && name->is_string() && body->is_string() && name->as_string() == "default") {
            spec.chat_template = std::string(body->as_string());
          }
        }
      }
    }
  }
  if (spec.add_bos && !spec.bos) spec.add_bos = false;
  return spec;
}

// NOLINTNEXTLINE(readability-function-size): a table: the synthetic vocabulary, one block per token class.
Result<VocabularySpec> synthesize_vocabulary(int n_vocab, uint64_t seed) {
  constexpr int kSpecials = 3;
  if (n_vocab < 256 + kSpecials) {
    return make_error(Errc::invalid_argument,
                      fmt::format("a byte-level vocabulary needs at least {} tokens", 256 + kSpecials));
  }
  VocabularySpec spec;
  spec.pre = "default";
  spec.chat_template = std::string(kChatMlTemplate);
  std::unordered_set<std::string> known;
  for (int b = 0; b < 256; ++b) {
    spec.tokens.push_back(byte_to_symbol(static_cast<uint8_t>(b)));
    spec.token_types.push_back(static_cast<int32_t>(TokenType::normal));
    known.insert(spec.tokens.back());
  }
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    spec.tokens.emplace_back(special);
    spec.token_types.push_back(static_cast<int32_t>(TokenType::control));
  }
  spec.padding = 256;
  spec.eos = 258;

  auto add_merge = [&](const std::string& left, const std::string& right) {
    spec.merges.push_back(left + " " + right);
    spec.tokens.push_back(left + right);
    spec.token_types.push_back(static_cast<int32_t>(TokenType::normal));
    known.insert(spec.tokens.back());
  };

  // Learn merges from the training text: repeatedly merge the most frequent adjacent pair.
  std::map<std::vector<std::string>, int> words;
  for (std::string_view piece : pretokenize(PretokenizerKind::gpt2, kTrainingText)) {
    std::vector<std::string> symbols;
    for (char c : piece) symbols.push_back(byte_to_symbol(static_cast<uint8_t>(c)));
    ++words[symbols];
  }
  while (static_cast<int>(spec.tokens.size()) < n_vocab) {
    std::map<std::pair<std::string, std::string>, int> pair_counts;
    for (const auto& [symbols, count] : words) {
      for (size_t i = 1; i < symbols.size(); ++i) pair_counts[{symbols[i - 1], symbols[i]}] += count;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int best_count = 1;
    for (const auto& [pair, count] : pair_counts) {
      if (count > best_count && !known.count(pair.first + pair.second)) {
        best = &pair;
        best_count = count;
      }
    }
    if (best == nullptr) break;
    const auto [left, right] = *best;
    add_merge(left, right);
    std::map<std::vector<std::string>, int> merged;
    for (const auto& [symbols, count] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          out.push_back(left + right);
          ++i;
        } else {
          out.push_back(symbols[i]);
        }
      }
      merged[out] += count;
    }
    words = std::move(merged);
  }

  // Fill the rest with merges of letter tokens (optionally space-led), shortest first, so every
  // filler token is reachable and reads like a word fragment.
  std::mt19937_64 rng(seed);
  std::vector<std::string> letters;
  for (char c = 'a'; c <= 'z'; ++c) letters.emplace_back(1, c);
  const std::string space = byte_to_symbol(' ');
  std::vector<std::string> pool;  // tokens usable as parts
  for (const auto& token : spec.tokens) {
    const bool wordy =
        !token.empty() && std::all_of(token.begin(), token.end(), [&](char c) { return c >= 'a' && c <= 'z'; });
    if (wordy) pool.push_back(token);
  }
  size_t attempts = 0;
  while (static_cast<int>(spec.tokens.size()) < n_vocab) {
    const std::string& a = pool[rng() % pool.size()];
    const std::string& b = pool[rng() % pool.size()];
    const bool lead_space = (rng() % 2) == 0;
    std::string left = lead_space ? space + a : a;
    if (lead_space && !known.count(left)) {
      add_merge(space, a);
      continue;
    }
    if (left.size() + b.size() > 12 || known.count(left + b)) {
      if (++attempts > 1000000) return make_error(Errc::internal, "could not synthesise enough distinct tokens");
      continue;
    }
    add_merge(left, b);
    if (!lead_space) pool.push_back(left + b);
  }
  return spec;
}

}  // namespace darkbloom::engine
