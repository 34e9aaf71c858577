#include "attest/tpm2_credential.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstring>

#include "base/file.h"
#include "crypto/hash.h"

namespace darkbloom::attest {
namespace {

template <class T, void (*Free)(T*)>
struct OpenSslFree {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, OpenSslFree<X509, X509_free>>;
using StoreContextPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree<X509_STORE_CTX, X509_STORE_CTX_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY, EVP_PKEY_free>>;
using KeyContextPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslFree<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using CipherContextPtr = std::unique_ptr<EVP_CIPHER_CTX, OpenSslFree<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree<BIO, BIO_free_all>>;

void append_u16(std::vector<uint8_t>* out, size_t v) {
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

std::vector<uint8_t> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &length) ==
      nullptr) {
    throw std::runtime_error("HMAC-SHA-256 failed");
  }
  out.resize(length);
  return out;
}

X509Ptr parse_der(std::span<const uint8_t> der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::string ssl_error() {
  char buffer[256] = {};
  ERR_error_string_n(ERR_get_error(), buffer, sizeof(buffer));
  return buffer;
}

// Leaves OpenSSL's per-thread error queue empty on every way out: these functions see a peer's
// bytes on the coordinator's network thread, which other OpenSSL users (TLS) share.
struct ClearErrors {
  ClearErrors() = default;
  ClearErrors(const ClearErrors&) = delete;
  ClearErrors& operator=(const ClearErrors&) = delete;
  ~ClearErrors() { ERR_clear_error(); }
};

// TPMA_OBJECT bits a provider's identity key must have, and must not have.
constexpr TPMA_OBJECT kRequired = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                  TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_ADMINWITHPOLICY;
constexpr TPMA_OBJECT kForbidden = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_USERWITHAUTH;

}  // namespace

Result<EkTrustStore> EkTrustStore::load(const std::vector<std::string>& pem_files) {
  if (pem_files.empty()) return make_error(Errc::invalid_argument, "no EK CA certificate files given");
  const ClearErrors clear;
  EkTrustStore trust;
  trust.store_ = std::shared_ptr<X509_STORE>(X509_STORE_new(), X509_STORE_free);
  if (!trust.store_) return make_error(Errc::internal, "cannot make a certificate store");
  for (const std::string& file : pem_files) {
    auto text = read_file(file);
    if (!text) return text.error();
    BioPtr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
    size_t found = 0;
    while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
      // A certificate given twice is harmless (OpenSSL may report it as an error).
      if (X509_STORE_add_cert(trust.store_.get(), cert.get()) != 1) ERR_clear_error();
      ++found;
    }
    ERR_clear_error();  // the end of the file reads as an error
    if (found == 0) return make_error(Errc::bad_format, file + ": no PEM certificate in it");
    trust.count_ += found;
  }
  return trust;
}

Result<std::vector<uint8_t>> EkTrustStore::verify(std::span<const uint8_t> certificate_der,
                                                  std::chrono::system_clock::time_point now) const {
  const ClearErrors clear;
  X509Ptr cert = parse_der(certificate_der);
  if (!cert) return make_error(Errc::bad_format, "the EK certificate is not DER X.509");
  if (!store_) return make_error(Errc::internal, "no CA certificates loaded");
  StoreContextPtr context(X509_STORE_CTX_new());
  if (!context || X509_STORE_CTX_init(context.get(), store_.get(), cert.get(), nullptr) != 1) {
    return make_error(Errc::internal, "cannot set up certificate verification: " + ssl_error());
  }
  X509_STORE_CTX_set_time(context.get(), 0, std::chrono::system_clock::to_time_t(now));
  if (X509_verify_cert(context.get()) != 1) {
    const int code = X509_STORE_CTX_get_error(context.get());
    return make_error(Errc::permission_denied, fmt::format("the EK certificate does not chain to --tpm-ek-ca: {}",
                                                           X509_verify_cert_error_string(code)));
  }
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (key == nullptr || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) != 2048) {
    return make_error(Errc::unsupported, "the EK certificate's key is not RSA 2048");
  }
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(key, &der);
  if (length <= 0) return make_error(Errc::internal, "cannot encode the EK public key");
  std::vector<uint8_t> out(der, der + length);
  OPENSSL_free(der);
  return out;
}

