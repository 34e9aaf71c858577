#include "crypto/sealed_box.h"

#include <sodium.h>

#include <stdexcept>

namespace darkbloom::crypto {

static_assert(crypto_box_PUBLICKEYBYTES == kPublicKeyBytes);
static_assert(crypto_box_NONCEBYTES == kNonceBytes);
static_assert(crypto_box_MACBYTES == kMacBytes);

void initialize() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

KeyPair KeyPair::generate() {
  KeyPair pair;
  pair.secret_key_.resize(crypto_box_SECRETKEYBYTES);
  crypto_box_keypair(pair.public_key_.data(), pair.secret_key_.data());
  return pair;
}

std::vector<uint8_t> seal(std::span<const uint8_t> message, const PublicKey& recipient, const KeyPair& sender) {
  std::vector<uint8_t> out(kNonceBytes + kMacBytes + message.size());
  randombytes_buf(out.data(), kNonceBytes);
  if (crypto_box_easy(out.data() + kNonceBytes, message.data(), message.size(), out.data(), recipient.data(),
                      sender.secret_key().data()) != 0) {
    throw std::runtime_error("crypto_box_easy failed");  // only on a weak (all-zero) peer key
  }
  return out;
}

Result<SecureBytes> open(std::span<const uint8_t> sealed, const PublicKey& sender, const KeyPair& recipient) {
  if (sealed.size() < kNonceBytes + kMacBytes) return make_error(Errc::bad_format, "sealed message is too short");
  SecureBytes plain(sealed.size() - kNonceBytes - kMacBytes);
  if (crypto_box_open_easy(plain.data(), sealed.data() + kNonceBytes, sealed.size() - kNonceBytes, sealed.data(),
                           sender.data(), recipient.secret_key().data()) != 0) {
    return make_error(Errc::bad_format, "sealed message does not open (forged, corrupted or for another key)");
  }
  return plain;
}

Channel::Channel(const PublicKey& peer, const KeyPair& own) : shared_key_(crypto_box_BEFORENMBYTES) {
  if (crypto_box_beforenm(shared_key_.data(), peer.data(), own.secret_key().data()) != 0) {
    throw std::invalid_argument("peer public key is weak");
  }
}

std::vector<uint8_t> Channel::seal(std::span<const uint8_t> message) const {
  std::vector<uint8_t> out(kNonceBytes + kMacBytes + message.size());
  randombytes_buf(out.data(), kNonceBytes);
  crypto_box_easy_afternm(out.data() + kNonceBytes, message.data(), message.size(), out.data(), shared_key_.data());
  return out;
}

Result<SecureBytes> Channel::open(std::span<const uint8_t> sealed) const {
  if (sealed.size() < kNonceBytes + kMacBytes) return make_error(Errc::bad_format, "sealed message is too short");
  SecureBytes plain(sealed.size() - kNonceBytes - kMacBytes);
  if (crypto_box_open_easy_afternm(plain.data(), sealed.data() + kNonceBytes, sealed.size() - kNonceBytes,
                                   sealed.data(), shared_key_.data()) != 0) {
    return make_error(Errc::bad_format, "sealed message does not open (forged, corrupted or for another key)");
  }
  return plain;
}

bool usable_public_key(const PublicKey& key) {
  const KeyPair probe = KeyPair::generate();
  SecureBytes shared(crypto_box_BEFORENMBYTES);
  return crypto_box_beforenm(shared.data(), key.data(), probe.secret_key().data()) == 0;
}

Result<PublicKey> public_key_from(std::span<const uint8_t> bytes) {
  if (bytes.size() != kPublicKeyBytes) return make_error(Errc::bad_format, "an X25519 public key has 32 bytes");
  PublicKey key;
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

}  // namespace darkbloom::crypto
