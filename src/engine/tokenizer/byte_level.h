// The GPT-2 byte-level alphabet: every byte maps to one printable code point, so any byte string
// becomes a string of "visible" characters that BPE vocabularies store (space becomes 'Ġ').
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace darkbloom::engine {

// The UTF-8 encoding of the code point that stands for `byte`.
const std::string& byte_to_symbol(uint8_t byte);
// Maps every byte of `bytes` to its symbol.
std::string bytes_to_symbols(std::string_view bytes);
// The byte a code point stands for, or nullopt if it is not in the alphabet.
std::optional<uint8_t> symbol_to_byte(char32_t cp);

}  // namespace darkbloom::engine
