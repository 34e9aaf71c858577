#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "support/temp_dir.h"

namespace darkbloom::engine {
namespace {

using darkbloom::testing::TempDir;

struct VocabBuilder {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;

  int32_t add(const std::string& text, TokenType type = TokenType::normal, float score = 0.0f) {
    tokens.push_back(text);
    types.push_back(static_cast<int32_t>(type));
    scores.push_back(score);
    return static_cast<int32_t>(tokens.size() - 1);
  }
};

Result<Tokenizer> load(const TempDir& dir, GgufWriter& writer) {
  const std::string path = dir.file(fmt::format("vocab{}.gguf", reinterpret_cast<uintptr_t>(&writer)));
  if (auto status = writer.write(path); !status) return status.error();
  auto file = GgufFile::open(path);
  if (!file) return file.error();
  return Tokenizer::from_gguf(*file);
}

GgufWriter vocab_writer(const std::string& model, const VocabBuilder& vocab) {
  GgufWriter writer;
  writer.add_metadata("tokenizer.ggml.model", gguf_string(model));
  writer.add_metadata("tokenizer.ggml.tokens", gguf_string_array(vocab.tokens));
  writer.add_metadata("tokenizer.ggml.token_type", gguf_i32_array(vocab.types));
  writer.add_metadata("tokenizer.ggml.scores", gguf_f32_array(vocab.scores));
  return writer;
}

// Byte-level BPE: the 256 byte symbols, then merges a+b, ab+c and Ġ+a, then two control tokens.
struct BpeFixture {
  VocabBuilder vocab;
  int32_t ab, abc, space_a, im_start, im_end;
  BpeFixture() {
    for (int b = 0; b < 256; ++b) vocab.add(byte_to_symbol(static_cast<uint8_t>(b)));
    ab = vocab.add("ab");
    abc = vocab.add("abc");
    space_a = vocab.add(byte_to_symbol(' ') + "a");
    im_start = vocab.add("<|im_start|>", TokenType::control);
    im_end = vocab.add("<|im_end|>", TokenType::control);
  }
  Result<Tokenizer> load(const TempDir& dir, const std::string& pre = "gpt2") const {
    GgufWriter writer = vocab_writer("gpt2", vocab);
    writer.add_metadata("tokenizer.ggml.merges", gguf_string_array({"a b", "ab c", byte_to_symbol(' ') + " a"}));
    writer.add_metadata("tokenizer.ggml.pre", gguf_string(pre));
    writer.add_metadata("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(im_end)));
    return engine::load(dir, writer);
  }
};

// GPT-2 splitting without ignore_merges, so every word goes through the merge loop.
TEST(Tokenizer, bpe_applies_merges_by_rank) {
  TempDir dir;
  BpeFixture fixture;
  auto tokenizer = fixture.load(dir);
  ASSERT_TRUE(tokenizer) << tokenizer.error().message;
  EncodeOptions options;
  // "abc" → a b c → ab c → abc.  " ab" → Ġ a b: (a b) has rank 0 and wins over (Ġ a).
  const auto ids = tokenizer->encode("abc ab", options);
  const int32_t space = ' ';  // byte b has id b in this vocabulary
  EXPECT_EQ(ids, (std::vector<int32_t>{fixture.abc, space, fixture.ab}));
  // " a" alone: Ġ a merges.
  EXPECT_EQ(tokenizer->encode(" a", options), (std::vector<int32_t>{fixture.space_a}));
  EXPECT_EQ(tokenizer->decode(ids), "abc ab");
}

// Llama 3 vocabularies take a word that is itself a token whole, whatever the merges say.
TEST(Tokenizer, llama3_takes_whole_words_that_are_tokens) {
  TempDir dir;
  BpeFixture fixture;
  fixture.vocab.add("ac");  // a token no merge can build
  auto tokenizer = fixture.load(dir, "llama-bpe");
  ASSERT_TRUE(tokenizer);
  EXPECT_EQ(tokenizer->encode("ac"), (std::vector<int32_t>{static_cast<int32_t>(fixture.vocab.tokens.size() - 1)}));
  auto gpt2 = fixture.load(dir, "gpt2");
  ASSERT_TRUE(gpt2);
  EXPECT_EQ(gpt2->encode("ac"), (std::vector<int32_t>{'a', 'c'}));
}

TEST(Tokenizer, control_tokens_are_parsed_from_text_only_when_asked) {
  TempDir dir;
  BpeFixture fixture;
  auto tokenizer = fixture.load(dir);
  ASSERT_TRUE(tokenizer);
  EncodeOptions parse;
  const auto ids = tokenizer->encode("<|im_start|>ab<|im_end|>", parse);
  EXPECT_EQ(ids, (std::vector<int32_t>{fixture.im_start, fixture.ab, fixture.im_end}));
  EncodeOptions literal;
  literal.parse_special = false;
  const auto plain = tokenizer->encode("<|im_start|>", literal);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tokenizer->decode(plain), "<|im_start|>");
  // Control tokens do not appear in output text unless rendered on purpose.
  EXPECT_EQ(tokenizer->decode(ids), "ab");
  EXPECT_EQ(tokenizer->decode(ids, /*render_special=*/true), "<|im_start|>ab<|im_end|>");
  EXPECT_TRUE(tokenizer->is_end_of_generation(fixture.im_end));
  EXPECT_FALSE(tokenizer->is_end_of_generation(fixture.ab));
}

TEST(Tokenizer, bpe_round_trips_arbitrary_bytes) {
  TempDir dir;
  BpeFixture fixture;
  auto tokenizer = fixture.load(dir, "llama-bpe");
  ASSERT_TRUE(tokenizer);
  const std::string text = "x \xF0\x9F\x98\x80 \xFF\xFE tab\there\r\n";
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
}

// Qwen2 vocabularies normalise to NFC first, which needs valid UTF-8: invalid bytes become U+FFFD.
TEST(Tokenizer, nfc_normalising_vocabularies_compose_text_and_replace_invalid_bytes) {
  TempDir dir;
  BpeFixture fixture;
  auto tokenizer = fixture.load(dir, "qwen2");
  ASSERT_TRUE(tokenizer);
  EXPECT_EQ(tokenizer->decode(tokenizer->encode("e\xCC\x81 \xFF")), "\xC3\xA9 \xEF\xBF\xBD");
}

// SentencePiece: scored merges over characters, "▁" for spaces, byte fallback.
struct SpmFixture {
  VocabBuilder vocab;
  int32_t unk, bos, eos, space_hello, byte_e2;
  SpmFixture() {
    unk = vocab.add("<unk>", TokenType::unknown);
    bos = vocab.add("<s>", TokenType::control);
    eos = vocab.add("</s>", TokenType::control);
    for (int b = 0; b < 256; ++b) {
      const int32_t id = vocab.add(fmt::format("<0x{:02X}>", b), TokenType::byte);
      if (b == 0xE2) byte_e2 = id;
    }
    const std::string space = "\xE2\x96\x81";
    for (const char* c : {"h", "e", "l", "o"}) vocab.add(c, TokenType::normal, -10.0f);
    vocab.add(space, TokenType::normal, -10.0f);
    vocab.add("he", TokenType::normal, -1.0f);
    vocab.add("ll", TokenType::normal, -2.0f);
    vocab.add("llo", TokenType::normal, -3.0f);
    vocab.add("hello", TokenType::normal, -4.0f);
    space_hello = vocab.add(space + "hello", TokenType::normal, -5.0f);
  }
  Result<Tokenizer> load(const TempDir& dir) const {
    GgufWriter writer = vocab_writer("llama", vocab);
    writer.add_metadata("tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(bos)));
    writer.add_metadata("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(eos)));
    writer.add_metadata("tokenizer.ggml.unknown_token_id", gguf_u32(static_cast<uint32_t>(unk)));
    return engine::load(dir, writer);
  }
};

TEST(Tokenizer, spm_merges_by_score_adds_a_space_prefix_and_bos) {
  TempDir dir;
  SpmFixture fixture;
  auto tokenizer = fixture.load(dir);
  ASSERT_TRUE(tokenizer) << tokenizer.error().message;
  EXPECT_TRUE(tokenizer->adds_bos());
  const auto ids = tokenizer->encode("hello");
  EXPECT_EQ(ids, (std::vector<int32_t>{fixture.bos, fixture.space_hello}));
  EXPECT_EQ(tokenizer->decode(ids), "hello");
}

TEST(Tokenizer, spm_falls_back_to_bytes_for_unknown_characters) {
  TempDir dir;
  SpmFixture fixture;
  auto tokenizer = fixture.load(dir);
  ASSERT_TRUE(tokenizer);
  EncodeOptions options;
  options.add_special = false;
  const auto ids = tokenizer->encode("hello €", options);
  // "▁hello", then "▁" and the three bytes of "€" (E2 82 AC).
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], fixture.space_hello);
  EXPECT_EQ(ids[2], fixture.byte_e2);
  EXPECT_EQ(tokenizer->decode(ids), "hello €");
}

TEST(StreamingDetokenizer, emits_a_character_only_when_all_its_bytes_arrived) {
  TempDir dir;
  SpmFixture fixture;
  auto tokenizer = fixture.load(dir);
  ASSERT_TRUE(tokenizer);
  StreamingDetokenizer stream(*tokenizer);
  const int32_t first_byte = fixture.byte_e2;  // € = E2 82 AC, each a byte token
  EXPECT_EQ(stream.push(first_byte), "");
  EXPECT_EQ(stream.push(first_byte - 0xE2 + 0x82), "");
  EXPECT_EQ(stream.push(first_byte - 0xE2 + 0xAC), "€");
  // A byte that can never start a character is emitted as U+FFFD, not held.
  EXPECT_EQ(stream.push(first_byte - 0xE2 + 0xFF), "\xEF\xBF\xBD");
  // An unfinished character at the end becomes U+FFFD.
  EXPECT_EQ(stream.push(first_byte), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, malformed_vocabularies_are_errors_not_crashes) {
  TempDir dir;
  {
    GgufWriter writer;
    writer.add_metadata("general.architecture", gguf_string("llama"));
    auto t = load(dir, writer);
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("has no tokenizer"), std::string::npos);
  }
  {
    GgufWriter writer;
    writer.add_metadata("tokenizer.ggml.model", gguf_string("bert"));
    writer.add_metadata("tokenizer.ggml.tokens", gguf_string_array({"a"}));
    auto t = load(dir, writer);
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("'bert' is not supported"), std::string::npos);
  }
  {
    VocabBuilder vocab;
    vocab.add("a");
    GgufWriter writer = vocab_writer("llama", vocab);
    writer.add_metadata("tokenizer.ggml.bos_token_id", gguf_u32(5));
    auto t = load(dir, writer);
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("outside the vocabulary"), std::string::npos);
  }
  {
    VocabBuilder vocab;
    vocab.add("a");
    vocab.add("b");
    GgufWriter writer;
    writer.add_metadata("tokenizer.ggml.model", gguf_string("llama"));
    writer.add_metadata("tokenizer.ggml.tokens", gguf_string_array(vocab.tokens));
    writer.add_metadata("tokenizer.ggml.scores", gguf_f32_array({1.0f}));
    auto t = load(dir, writer);
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("one per token"), std::string::npos);
  }
  {
    VocabBuilder vocab;
    vocab.add("a");
    GgufWriter writer = vocab_writer("gpt2", vocab);
    auto t = load(dir, writer);
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("merges"), std::string::npos);
  }
}

}  // namespace
}  // namespace darkbloom::engine
