#include "crypto/secure_bytes.h"

#include <sodium.h>

namespace darkbloom::crypto {

void wipe_memory(void* data, size_t size) {
  if (data != nullptr && size > 0) sodium_memzero(data, size);
}

SecureBytes& SecureBytes::operator=(const SecureBytes& other) {
  if (this != &other) {
    wipe();
    bytes_ = other.bytes_;
  }
  return *this;
}

SecureBytes& SecureBytes::operator=(SecureBytes&& other) noexcept {
  if (this != &other) {
    wipe();
    bytes_ = std::move(other.bytes_);
  }
  return *this;
}

void SecureBytes::resize(size_t size) {
  // Growing may reallocate: copy through a wiped temporary rather than leave the old block behind.
  if (size > bytes_.capacity()) {
    std::vector<uint8_t> grown(size);
    std::copy(bytes_.begin(), bytes_.end(), grown.begin());
    wipe();
    bytes_ = std::move(grown);
    return;
  }
  if (size < bytes_.size()) wipe_memory(bytes_.data() + size, bytes_.size() - size);
  bytes_.resize(size);
}

void SecureBytes::wipe() {
  wipe_memory(bytes_.data(), bytes_.size());
}

}  // namespace darkbloom::crypto
