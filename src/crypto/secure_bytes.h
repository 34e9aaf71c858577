// Byte buffers for secrets and decrypted plaintext: wiped with sodium_memzero when destroyed or
// cleared, so key material and prompts do not linger in freed memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace darkbloom::crypto {

class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(size_t size) : bytes_(size) {}
  SecureBytes(std::span<const uint8_t> bytes) : bytes_(bytes.begin(), bytes.end()) {}  // NOLINT: implicit copy-in
  SecureBytes(const SecureBytes&) = default;
  SecureBytes& operator=(const SecureBytes& other);
  SecureBytes(SecureBytes&& other) noexcept = default;
  SecureBytes& operator=(SecureBytes&& other) noexcept;
  ~SecureBytes() { wipe(); }

  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  void resize(size_t size);
  std::span<const uint8_t> span() const { return bytes_; }
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()}; }
  void wipe();

 private:
  std::vector<uint8_t> bytes_;
};

// Overwrites memory the compiler cannot prove dead (for std::string buffers and the like).
void wipe_memory(void* data, size_t size);

}  // namespace darkbloom::crypto
