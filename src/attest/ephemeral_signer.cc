#include "attest/attestation_document.h"
#include "attest/signer.h"
#include "base/encoding.h"
#include "base/log.h"
#include "crypto/p256.h"

namespace darkbloom::attest {
namespace {

class EphemeralSigner final : public AttestationSigner {
 public:
  EphemeralSigner() : key_(crypto::P256Key::generate()) {}

  const std::vector<uint8_t>& public_key() const override { return key_.public_key(); }
  Result<std::vector<uint8_t>> sign(std::span<const uint8_t> message) override { return key_.sign(message); }

 protected:
  SignerInfo describe() const override { return {"ephemeral", false, false, "ephemeral", {}}; }

 private:
  crypto::P256Key key_;
};

}  // namespace

std::unique_ptr<AttestationSigner> make_ephemeral_signer(std::string degraded_reason) {
  auto signer = std::make_unique<EphemeralSigner>();
  signer->set_degraded_reason(std::move(degraded_reason));
  return signer;
}

Result<std::unique_ptr<AttestationSigner>> make_exact_signer(const SignerConfig& config) {
  if (config.backend == "ephemeral") return make_ephemeral_signer();
  if (config.backend == "tpm2") return make_tpm2_signer(config.tpm2);
  if (config.backend == "pkcs11") return make_pkcs11_signer(config.pkcs11);
  return make_error(Errc::invalid_argument, "key backend must be tpm2, pkcs11 or ephemeral here");
}

Result<std::unique_ptr<AttestationSigner>> make_signer(const SignerConfig& config) {
  if (config.backend == "ephemeral") return make_ephemeral_signer();
  std::vector<std::string> order;
  if (config.backend == "auto") {
    order = {"tpm2", "pkcs11"};
  } else if (config.backend == "tpm2" || config.backend == "pkcs11") {
    order = {config.backend};
  } else {
    return make_error(Errc::invalid_argument, "key backend must be auto, tpm2, pkcs11 or ephemeral");
  }
  std::string reasons;
  for (const std::string& backend : order) {
    std::string reason;
    if (backend == "pkcs11" && config.pkcs11.module.empty()) {
      reason = "no module configured";
    } else {
      SignerConfig one = config;
      one.backend = backend;
      auto signer = make_exact_signer(one);
      if (signer) {
        (*signer)->set_degraded_reason(reasons);
        if (!reasons.empty()) log::warn("identity key: using {} ({})", backend, reasons);
        return signer;
      }
      reason = signer.error().message;
    }
    reasons += (reasons.empty() ? "" : "; ") + backend + ": " + reason;
  }
  log::warn("identity key: no hardware backend ({}); using an in-memory key, trust at most self_signed", reasons);
  return make_ephemeral_signer(reasons);
}

Result<Rotation> sign_rotation(std::vector<uint8_t> old_public_key, std::vector<uint8_t> new_public_key,
                               const SignFunction& sign_with_old) {
  RotationStatement statement;
  statement.old_public_key = base64_encode(old_public_key);
  statement.new_public_key = base64_encode(new_public_key);
  statement.timestamp = rfc3339(std::chrono::system_clock::now());
  Rotation rotation;
  rotation.statement = canonical_json(statement);
  auto signature = sign_with_old(as_bytes(rotation.statement));
  if (!signature) return signature.error().with_context("the old key cannot sign the rotation");
  rotation.signature = std::move(*signature);
  rotation.old_public_key = std::move(old_public_key);
  rotation.new_public_key = std::move(new_public_key);
  return rotation;
}

Result<Rotation> rotate_key(const SignerConfig& config) {
  if (config.backend == "tpm2") return rotate_tpm2_key(config.tpm2);
  if (config.backend == "pkcs11") return rotate_pkcs11_key(config.pkcs11);
  if (config.backend == "ephemeral") {
    return make_error(Errc::invalid_argument, "an ephemeral key is new at every start; there is nothing to rotate");
  }
  return make_error(Errc::invalid_argument, "say which key to rotate: --key-backend tpm2 or pkcs11");
}

}  // namespace darkbloom::attest
