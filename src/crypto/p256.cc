#include "crypto/p256.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <utility>

namespace darkbloom::crypto {

void PkeyFree::operator()(EVP_PKEY* key) const {
  EVP_PKEY_free(key);
}

namespace {

// An OpenSSL object freed by its own free function when the holder goes out of scope.
template <auto free_fn>
struct OpenSslFree {
  template <class T>
  void operator()(T* object) const {
    free_fn(object);
  }
};
template <class T, auto free_fn>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree<free_fn>>;

using MdCtxPtr = OpenSslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using PkeyCtxPtr = OpenSslPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using BioPtr = OpenSslPtr<BIO, BIO_free>;
using ParamBldPtr = OpenSslPtr<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using ParamPtr = OpenSslPtr<OSSL_PARAM, OSSL_PARAM_free>;
using EcdsaSigPtr = OpenSslPtr<ECDSA_SIG, ECDSA_SIG_free>;
using BignumPtr = OpenSslPtr<BIGNUM, BN_free>;

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  return code == 0 ? "unknown OpenSSL error" : buffer;
}

PkeyPtr public_pkey(std::span<const uint8_t> xy) {
  std::vector<uint8_t> point(1 + xy.size());
  point[0] = 0x04;
  std::copy(xy.begin(), xy.end(), point.begin() + 1);
  ParamBldPtr build(OSSL_PARAM_BLD_new());
  if (!build || !OSSL_PARAM_BLD_push_utf8_string(build.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(build.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size())) {
    return nullptr;
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(build.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    return nullptr;
  }
  return PkeyPtr(key);
}

std::vector<uint8_t> raw_public_key_of(const EVP_PKEY* key) {
  uint8_t point[65];
  size_t length = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &length) != 1 ||
      length != 65) {
    throw std::runtime_error("cannot read the P-256 public key: " + openssl_error());
  }
  return std::vector<uint8_t>(point + 1, point + 65);
}

bool is_p256(const EVP_PKEY* key) {
  char group[64] = {};
  size_t length = 0;
  return EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length) == 1 &&
         std::string(group) == "prime256v1";
}

}  // namespace

Result<bool> p256_verify(std::span<const uint8_t> public_key_xy, std::span<const uint8_t> message,
                         std::span<const uint8_t> der_signature) {
  if (public_key_xy.size() != kP256PublicKeyBytes) {
    return make_error(Errc::bad_format, "a P-256 public key has 64 bytes (X and Y)");
  }
  auto key = public_pkey(public_key_xy);
  if (!key) return make_error(Errc::bad_format, "not a point on P-256");
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1) {
    return make_error(Errc::internal, "cannot start verification: " + openssl_error());
  }
  const int rc =
      EVP_DigestVerify(ctx.get(), der_signature.data(), der_signature.size(), message.data(), message.size());
  ERR_clear_error();
  if (rc == 1) return true;
  if (rc == 0) return false;
  // -1: the signature is not even a DER ECDSA signature.
  return make_error(Errc::bad_format, "the signature is not a DER ECDSA signature");
}

std::vector<uint8_t> der_signature_from_rs(std::span<const uint8_t> r, std::span<const uint8_t> s) {
  EcdsaSigPtr signature(ECDSA_SIG_new());
  BignumPtr big_r(BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr));
  BignumPtr big_s(BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr));
  if (!signature || !big_r || !big_s || ECDSA_SIG_set0(signature.get(), big_r.get(), big_s.get()) != 1) {
    throw std::runtime_error("cannot build an ECDSA signature: " + openssl_error());
  }
  // The signature owns r and s now.
  static_cast<void>(big_r.release());
  static_cast<void>(big_s.release());
  const int length = i2d_ECDSA_SIG(signature.get(), nullptr);
  if (length <= 0) throw std::runtime_error("cannot encode an ECDSA signature: " + openssl_error());
  std::vector<uint8_t> der(static_cast<size_t>(length));
  uint8_t* out = der.data();
  i2d_ECDSA_SIG(signature.get(), &out);
  return der;
}

Result<std::pair<std::array<uint8_t, 32>, std::array<uint8_t, 32>>> rs_from_der_signature(
    std::span<const uint8_t> der) {
  const uint8_t* in = der.data();
  EcdsaSigPtr signature(d2i_ECDSA_SIG(nullptr, &in, static_cast<long>(der.size())));
  ERR_clear_error();
  if (!signature || in != der.data() + der.size()) return make_error(Errc::bad_format, "not a DER ECDSA signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(signature.get(), &r, &s);
  std::pair<std::array<uint8_t, 32>, std::array<uint8_t, 32>> out;
  if (BN_bn2binpad(r, out.first.data(), 32) != 32 || BN_bn2binpad(s, out.second.data(), 32) != 32) {
    return make_error(Errc::bad_format, "ECDSA signature values are larger than P-256 allows");
  }
  return out;
}

Result<std::vector<uint8_t>> p256_public_key_from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return make_error(Errc::bad_format, "not a PEM public key");
  if (!is_p256(key.get())) return make_error(Errc::unsupported, "the public key is not an EC P-256 key");
  return raw_public_key_of(key.get());
}

Result<std::vector<uint8_t>> p256_raw_public_key(std::span<const uint8_t> point) {
  if (point.size() == 65 && point[0] == 0x04) return std::vector<uint8_t>(point.begin() + 1, point.end());
  if (point.size() == 64) return std::vector<uint8_t>(point.begin(), point.end());
  return make_error(Errc::bad_format, "not an uncompressed P-256 point");
}

std::string p256_public_key_pem(std::span<const uint8_t> public_key_xy) {
  auto key = public_pkey(public_key_xy);
  if (!key) return {};
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key.get());
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(length));
}

P256Key::P256Key(PkeyPtr key) : key_(std::move(key)), public_key_(raw_public_key_of(key_.get())) {}

P256Key P256Key::generate() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) throw std::runtime_error("P-256 key generation failed: " + openssl_error());
  return P256Key(std::move(key));
}

Result<P256Key> P256Key::load_pem(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return make_error(Errc::not_found, path + ": cannot open");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return make_error(Errc::bad_format, path + ": not a PEM private key");
  if (!is_p256(key.get())) return make_error(Errc::unsupported, path + ": the key is not an EC P-256 key");
  return P256Key(std::move(key));
}

Result<P256Key> P256Key::from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return make_error(Errc::internal, "cannot read a PEM key from memory");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return make_error(Errc::bad_format, "not a PEM private key");
  if (!is_p256(key.get())) return make_error(Errc::unsupported, "the key is not an EC P-256 key");
  return P256Key(std::move(key));
}

std::vector<uint8_t> P256Key::sign(std::span<const uint8_t> message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t length = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &length, message.data(), message.size()) != 1) {
    throw std::runtime_error("ECDSA signing failed: " + openssl_error());
  }
  std::vector<uint8_t> signature(length);
  if (EVP_DigestSign(ctx.get(), signature.data(), &length, message.data(), message.size()) != 1) {
    throw std::runtime_error("ECDSA signing failed: " + openssl_error());
  }
  signature.resize(length);
  return signature;
}

}  // namespace darkbloom::crypto
