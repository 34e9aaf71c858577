// A vocabulary as GGUF metadata describes it (tokenizer.ggml.*), built either from a Hugging
// Face tokenizer.json or synthesised; `model synth` writes it into the files it makes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

struct VocabularySpec {
  std::string model = "gpt2";   // tokenizer.ggml.model
  std::string pre = "default";  // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // TokenType values
  std::vector<std::string> merges;   // "left right" (gpt2)
  std::vector<float> scores;         // per token, empty = none (llama: merge priority)
  bool add_space_prefix = false;     // llama: "▁" before the text
  std::optional<int32_t> bos, eos, padding, unknown;
  bool add_bos = false;
  std::string chat_template;  // empty = none
};

// Reads a tokenizer.json (BPE models only: byte-level ones as "gpt2", SentencePiece-style ones with
// byte fallback as "llama") and, optionally, the tokenizer_config.json beside it
// for BOS/EOS, add_bos_token and the chat template. Unsupported models or pre-tokenizers are
// errors naming what was found.
Result<VocabularySpec> import_hf_tokenizer(const std::string& tokenizer_json_path,
                                           const std::string& tokenizer_config_path);

// A byte-level BPE vocabulary of `n_vocab` tokens: the 256 byte symbols, ChatML control tokens,
// then merges learned from a small built-in English text and, past that, deterministic filler
// merges of letters. Comes with a ChatML chat template.
Result<VocabularySpec> synthesize_vocabulary(int n_vocab, uint64_t seed);

}  // namespace darkbloom::engine
