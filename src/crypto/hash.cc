#include "crypto/hash.h"

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <vector>

#include "base/encoding.h"
#include "base/file.h"

namespace darkbloom::crypto {

Sha256 sha256(std::span<const uint8_t> bytes) {
  Sha256 digest;
  crypto_hash_sha256(digest.data(), bytes.data(), bytes.size());
  return digest;
}

std::string sha256_hex(std::span<const uint8_t> bytes) {
  return hex_encode(sha256(bytes));
}

std::optional<Sha256> sha256_from_hex(std::string_view hex) {
  auto bytes = hex_decode(hex);
  if (!bytes || bytes->size() != Sha256{}.size()) return std::nullopt;
  Sha256 digest;
  std::copy(bytes->begin(), bytes->end(), digest.begin());
  return digest;
}

Result<Sha256> sha256_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return make_error(errno == ENOENT ? Errc::not_found : Errc::io_error, path + ": " + errno_message(errno));
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  std::vector<uint8_t> buffer(1 << 20);
  for (;;) {
    const size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    if (n > 0) crypto_hash_sha256_update(&state, buffer.data(), n);
    if (n < buffer.size()) {
      if (std::ferror(file.get())) return make_error(Errc::io_error, path + ": read failed");
      break;
    }
  }
  Sha256 digest;
  crypto_hash_sha256_final(&state, digest.data());
  return digest;
}

bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::vector<uint8_t> random_bytes(size_t n) {
  std::vector<uint8_t> out(n);
  randombytes_buf(out.data(), n);
  return out;
}

}  // namespace darkbloom::crypto
