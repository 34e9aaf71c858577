// Proving that an identity key lives in a genuine TPM, checked in software (the `hardware` trust
// level): the TPM's endorsement-key (EK) certificate chains to a maker's CA, the key's public area
// says it was made inside the TPM, cannot leave it and is used only under the release key's
// PolicyAuthorize, and credential activation shows that the TPM holding that EK also holds an
// object with exactly that public area. TPM 2.0 Library Part 1 ("Credential Protection") and
// Part 3 (TPM2_MakeCredential); tested byte for byte against `tpm2_makecredential -T none`.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "attest/signer.h"
#include "attest/tpm2_policy.h"
#include "base/result.h"

struct x509_store_st;  // OpenSSL's X509_STORE

namespace darkbloom::attest {

// NV index of the RSA 2048 EK certificate (TCG EK Credential Profile).
inline constexpr uint32_t kRsaEkCertificateIndex = 0x01C00002;

// The TPM makers' CA certificates an EK certificate must chain to (roots and intermediates, PEM).
class EkTrustStore {
 public:
  // Every certificate in every file; an empty list, an unreadable file or one without a
  // certificate is an error.
  static Result<EkTrustStore> load(const std::vector<std::string>& pem_files);
  // The certificate's public key (DER SubjectPublicKeyInfo) once its chain verifies at `now`;
  // only an RSA 2048 key is taken (the EK credential activation here supports).
  Result<std::vector<uint8_t>> verify(std::span<const uint8_t> certificate_der,
                                      std::chrono::system_clock::time_point now) const;
  size_t size() const { return count_; }

 private:
  std::shared_ptr<x509_store_st> store_;  // built once; verification only reads it
  size_t count_ = 0;
};

// What the evidence proves once checked: the EK's key, and the Name credential activation binds
// to (0x000B ‖ SHA-256 of the public area).
struct CheckedTpmKey {
  std::vector<uint8_t> ek_public;  // DER SubjectPublicKeyInfo
  std::vector<uint8_t> name;
};

// Checks the evidence: the EK certificate's chain, and that the public area is a P-256 ECDSA
// signing key equal to `attested_key` (X ‖ Y) with fixedTPM, fixedParent, sensitiveDataOrigin,
// neither restricted nor decrypting, adminWithPolicy and no password use, and authPolicy equal to
// `auth_policy`. The error names the first thing wrong.
Result<CheckedTpmKey> check_tpm_evidence(const TpmEvidence& evidence, std::span<const uint8_t> attested_key,
                                         const Digest& auth_policy, const EkTrustStore& trust,
                                         std::chrono::system_clock::time_point now);

// The Name of a marshalled TPMT_PUBLIC: 0x000B ‖ SHA-256(bytes).
std::vector<uint8_t> tpm_name(std::span<const uint8_t> public_area);

// TPM2_MakeCredential in software, for an RSA EK with the default EK template (SHA-256,
// AES-128-CFB): `credential` (at most 32 bytes) sealed so that only ActivateCredential on the TPM
// holding the EK and an object named `name` gives it back. Both outputs are marshalled as the TPM
// takes them: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET. `seed` is for tests (empty: 32 random
// bytes, as it must be).
struct MadeCredential {
  std::vector<uint8_t> credential_blob;
  std::vector<uint8_t> encrypted_secret;
};
Result<MadeCredential> make_credential(std::span<const uint8_t> ek_public, std::span<const uint8_t> credential,
                                       std::span<const uint8_t> name, std::span<const uint8_t> seed = {});

// KDFa of TPM 2.0 Part 1 (SP 800-108 counter mode, HMAC-SHA-256): `bits` / 8 bytes.
std::vector<uint8_t> kdfa_sha256(std::span<const uint8_t> key, std::string_view label,
                                 std::span<const uint8_t> context_u, std::span<const uint8_t> context_v, uint32_t bits);

}  // namespace darkbloom::attest
