#include "engine/tokenizer/pretokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace darkbloom::engine {
namespace {

std::vector<std::string> split(PretokenizerKind kind, std::string_view text) {
  std::vector<std::string> out;
  for (auto piece : pretokenize(kind, text)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Pretokenizer, llama3_splits_words_with_their_leading_space_or_symbol) {
  EXPECT_EQ(split(PretokenizerKind::llama3, "Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "a\tb"), (Pieces{"a", "\tb"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "(word)"), (Pieces{"(word", ")"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "Hello!!! ok"), (Pieces{"Hello", "!!!", " ok"}));
}

TEST(Pretokenizer, llama3_contractions_ignore_ascii_case) {
  EXPECT_EQ(split(PretokenizerKind::llama3, "I'm"), (Pieces{"I", "'m"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "don'T WE'LL"), (Pieces{"don", "'T", " WE", "'LL"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "'x"), (Pieces{"'x"}));
}

TEST(Pretokenizer, digits_group_by_three_for_llama3_and_one_for_qwen2) {
  EXPECT_EQ(split(PretokenizerKind::llama3, "12345"), (Pieces{"123", "45"}));
  EXPECT_EQ(split(PretokenizerKind::qwen2, "123"), (Pieces{"1", "2", "3"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "a1"), (Pieces{"a", "1"}));
}

TEST(Pretokenizer, whitespace_runs_leave_one_space_for_the_next_word_and_keep_newlines) {
  EXPECT_EQ(split(PretokenizerKind::llama3, "  hi"), (Pieces{" ", " hi"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "a\n\nb"), (Pieces{"a", "\n\n", "b"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "x   \n  y"), (Pieces{"x", "   \n", " ", " y"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "end   "), (Pieces{"end", "   "}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "x:\n"), (Pieces{"x", ":\n"}));
}

TEST(Pretokenizer, gpt2_contractions_are_case_sensitive_and_spaces_attach_to_the_next_piece) {
  EXPECT_EQ(split(PretokenizerKind::gpt2, "don't DON'T"), (Pieces{"don", "'t", " DON", "'", "T"}));
  EXPECT_EQ(split(PretokenizerKind::gpt2, "abc 123 !?"), (Pieces{"abc", " 123", " !?"}));
  EXPECT_EQ(split(PretokenizerKind::gpt2, "a\tb"), (Pieces{"a", "\t", "b"}));
}

TEST(Pretokenizer, non_latin_scripts_are_letters) {
  EXPECT_EQ(split(PretokenizerKind::llama3, "日本語 テスト"), (Pieces{"日本語", " テスト"}));
  EXPECT_EQ(split(PretokenizerKind::llama3, "😀😀 x"), (Pieces{"😀😀", " x"}));
}

TEST(Pretokenizer, every_byte_lands_in_exactly_one_piece_even_invalid_ones) {
  const std::string text =
      "a\xFF"
      "b \xC3 \xE2\x82 end\r\n";
  for (auto kind : {PretokenizerKind::gpt2, PretokenizerKind::llama3, PretokenizerKind::qwen2}) {
    std::string joined;
    for (const auto& piece : split(kind, text)) {
      EXPECT_FALSE(piece.empty());
      joined += piece;
    }
    EXPECT_EQ(joined, text);
  }
}

}  // namespace
}  // namespace darkbloom::engine
