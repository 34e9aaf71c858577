// Public-key authenticated encryption between the coordinator and a provider: libsodium
// crypto_box (X25519 key agreement, XSalsa20-Poly1305). A sealed message on the wire is
// nonce (24 bytes) ‖ MAC + ciphertext. Nothing here knows JSON; proto carries the bytes.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::crypto {

inline constexpr size_t kPublicKeyBytes = 32;
inline constexpr size_t kNonceBytes = 24;
inline constexpr size_t kMacBytes = 16;

using PublicKey = std::array<uint8_t, kPublicKeyBytes>;

// Must be called once before any other function here (idempotent, thread-safe).
void initialize();

class KeyPair {
 public:
  static KeyPair generate();
  const PublicKey& public_key() const { return public_key_; }
  std::span<const uint8_t> secret_key() const { return secret_key_.span(); }

 private:
  PublicKey public_key_{};
  SecureBytes secret_key_;
};

// nonce ‖ box of `message` from `sender` to `recipient`; the nonce is random.
std::vector<uint8_t> seal(std::span<const uint8_t> message, const PublicKey& recipient, const KeyPair& sender);
// Opens what `sender` sealed for `recipient`; an error for anything forged, truncated or
// sealed by another key.
Result<SecureBytes> open(std::span<const uint8_t> sealed, const PublicKey& sender, const KeyPair& recipient);

// A precomputed shared key for many messages between one pair of keys (one per request: each
// streamed chunk is sealed and opened without repeating the X25519 step).
class Channel {
 public:
  Channel(const PublicKey& peer, const KeyPair& own);
  std::vector<uint8_t> seal(std::span<const uint8_t> message) const;
  Result<SecureBytes> open(std::span<const uint8_t> sealed) const;

 private:
  SecureBytes shared_key_;
};

Result<PublicKey> public_key_from(std::span<const uint8_t> bytes);
// False for keys X25519 cannot agree with (the all-zero key and other small-order points):
// sealing to them fails, so such a key is refused when a provider registers it.
bool usable_public_key(const PublicKey& key);

}  // namespace darkbloom::crypto
