#include "base/utf8.h"

namespace darkbloom::utf8 {
namespace {

// Well-formed sequences per the Unicode standard, table 3-7: the allowed range of the second byte
// depends on the lead byte (this rejects overlongs, surrogates and values past U+10FFFF).
struct LeadInfo {
  int length;      // 0 = not a lead byte
  uint8_t lo, hi;  // allowed range of the second byte
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

bool is_continuation(uint8_t b) {
  return (b & 0xC0) == 0x80;
}

// Length of the well-formed sequence at `pos`, 0 if malformed, -1 if truncated by the end of text
// (but valid so far).
int sequence_length(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const LeadInfo info = lead_info(s[pos]);
  if (info.length <= 1) return info.length;
  const size_t available = text.size() - pos;
  for (int i = 1; i < info.length; ++i) {
    if (static_cast<size_t>(i) >= available) return -1;
    const uint8_t b = s[pos + i];
    const bool ok = i == 1 ? (b >= info.lo && b <= info.hi) : is_continuation(b);
    if (!ok) return 0;
  }
  return info.length;
}

}  // namespace

char32_t decode(std::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + *pos;
  const int length = sequence_length(text, *pos);
  if (length <= 0) {
    *pos += 1;
    return kReplacement;
  }
  *pos += static_cast<size_t>(length);
  switch (length) {
    case 1:
      return s[0];
    case 2:
      return (char32_t(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
      return (char32_t(s[0] & 0x0F) << 12) | (char32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
      return (char32_t(s[0] & 0x07) << 18) | (char32_t(s[1] & 0x3F) << 12) | (char32_t(s[2] & 0x3F) << 6) |
             (s[3] & 0x3F);
  }
}

void append(std::string* out, char32_t cp) {
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = kReplacement;
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const int length = sequence_length(text, pos);
    if (length <= 0) return false;
    pos += static_cast<size_t>(length);
  }
  return true;
}

size_t complete_prefix_length(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const int length = sequence_length(bytes, pos);
    if (length < 0) return pos;  // a sequence that more bytes may still complete
    pos += length == 0 ? 1 : static_cast<size_t>(length);
  }
  return pos;
}

std::string sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const int length = sequence_length(bytes, pos);
    if (length <= 0) {
      append(&out, kReplacement);
      pos += 1;
    } else {
      out.append(bytes.substr(pos, static_cast<size_t>(length)));
      pos += static_cast<size_t>(length);
    }
  }
  return out;
}

size_t count_code_points(std::string_view text) {
  size_t count = 0;
  for (size_t pos = 0; pos < text.size(); ++count) decode(text, &pos);
  return count;
}

}  // namespace darkbloom::utf8
