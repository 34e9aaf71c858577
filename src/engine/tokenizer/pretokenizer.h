// Pre-splitting of text into pieces before byte-level BPE, equivalent to the regular expressions
// that GPT-2, Llama 3 and Qwen2 tokenizers declare, written as plain scanners (no regex engine;
// Unicode classes come from ICU). Every byte of the input lands in exactly one piece.
#pragma once

#include <string_view>
#include <vector>

namespace darkbloom::engine {

enum class PretokenizerKind {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  gpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  // \s*[\r\n]+|\s+(?!\S)|\s+
  llama3,
  // As llama3, but digits split one at a time: \p{N} instead of \p{N}{1,3}.
  qwen2,
};

// Splits UTF-8 text; invalid bytes count as one punctuation-like character each.
std::vector<std::string_view> pretokenize(PretokenizerKind kind, std::string_view text);

}  // namespace darkbloom::engine
