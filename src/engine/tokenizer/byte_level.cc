#include "engine/tokenizer/byte_level.h"

#include <array>

#include "base/utf8.h"

namespace darkbloom::engine {
namespace {

// Printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for themselves; the other 68 bytes, in
// increasing order, take the code points 256, 257, ... (the GPT-2 convention).
struct Alphabet {
  std::array<char32_t, 256> code_point{};
  std::array<std::string, 256> symbol;
  std::array<int, 256 + 68> byte_of;  // -1 where a code point stands for no byte

  Alphabet() {
    byte_of.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      code_point[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
      utf8::append(&symbol[static_cast<size_t>(b)], code_point[static_cast<size_t>(b)]);
      byte_of[code_point[static_cast<size_t>(b)]] = b;
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet instance;
  return instance;
}

}  // namespace

const std::string& byte_to_symbol(uint8_t byte) {
  return alphabet().symbol[byte];
}

std::string bytes_to_symbols(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_symbol(static_cast<uint8_t>(c));
  return out;
}

std::optional<uint8_t> symbol_to_byte(char32_t cp) {
  if (cp >= alphabet().byte_of.size() || alphabet().byte_of[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(alphabet().byte_of[cp]);
}

}  // namespace darkbloom::engine
