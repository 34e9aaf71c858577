// Text ⇄ token ids for the vocabularies GGUF files carry: `llama` (SentencePiece-style: scored
// merges over characters, byte fallback) and `gpt2` (byte-level BPE with ranked merges and a
// pre-splitting rule). Special and user-defined tokens written as text are recognised first.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/pretokenizer.h"

namespace darkbloom::engine {

// Token kinds as GGUF numbers them (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,       // BOS, EOS, chat markers: never produced from plain text unless parsed as special
  user_defined = 4,  // added tokens matched verbatim in text (e.g. "<think>")
  unused = 5,
  byte = 6,  // SentencePiece byte fallback "<0x41>"
};

// Bytes [begin, end) of a text.
struct ByteRange {
  uint32_t begin, end;
};

struct EncodeOptions {
  bool add_special = true;    // add BOS/EOS where the vocabulary asks for them (add_bos_token, add_eos_token)
  bool parse_special = true;  // recognise control tokens written as text, e.g. "<|im_start|>"
  // Sorted, disjoint ranges where control tokens are not recognised even with parse_special (a
  // client's text inside a chat template's output): a control token is read only where none of
  // its bytes falls in one.
  std::span<const ByteRange> plain_ranges = {};
};

class Tokenizer {
 public:
  enum class Kind { spm, bpe };

  static Result<Tokenizer> from_gguf(const GgufFile& file);

  Kind kind() const { return kind_; }
  int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
  std::string_view pre_name() const { return pre_name_; }
  std::optional<int32_t> bos() const { return bos_; }
  std::optional<int32_t> eos() const { return eos_; }
  bool adds_bos() const { return add_bos_; }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // The bytes a token stands for in output text. Control and unknown tokens give "" unless
  // `render_special`. Bytes may be a partial UTF-8 sequence (byte tokens, byte-level BPE).
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  // Concatenated pieces; for `llama` vocabularies the space added before the first word is removed.
  std::string decode(std::span<const int32_t> ids, bool render_special = false) const;

  const std::string& token_text(int32_t id) const { return tokens_[static_cast<size_t>(id)]; }
  TokenType token_type(int32_t id) const { return types_[static_cast<size_t>(id)]; }
  std::optional<int32_t> find_token(std::string_view text) const;
  // EOS, end-of-turn and the usual chat end markers: generation stops when one is sampled.
  bool is_end_of_generation(int32_t id) const;

 private:
  Tokenizer() = default;

  // The steps of from_gguf, in order. The readers check what they read against the vocabulary.
  Status read_vocabulary(const GgufFile& file);      // tokens, scores, token types
  Status read_special_tokens(const GgufFile& file);  // BOS/EOS/unknown ids, add_* flags, end markers
  void index_special_texts();                        // control and user-defined tokens text can spell
  void compute_pieces();                             // the output bytes of each token
  void index_byte_tokens();                          // SPM "<0xAB>" tokens or byte-level BPE symbols
  void choose_pretokenizer(const GgufFile& file);    // BPE only: tokenizer.ggml.pre
  Status read_merges(const GgufFile& file);          // BPE only: ranked merges

  void encode_fragment(std::string_view text, bool at_start, std::vector<int32_t>* out) const;
  void encode_spm(std::string_view text, std::vector<int32_t>* out) const;
  void encode_bpe_word(std::string_view word, std::vector<int32_t>* out) const;

  Kind kind_ = Kind::spm;
  std::string pre_name_;
  PretokenizerKind pretokenizer_ = PretokenizerKind::gpt2;
  bool normalize_nfc_ = false;
  bool ignore_merges_ = false;
  bool add_space_prefix_ = true;
  bool add_bos_ = false;
  bool add_eos_ = false;
  std::optional<int32_t> bos_, eos_, unknown_;
  std::vector<int32_t> end_of_generation_;

  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<std::string> pieces_;  // output bytes of normal/byte/user-defined tokens
  std::unordered_map<std::string, int32_t> ids_;

  // Special and user-defined tokens that text can spell, longest first.
  std::vector<std::pair<std::string, int32_t>> special_texts_;
  std::array<std::vector<uint32_t>, 256> special_by_first_byte_;  // indexes into special_texts_

  // BPE: (left id, right id) → (rank, merged id); and the id of each byte's symbol.
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::vector<int32_t> byte_symbol_ids_;
  // SPM: the id of each "<0xAB>" byte token, -1 when absent.
  std::vector<int32_t> byte_token_ids_;
};

}  // namespace darkbloom::engine