std::vector<uint8_t> tpm_name(std::span<const uint8_t> public_area) {
  std::vector<uint8_t> name{0x00, 0x0B};  // TPM_ALG_SHA256
  const crypto::Sha256 digest = crypto::sha256(public_area);
  name.insert(name.end(), digest.begin(), digest.end());
  return name;
}

Result<CheckedTpmKey> check_tpm_evidence(const TpmEvidence& evidence, std::span<const uint8_t> attested_key,
                                         const Digest& auth_policy, const EkTrustStore& trust,
                                         std::chrono::system_clock::time_point now) {
  TPMT_PUBLIC area{};
  size_t offset = 0;
  if (Tss2_MU_TPMT_PUBLIC_Unmarshal(evidence.key_public.data(), evidence.key_public.size(), &offset, &area) !=
          TSS2_RC_SUCCESS ||
      offset != evidence.key_public.size()) {
    return make_error(Errc::bad_format, "the key's public area is not a marshalled TPMT_PUBLIC");
  }
  const TPMS_ECC_PARMS& ecc = area.parameters.eccDetail;
  if (area.type != TPM2_ALG_ECC || ecc.curveID != TPM2_ECC_NIST_P256 || area.nameAlg != TPM2_ALG_SHA256 ||
      ecc.scheme.scheme != TPM2_ALG_ECDSA) {
    return make_error(Errc::permission_denied, "the key's public area is not a P-256 ECDSA key named with SHA-256");
  }
  std::vector<uint8_t> point(area.unique.ecc.x.buffer, area.unique.ecc.x.buffer + area.unique.ecc.x.size);
  point.insert(point.end(), area.unique.ecc.y.buffer, area.unique.ecc.y.buffer + area.unique.ecc.y.size);
  if (point.size() != attested_key.size() || !std::equal(point.begin(), point.end(), attested_key.begin())) {
    return make_error(Errc::permission_denied, "the TPM public area is not the attested key");
  }
  if ((area.objectAttributes & kRequired) != kRequired || (area.objectAttributes & kForbidden) != 0) {
    return make_error(Errc::permission_denied,
                      fmt::format("the key's attributes 0x{:08x} are not fixedTPM, fixedParent, sensitiveDataOrigin, "
                                  "sign-only, adminWithPolicy without password use",
                                  area.objectAttributes));
  }
  if (area.authPolicy.size != auth_policy.size() ||
      std::memcmp(area.authPolicy.buffer, auth_policy.data(), auth_policy.size()) != 0) {
    return make_error(Errc::permission_denied,
                      "the key's authPolicy is not PolicyAuthorize of the coordinator's --tpm-release-key");
  }
  auto ek_public = trust.verify(evidence.ek_certificate, now);
  if (!ek_public) return ek_public.error();
  return CheckedTpmKey{std::move(*ek_public), tpm_name(evidence.key_public)};
}

std::vector<uint8_t> kdfa_sha256(std::span<const uint8_t> key, std::string_view label,
                                 std::span<const uint8_t> context_u, std::span<const uint8_t> context_v,
                                 uint32_t bits) {
  std::vector<uint8_t> out;
  const size_t bytes = (bits + 7) / 8;
  // [counter]32 ‖ label ‖ 0x00 (the label is a NUL-terminated string) ‖ contextU ‖ contextV ‖ [bits]32,
  // written into a buffer of its final size (GCC 12 misreads a growing vector here).
  std::vector<uint8_t> input(4 + label.size() + 1 + context_u.size() + context_v.size() + 4, 0);
  const auto put_u32 = [&input](size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i) input[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  };
  std::copy(label.begin(), label.end(), input.begin() + 4);
  std::copy(context_u.begin(), context_u.end(), input.begin() + static_cast<ptrdiff_t>(5 + label.size()));
  std::copy(context_v.begin(), context_v.end(),
            input.begin() + static_cast<ptrdiff_t>(5 + label.size() + context_u.size()));
  put_u32(input.size() - 4, bits);
  for (uint32_t counter = 1; out.size() < bytes; ++counter) {
    put_u32(0, counter);
    const std::vector<uint8_t> block = hmac_sha256(key, input);
    out.insert(out.end(), block.begin(), block.end());
  }
  out.resize(bytes);
  return out;
}

