// Text a provider chose (model ids, error messages, reasons built from its frames) on its way
// into the coordinator's log: control characters and Unicode line breaks escaped, so nothing it
// sends can forge a log line, and the length bounded without splitting a character.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace darkbloom::coordinator {

inline std::string printable(std::string_view text, size_t max_bytes = 300) {
  size_t end = std::min(text.size(), max_bytes);
  // Back off to the start of a UTF-8 character (continuation bytes are 10xxxxxx).
  while (end < text.size() && end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  const std::string_view shown = text.substr(0, end);
  std::string out;
  out.reserve(shown.size() + 8);
  for (size_t i = 0; i < shown.size(); ++i) {
    const char c = shown[i];
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else if (shown.substr(i, 2) == "\xC2\x85") {  // U+0085, next line
      out += "\\u0085";
      i += 1;
    } else if (shown.substr(i, 3) == "\xE2\x80\xA8" || shown.substr(i, 3) == "\xE2\x80\xA9") {  // U+2028, U+2029
      out += shown[i + 2] == '\xA8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  if (end < text.size()) out += "…";
  return out;
}

// " (N such lines suppressed before this)" after a rate-limited log line; "" when none were.
inline std::string suppressed_note(uint64_t suppressed) {
  return suppressed == 0 ? std::string() : fmt::format(" ({} such lines suppressed before this)", suppressed);
}

}  // namespace darkbloom::coordinator
