// ECDSA on P-256 with SHA-256 (OpenSSL 3): verification for the coordinator, a software key for
// the ephemeral backend and release signing, and the encodings the backends convert between.
// Public keys travel as raw X‖Y (64 bytes); signatures as DER SEQUENCE{r, s}.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, declared here so that this header needs no OpenSSL headers

namespace darkbloom::crypto {

inline constexpr size_t kP256PublicKeyBytes = 64;  // X ‖ Y

// Verifies a DER signature over SHA-256(message). A malformed key or signature is an error, a
// signature that does not match is `false`.
Result<bool> p256_verify(std::span<const uint8_t> public_key_xy, std::span<const uint8_t> message,
                         std::span<const uint8_t> der_signature);

// DER SEQUENCE{INTEGER r, INTEGER s} from 32-byte big-endian r and s (TPM and PKCS#11 output).
std::vector<uint8_t> der_signature_from_rs(std::span<const uint8_t> r, std::span<const uint8_t> s);

// 32-byte big-endian r and s of a DER signature (what a TPM's VerifySignature takes).
Result<std::pair<std::array<uint8_t, 32>, std::array<uint8_t, 32>>> rs_from_der_signature(std::span<const uint8_t> der);

// Raw X‖Y of a PEM SubjectPublicKeyInfo holding a P-256 key.
Result<std::vector<uint8_t>> p256_public_key_from_pem(std::string_view pem);

// Raw X‖Y from 04‖X‖Y (65 bytes) or X‖Y (64 bytes).
Result<std::vector<uint8_t>> p256_raw_public_key(std::span<const uint8_t> point);

// A PEM SubjectPublicKeyInfo for a raw key (what `openssl dgst -verify` takes).
std::string p256_public_key_pem(std::span<const uint8_t> public_key_xy);

// Owns an OpenSSL EVP_PKEY. Here rather than with the other OpenSSL holders in p256.cc because
// P256Key keeps one.
struct PkeyFree {
  void operator()(evp_pkey_st* key) const;
};
using PkeyPtr = std::unique_ptr<evp_pkey_st, PkeyFree>;

// A P-256 private key held by OpenSSL in process memory; movable, not copyable. Nothing hands the
// private key out: a copy in a std::string could not be wiped.
class P256Key {
 public:
  static P256Key generate();
  // Reads a PEM private key file (EC P-256 only).
  static Result<P256Key> load_pem(const std::string& path);
  // The same from the PEM text itself (fixed keys of tests and fuzzers).
  static Result<P256Key> from_pem(std::string_view pem);

  const std::vector<uint8_t>& public_key() const { return public_key_; }  // X ‖ Y
  // DER ECDSA signature over SHA-256(message).
  std::vector<uint8_t> sign(std::span<const uint8_t> message) const;

 private:
  explicit P256Key(PkeyPtr key);
  PkeyPtr key_;
  std::vector<uint8_t> public_key_;
};

}  // namespace darkbloom::crypto
