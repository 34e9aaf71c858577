#include "base/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <stdexcept>

#include "base/utf8.h"

namespace darkbloom::unicode {

bool is_letter(char32_t cp) {
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0;
}

bool is_number(char32_t cp) {
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0;
}

bool is_whitespace(char32_t cp) {
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE) != 0;
}

std::string nfc(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw std::runtime_error("ICU NFC normalizer unavailable");
  const std::string clean = utf8::sanitize(text);
  const icu::UnicodeString source = icu::UnicodeString::fromUTF8(clean);
  if (normalizer->isNormalized(source, status) && U_SUCCESS(status)) return clean;
  status = U_ZERO_ERROR;
  const icu::UnicodeString normalized = normalizer->normalize(source, status);
  if (U_FAILURE(status)) throw std::runtime_error("ICU NFC normalization failed");
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

}  // namespace darkbloom::unicode
