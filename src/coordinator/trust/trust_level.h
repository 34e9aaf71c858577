// The trust levels a provider can hold (ARCHITECTURE.md): `none`, `self_signed`, `hardware`.
#pragma once

#include <optional>
#include <string_view>

namespace darkbloom::coordinator {

enum class TrustLevel { none = 0, self_signed = 1, hardware = 2 };
const char* trust_level_name(TrustLevel level);
std::optional<TrustLevel> parse_trust_level(std::string_view text);

}  // namespace darkbloom::coordinator