Result<MadeCredential> make_credential(std::span<const uint8_t> ek_public, std::span<const uint8_t> credential,
                                       std::span<const uint8_t> name, std::span<const uint8_t> given_seed) {
  const ClearErrors clear;
  if (credential.empty() || credential.size() > 32) {
    return make_error(Errc::invalid_argument, "a credential is 1 to 32 bytes (a SHA-256 digest's size)");
  }
  const unsigned char* p = ek_public.data();
  KeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(ek_public.size())));
  if (!key || EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) {
    return make_error(Errc::bad_format, "the EK public key is not an RSA SubjectPublicKeyInfo");
  }
  // The seed: as many bytes as the EK's name algorithm's digest.
  std::vector<uint8_t> seed(given_seed.begin(), given_seed.end());
  if (seed.empty()) seed = crypto::random_bytes(32);
  if (seed.size() != 32) return make_error(Errc::invalid_argument, "the seed is 32 bytes");

  // RSA-OAEP(SHA-256) of the seed to the EK, label "IDENTITY" with its NUL.
  KeyContextPtr context(EVP_PKEY_CTX_new(key.get(), nullptr));
  static constexpr char kLabel[] = "IDENTITY";
  auto* label = static_cast<unsigned char*>(OPENSSL_memdup(kLabel, sizeof(kLabel)));
  size_t encrypted_size = 0;
  if (!context || EVP_PKEY_encrypt_init(context.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(context.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(context.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(context.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(context.get(), label, sizeof(kLabel)) != 1) {
    OPENSSL_free(label);
    return make_error(Errc::internal, "cannot set up RSA-OAEP: " + ssl_error());
  }
  if (EVP_PKEY_encrypt(context.get(), nullptr, &encrypted_size, seed.data(), seed.size()) != 1) {
    return make_error(Errc::internal, "RSA-OAEP: " + ssl_error());
  }
  std::vector<uint8_t> encrypted(encrypted_size);
  if (EVP_PKEY_encrypt(context.get(), encrypted.data(), &encrypted_size, seed.data(), seed.size()) != 1) {
    return make_error(Errc::internal, "RSA-OAEP: " + ssl_error());
  }
  encrypted.resize(encrypted_size);

  // The credential as a TPM2B_DIGEST, encrypted with AES-128-CFB under KDFa(seed, "STORAGE", name).
  const std::vector<uint8_t> symmetric_key = kdfa_sha256(seed, "STORAGE", name, {}, 128);
  std::vector<uint8_t> plain;
  append_u16(&plain, credential.size());
  plain.insert(plain.end(), credential.begin(), credential.end());
  std::vector<uint8_t> enc_identity(plain.size());
  CipherContextPtr cipher(EVP_CIPHER_CTX_new());
  const uint8_t iv[16] = {};
  int written = 0;
  int finished = 0;
  if (!cipher || EVP_EncryptInit_ex(cipher.get(), EVP_aes_128_cfb128(), nullptr, symmetric_key.data(), iv) != 1 ||
      EVP_EncryptUpdate(cipher.get(), enc_identity.data(), &written, plain.data(), static_cast<int>(plain.size())) !=
          1 ||
      EVP_EncryptFinal_ex(cipher.get(), enc_identity.data() + written, &finished) != 1 ||
      static_cast<size_t>(written + finished) != plain.size()) {
    return make_error(Errc::internal, "AES-128-CFB: " + ssl_error());
  }
  // The integrity HMAC over the encrypted identity and the Name.
  const std::vector<uint8_t> hmac_key = kdfa_sha256(seed, "INTEGRITY", {}, {}, 256);
  std::vector<uint8_t> covered = enc_identity;
  covered.insert(covered.end(), name.begin(), name.end());
  const std::vector<uint8_t> outer_hmac = hmac_sha256(hmac_key, covered);

  MadeCredential made;
  std::vector<uint8_t> id_object;
  append_u16(&id_object, outer_hmac.size());
  id_object.insert(id_object.end(), outer_hmac.begin(), outer_hmac.end());
  id_object.insert(id_object.end(), enc_identity.begin(), enc_identity.end());
  append_u16(&made.credential_blob, id_object.size());
  made.credential_blob.insert(made.credential_blob.end(), id_object.begin(), id_object.end());
  append_u16(&made.encrypted_secret, encrypted.size());
  made.encrypted_secret.insert(made.encrypted_secret.end(), encrypted.begin(), encrypted.end());
  return made;
}

}  // namespace darkbloom::attest
