// The provider's identity key: AttestationSigner and its backends. `tpm2` keeps a persistent
// P-256 key in a TPM 2.0 whose use is gated by a policy on measured platform state, `pkcs11`
// keeps a non-extractable key in a token behind a PIN, `ephemeral` makes a software key per
// process. `auto` tries them in that order; only "key not found" creates a key, any other
// failure is named in `degraded_reason` and the next backend is tried.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace darkbloom::attest {

struct SignerInfo {
  std::string backend;          // "tpm2" | "pkcs11" | "ephemeral"
  bool persistent = false;      // the key survives a restart
  bool hardware_bound = false;  // the private half cannot leave a device
  std::string key_ref;          // "tpm2:0x8101d000", "pkcs11:token=...;object=...", "ephemeral"
  std::string degraded_reason;  // why a preferred backend was not used; empty when none
};

// What a TPM-held key shows a verifier for the `hardware` level (attest/tpm2_credential.h).
struct TpmEvidence {
  std::vector<uint8_t> ek_certificate;  // DER, from NV index 0x01C00002 (RSA 2048 EK)
  std::vector<uint8_t> key_public;      // the identity key's TPMT_PUBLIC, marshalled as the TPM does
};

class AttestationSigner {
 public:
  virtual ~AttestationSigner() = default;
  // P-256 public key, raw X ‖ Y.
  virtual const std::vector<uint8_t>& public_key() const = 0;
  // DER ECDSA over SHA-256(message).
  virtual Result<std::vector<uint8_t>> sign(std::span<const uint8_t> message) = 0;
  // The tpm2 backend's evidence; Errc::unsupported for the others (and for a TPM without an EK
  // certificate, with the reason).
  virtual Result<TpmEvidence> tpm_evidence() { return make_error(Errc::unsupported, "the key is not in a TPM"); }
  // TPM2_ActivateCredential with the TPM's EK and this key (both outputs of MakeCredential,
  // marshalled): the credential, which only this TPM can recover. Errc::unsupported off a TPM.
  virtual Result<std::vector<uint8_t>> activate_credential(std::span<const uint8_t> credential_blob,
                                                           std::span<const uint8_t> encrypted_secret) {
    (void)credential_blob;
    (void)encrypted_secret;
    return make_error(Errc::unsupported, "the key is not in a TPM");
  }

  SignerInfo info() const {
    SignerInfo info = describe();
    info.degraded_reason = degraded_reason_;
    return info;
  }
  void set_degraded_reason(std::string reason) { degraded_reason_ = std::move(reason); }

 protected:
  virtual SignerInfo describe() const = 0;

 private:
  std::string degraded_reason_;
};

struct Tpm2Config {
  // TCTI to reach the TPM, e.g. "device:/dev/tpmrm0" or "swtpm:path=/run/x/tpm.sock". Empty: the
  // kernel's resource manager /dev/tpmrm0 when it exists. Never the library's default search,
  // which may silently reach a stray simulator.
  std::string tcti;
  uint32_t handle = 0x8101D000;  // persistent handle (0x81010001/2 are the usual EK handles)
  // "authorize": a PolicyAuthorize policy under `release_key` (production);
  // "pcr": PolicyPCR on `pcr` at creation time; "none": usable with an empty password (tests).
  std::string policy = "authorize";
  uint32_t pcr = 16;
  // PCRs 16 and 23 can be reset and extended by any local process, so a policy on them binds
  // nothing; refused unless this is set (tests stand them in for a real measurement).
  bool allow_resettable_pcr = false;
  std::string release_key;  // PEM public key of the release key (policy authorize)
  // Approval files PREFIX.policy and PREFIX.sig from `darkbloom keys approve`, and the optional
  // PREFIX.activate.policy and .sig, which let credential activation use the key's ADMIN role.
  std::string approval;
  bool create_if_missing = true;  // false: "not found" is an error (keys show, rotate)
};

struct Pkcs11Config {
  std::string module;  // e.g. /usr/lib/softhsm/libsofthsm2.so
  std::string token;   // token label
  std::string pin;     // user PIN (from a file or DARKBLOOM_PKCS11_PIN)
  std::string label = "darkbloom-provider-v1";
  bool create_if_missing = true;
};

struct SignerConfig {
  std::string backend = "auto";  // auto | tpm2 | pkcs11 | ephemeral
  Tpm2Config tpm2;
  Pkcs11Config pkcs11;
};

// The signer for the configuration. A backend that fails is named with its cause in the log and
// in `degraded_reason`, and the next is tried (`auto`: tpm2, pkcs11, ephemeral; an explicit
// backend: itself, then ephemeral). Only an unknown backend name is an error.
Result<std::unique_ptr<AttestationSigner>> make_signer(const SignerConfig& config);
// The configured backend alone, without fallback (for `darkbloom keys`).
Result<std::unique_ptr<AttestationSigner>> make_exact_signer(const SignerConfig& config);

std::unique_ptr<AttestationSigner> make_ephemeral_signer(std::string degraded_reason = {});
// Finds the key, or creates it when (and only when) it is not found.
Result<std::unique_ptr<AttestationSigner>> make_tpm2_signer(const Tpm2Config& config);
Result<std::unique_ptr<AttestationSigner>> make_pkcs11_signer(const Pkcs11Config& config);

// A key rotation: a new key takes the configured handle or label, and the old key, before it is
// destroyed, signs `statement` (canonical JSON of a RotationStatement) vouching for the new one.
struct Rotation {
  std::vector<uint8_t> old_public_key;
  std::vector<uint8_t> new_public_key;
  std::string statement;
  std::vector<uint8_t> signature;  // DER ECDSA by the old key over `statement`
};

// Signs the statement that `old_key` hands over to `new_public_key` (used by the backends).
using SignFunction = std::function<Result<std::vector<uint8_t>>(std::span<const uint8_t>)>;
Result<Rotation> sign_rotation(std::vector<uint8_t> old_public_key, std::vector<uint8_t> new_public_key,
                               const SignFunction& sign_with_old);

// Rotates the key of backend "tpm2" or "pkcs11" (ephemeral keys are new at every start).
Result<Rotation> rotate_key(const SignerConfig& config);
Result<Rotation> rotate_tpm2_key(const Tpm2Config& config);
Result<Rotation> rotate_pkcs11_key(const Pkcs11Config& config);

// Removes the persistent key of a backend (for `darkbloom keys delete` and rotation).
Status delete_tpm2_key(const Tpm2Config& config);
Status delete_pkcs11_key(const Pkcs11Config& config);

}  // namespace darkbloom::attest
