// SHA-256 (libsodium) of memory and of files, the latter streamed so a model of many gigabytes
// is hashed without loading it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace darkbloom::crypto {

using Sha256 = std::array<uint8_t, 32>;

Sha256 sha256(std::span<const uint8_t> bytes);
std::string sha256_hex(std::span<const uint8_t> bytes);
Result<Sha256> sha256_file(const std::string& path);
// A digest from 64 hex digits; nullopt for anything else.
std::optional<Sha256> sha256_from_hex(std::string_view hex);

// Constant-time comparison of equal-length secrets.
bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b);

// `n` random bytes from the OS generator.
std::vector<uint8_t> random_bytes(size_t n);

}  // namespace darkbloom::crypto
