#include "coordinator/trust/trust_level.h"

namespace darkbloom::coordinator {

const char* trust_level_name(TrustLevel level) {
  switch (level) {
    case TrustLevel::none:
      return "none";
    case TrustLevel::self_signed:
      return "self_signed";
    case TrustLevel::hardware:
      return "hardware";
  }
  return "none";
}

std::optional<TrustLevel> parse_trust_level(std::string_view text) {
  if (text == "none") return TrustLevel::none;
  if (text == "self_signed") return TrustLevel::self_signed;
  if (text == "hardware") return TrustLevel::hardware;
  return std::nullopt;
}

}  // namespace darkbloom::coordinator
