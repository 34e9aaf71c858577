// The tpm2 backend on the TSS2 Enhanced System API. Every operation opens its own connection to
// the TPM through the configured TCTI and flushes its transient objects and sessions on every
// path: without a resource manager (a direct swtpm socket) leaked transients exhaust the TPM.
#include <fmt/format.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include "attest/signer.h"
#include "attest/tpm2_credential.h"
#include "attest/tpm2_policy.h"
#include "base/encoding.h"
#include "base/file.h"
#include "crypto/hash.h"
#include "crypto/p256.h"

namespace darkbloom::attest {
namespace {

constexpr uint32_t kFormatOneMask = TPM2_RC_FMT1 | 0x3F;

std::string describe(TSS2_RC rc) {
  return fmt::format("{} (0x{:X})", Tss2_RC_Decode(rc), rc);
}

bool tcti_layer(TSS2_RC rc) {
  return (rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER;
}

// The class of a failure depends on the step it happened at (TPM_RC_VALUE means "policy not
// met" at PolicyAuthorize but something else elsewhere), so callers pass the step.
enum class Step { connect, lookup, create, policy, sign, other };

Error tpm_error(TSS2_RC rc, Step step, std::string_view what) {
  const std::string message = fmt::format("{}: {}", what, describe(rc));
  const TSS2_RC base = rc & 0xFFFF;
  if (tcti_layer(rc) || base == TPM2_RC_INITIALIZE || base == TPM2_RC_FAILURE || step == Step::connect) {
    return make_error(Errc::unavailable, message);
  }
  const TSS2_RC format_one = rc & kFormatOneMask;
  if (step == Step::lookup && format_one == TPM2_RC_HANDLE) return make_error(Errc::not_found, message);
  if (base == TPM2_RC_AUTH_UNAVAILABLE || format_one == TPM2_RC_POLICY_FAIL || format_one == TPM2_RC_SIGNATURE ||
      (step == Step::policy && format_one == TPM2_RC_VALUE) || format_one == TPM2_RC_AUTH_FAIL ||
      format_one == TPM2_RC_BAD_AUTH || base == TPM2_RC_LOCKOUT) {
    return make_error(Errc::permission_denied, message);
  }
  return make_error(Errc::unavailable, message);
}

// One connection to the TPM; closed (and everything ESYS allocated freed) on destruction.
class Connection {
 public:
  static Result<std::unique_ptr<Connection>> open(const std::string& tcti) {
    // Expected failures (a missing handle) are handled here; ESYS's own logging would print them.
    setenv("TSS2_LOG", "all+none", 0);
    auto connection = std::unique_ptr<Connection>(new Connection());
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti.c_str(), &connection->tcti_);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::connect, fmt::format("cannot reach the TPM at '{}'", tcti));
    rc = Esys_Initialize(&connection->esys_, connection->tcti_, nullptr);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::connect, "cannot start ESYS");
    return connection;
  }
  ~Connection() {
    for (ESYS_TR handle : transients_) Esys_FlushContext(esys_, handle);
    if (esys_ != nullptr) Esys_Finalize(&esys_);
    if (tcti_ != nullptr) Tss2_TctiLdr_Finalize(&tcti_);
  }
  ESYS_CONTEXT* get() { return esys_; }
  // Flushed when the connection closes, whatever happened in between.
  void flush_later(ESYS_TR handle) { transients_.push_back(handle); }
  void flush_now(ESYS_TR handle) {
    Esys_FlushContext(esys_, handle);
    transients_.erase(std::remove(transients_.begin(), transients_.end(), handle), transients_.end());
  }

 private:
  Connection() = default;
  TSS2_TCTI_CONTEXT* tcti_ = nullptr;
  ESYS_CONTEXT* esys_ = nullptr;
  std::vector<ESYS_TR> transients_;
};

template <class T>
struct EsysFree {
  void operator()(T* p) const { Esys_Free(p); }
};
template <class T>
using EsysPtr = std::unique_ptr<T, EsysFree<T>>;

TPM2B_PUBLIC release_key_public(std::span<const uint8_t> xy) {
  TPM2B_PUBLIC in{};
  in.publicArea = release_key_area(xy);
  return in;
}

constexpr TPMA_OBJECT kKeyAttributes =
    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT;

TPMS_PCR_SELECTION pcr_selection(uint32_t pcr) {
  TPMS_PCR_SELECTION selection{};
  selection.hash = TPM2_ALG_SHA256;
  selection.sizeofSelect = 3;
  selection.pcrSelect[pcr / 8] = static_cast<BYTE>(1u << (pcr % 8));
  return selection;
}

// The object at a persistent handle; Errc::not_found when the handle is empty.
Result<ESYS_TR> find_object(Connection& connection, uint32_t handle) {
  ESYS_TR object = ESYS_TR_NONE;
  const TSS2_RC rc = Esys_TR_FromTPMPublic(connection.get(), handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::lookup, fmt::format("key at 0x{:08x}", handle));
  return object;
}

// That object's public area.
Result<TPMT_PUBLIC> read_public(Connection& connection, ESYS_TR object) {
  TPM2B_PUBLIC* raw_public = nullptr;
  const TSS2_RC rc = Esys_ReadPublic(connection.get(), object, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_public,
                                     nullptr, nullptr);
  EsysPtr<TPM2B_PUBLIC> out_public(raw_public);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "ReadPublic");
  return out_public->publicArea;
}

// A policy the release key approved, and its signature.
struct Approval {
  Digest policy{};
  std::vector<uint8_t> signature;
};

// The RSA 2048 EK of the TCG EK Credential Profile's default template (L-1): the same key every
// time it is created, the one the EK certificate certifies.
TPM2B_PUBLIC rsa_ek_template() {
  static constexpr uint8_t kPolicySecretEndorsement[32] = {
      0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
      0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};
  TPM2B_PUBLIC in{};
  TPMT_PUBLIC& ek = in.publicArea;
  ek.type = TPM2_ALG_RSA;
  ek.nameAlg = TPM2_ALG_SHA256;
  ek.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                        TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  ek.authPolicy.size = sizeof(kPolicySecretEndorsement);
  std::memcpy(ek.authPolicy.buffer, kPolicySecretEndorsement, sizeof(kPolicySecretEndorsement));
  ek.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
  ek.parameters.rsaDetail.symmetric.keyBits.aes = 128;
  ek.parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  ek.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
  ek.parameters.rsaDetail.keyBits = 2048;
  ek.parameters.rsaDetail.exponent = 0;
  ek.unique.rsa.size = 256;  // zeros
  return in;
}

class Tpm2Signer final : public AttestationSigner {
 public:
  Tpm2Signer(Tpm2Config config, std::vector<uint8_t> public_key, std::vector<uint8_t> release_public_key,
             Approval approval, std::optional<Approval> activation)
      : config_(std::move(config)),
        public_key_(std::move(public_key)),
        release_public_key_(std::move(release_public_key)),
        approval_(std::move(approval)),
        activation_(std::move(activation)) {}

  const std::vector<uint8_t>& public_key() const override { return public_key_; }

  Result<std::vector<uint8_t>> sign(std::span<const uint8_t> message) override {
    // The TPM is serial; one operation at a time from this process.
    std::lock_guard lock(mutex_);
    auto connection = Connection::open(config_.tcti);
    if (!connection) return connection.error();
    ESYS_CONTEXT* ctx = (*connection)->get();
    auto key = find_object(**connection, config_.handle);
    if (!key) return key.error();
    ESYS_TR session = ESYS_TR_PASSWORD;
    if (config_.policy == "authorize") {
      auto authorized = authorize_session(**connection, approval_, std::nullopt);
      if (!authorized) return authorized.error();
      session = *authorized;
    }
    const Digest hash = crypto::sha256(message);
    TPM2B_DIGEST digest{};
    digest.size = 32;
    std::memcpy(digest.buffer, hash.data(), 32);
    TPMT_SIG_SCHEME scheme{};
    scheme.scheme = TPM2_ALG_ECDSA;
    scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    TPMT_TK_HASHCHECK validation{};
    validation.tag = TPM2_ST_HASHCHECK;
    validation.hierarchy = TPM2_RH_NULL;
    TPMT_SIGNATURE* raw = nullptr;
    TSS2_RC rc = Esys_Sign(ctx, *key, session, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &scheme, &validation, &raw);
    EsysPtr<TPMT_SIGNATURE> signature(raw);
    if (session != ESYS_TR_PASSWORD) (*connection)->flush_now(session);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::sign, "TPM2_Sign");
    const auto& ecdsa = signature->signature.ecdsa;
    return crypto::der_signature_from_rs({ecdsa.signatureR.buffer, ecdsa.signatureR.size},
                                         {ecdsa.signatureS.buffer, ecdsa.signatureS.size});
  }

 protected:
  SignerInfo describe() const override {
    return {"tpm2", true, true, fmt::format("tpm2:0x{:08x} ({} policy)", config_.handle, config_.policy), {}};
  }

 private:
  Result<TpmEvidence> tpm_evidence() override {
    std::lock_guard lock(mutex_);
    // Read once: the certificate and this signer's key (fixed at construction) do not change
    // while the process runs, and each registration would otherwise read NV again.
    if (evidence_) return *evidence_;
    auto connection = Connection::open(config_.tcti);
    if (!connection) return connection.error();
    TpmEvidence evidence;
    auto certificate = read_nv(**connection, kRsaEkCertificateIndex);
    if (!certificate) return certificate.error().with_context("the TPM's RSA EK certificate (NV 0x01c00002)");
    evidence.ek_certificate = std::move(*certificate);
    auto key = find_object(**connection, config_.handle);
    if (!key) return key.error();
    auto key_public = read_public(**connection, *key);
    if (!key_public) return key_public.error();
    std::vector<uint8_t> area(sizeof(TPMT_PUBLIC));
    size_t offset = 0;
    const TSS2_RC rc = Tss2_MU_TPMT_PUBLIC_Marshal(&*key_public, area.data(), area.size(), &offset);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "marshalling the key's public area");
    area.resize(offset);
    evidence.key_public = std::move(area);
    evidence_ = evidence;
    return evidence;
  }

  Result<std::vector<uint8_t>> activate_credential(std::span<const uint8_t> credential_blob,
                                                   std::span<const uint8_t> encrypted_secret) override {
    TPM2B_ID_OBJECT blob{};
    TPM2B_ENCRYPTED_SECRET secret{};
    size_t offset = 0;
    if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(credential_blob.data(), credential_blob.size(), &offset, &blob) !=
            TSS2_RC_SUCCESS ||
        offset != credential_blob.size()) {
      return make_error(Errc::bad_format, "the credential blob is not a TPM2B_ID_OBJECT");
    }
    offset = 0;
    if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(encrypted_secret.data(), encrypted_secret.size(), &offset, &secret) !=
            TSS2_RC_SUCCESS ||
        offset != encrypted_secret.size()) {
      return make_error(Errc::bad_format, "the encrypted secret is not a TPM2B_ENCRYPTED_SECRET");
    }
    if (config_.policy == "authorize" && !activation_) {
      return make_error(Errc::permission_denied,
                        fmt::format("no activation approval ({}.activate.policy and .sig from `darkbloom keys "
                                    "approve`): the key's ADMIN role cannot activate a credential",
                                    config_.approval));
    }
    std::lock_guard lock(mutex_);
    auto connection = Connection::open(config_.tcti);
    if (!connection) return connection.error();
    ESYS_CONTEXT* ctx = (*connection)->get();
    auto key = find_object(**connection, config_.handle);
    if (!key) return key.error();
    // The EK, created again from its template in the endorsement hierarchy.
    const TPM2B_PUBLIC ek_template = rsa_ek_template();
    const TPM2B_SENSITIVE_CREATE no_secret{};
    const TPM2B_DATA no_outside{};
    const TPML_PCR_SELECTION no_pcrs{};
    ESYS_TR ek = ESYS_TR_NONE;
    TSS2_RC rc =
        Esys_CreatePrimary(ctx, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &no_secret,
                           &ek_template, &no_outside, &no_pcrs, &ek, nullptr, nullptr, nullptr, nullptr);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::create, "CreatePrimary (RSA EK)");
    (*connection)->flush_later(ek);
    // The EK's USER role: PolicySecret(endorsement hierarchy).
    TPMT_SYM_DEF symmetric{};
    symmetric.algorithm = TPM2_ALG_NULL;
    ESYS_TR ek_session = ESYS_TR_NONE;
    rc = Esys_StartAuthSession(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nullptr,
                               TPM2_SE_POLICY, &symmetric, TPM2_ALG_SHA256, &ek_session);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "StartAuthSession (EK)");
    (*connection)->flush_later(ek_session);
    TPM2B_TIMEOUT* raw_timeout = nullptr;
    TPMT_TK_AUTH* raw_ticket = nullptr;
    rc = Esys_PolicySecret(ctx, ESYS_TR_RH_ENDORSEMENT, ek_session, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           nullptr, nullptr, nullptr, 0, &raw_timeout, &raw_ticket);
    EsysPtr<TPM2B_TIMEOUT> timeout(raw_timeout);
    EsysPtr<TPMT_TK_AUTH> ticket(raw_ticket);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::policy, "PolicySecret (endorsement)");
    // The key's ADMIN role: the activation branch the release key approved, or its password.
    ESYS_TR key_session = ESYS_TR_PASSWORD;
    if (config_.policy == "authorize") {
      auto authorized = authorize_session(**connection, *activation_, TPM2_CC_ActivateCredential);
      if (!authorized) return authorized.error();
      key_session = *authorized;
    }
    TPM2B_DIGEST* raw_credential = nullptr;
    rc = Esys_ActivateCredential(ctx, *key, ek, key_session, ek_session, ESYS_TR_NONE, &blob, &secret, &raw_credential);
    EsysPtr<TPM2B_DIGEST> credential(raw_credential);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::policy, "ActivateCredential");
    return std::vector<uint8_t>(credential->buffer, credential->buffer + credential->size);
  }

 private:
  // The whole of an NV index, read in pieces the TPM takes.
  static Result<std::vector<uint8_t>> read_nv(Connection& connection, uint32_t index) {
    ESYS_CONTEXT* ctx = connection.get();
    ESYS_TR nv = ESYS_TR_NONE;
    TSS2_RC rc = Esys_TR_FromTPMPublic(ctx, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv);
    if (rc != TSS2_RC_SUCCESS) {
      Error error = tpm_error(rc, Step::lookup, "NV index");
      if (error.code == Errc::not_found) error.code = Errc::unsupported;  // a TPM without a certificate
      return error;
    }
    TPM2B_NV_PUBLIC* raw_public = nullptr;
    rc = Esys_NV_ReadPublic(ctx, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_public, nullptr);
    EsysPtr<TPM2B_NV_PUBLIC> nv_public(raw_public);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "NV_ReadPublic");
    const size_t size = nv_public->nvPublic.dataSize;
    constexpr size_t kPiece = 512;  // below every TPM's MAX_NV_BUFFER_SIZE
    std::vector<uint8_t> out;
    while (out.size() < size) {
      const auto piece = static_cast<UINT16>(std::min(kPiece, size - out.size()));
      TPM2B_MAX_NV_BUFFER* raw_data = nullptr;
      rc = Esys_NV_Read(ctx, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, piece,
                        static_cast<UINT16>(out.size()), &raw_data);
      EsysPtr<TPM2B_MAX_NV_BUFFER> data(raw_data);
      if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "NV_Read");
      out.insert(out.end(), data->buffer, data->buffer + data->size);
      if (data->size == 0) break;
    }
    return out;
  }

  // A policy session satisfying PolicyPCR(current state) [+ PolicyCommandCode(command)] +
  // PolicyAuthorize(the release key's approval of exactly that).
  Result<ESYS_TR> authorize_session(Connection& connection, const Approval& approval, std::optional<TPM2_CC> command) {
    ESYS_CONTEXT* ctx = connection.get();
    TPMT_SYM_DEF symmetric{};
    symmetric.algorithm = TPM2_ALG_NULL;
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc = Esys_StartAuthSession(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                       nullptr, TPM2_SE_POLICY, &symmetric, TPM2_ALG_SHA256, &session);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "StartAuthSession");
    connection.flush_later(session);
    TPML_PCR_SELECTION pcrs{};
    pcrs.count = 1;
    pcrs.pcrSelections[0] = pcr_selection(config_.pcr);
    const TPM2B_DIGEST current{};  // empty: the TPM uses the PCR's value now
    rc = Esys_PolicyPCR(ctx, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &current, &pcrs);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::policy, "PolicyPCR");
    if (command) {
      rc = Esys_PolicyCommandCode(ctx, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, *command);
      if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::policy, "PolicyCommandCode");
    }

    const TPM2B_PUBLIC release = release_key_public(release_public_key_);
    ESYS_TR release_handle = ESYS_TR_NONE;
    rc = Esys_LoadExternal(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nullptr, &release, ESYS_TR_RH_OWNER,
                           &release_handle);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "LoadExternal(release key)");
    connection.flush_later(release_handle);
    auto rs = crypto::rs_from_der_signature(approval.signature);
    if (!rs) return rs.error().with_context("the release approval");
    TPMT_SIGNATURE signed_approval{};
    signed_approval.sigAlg = TPM2_ALG_ECDSA;
    signed_approval.signature.ecdsa.hash = TPM2_ALG_SHA256;
    signed_approval.signature.ecdsa.signatureR.size = 32;
    std::memcpy(signed_approval.signature.ecdsa.signatureR.buffer, rs->first.data(), 32);
    signed_approval.signature.ecdsa.signatureS.size = 32;
    std::memcpy(signed_approval.signature.ecdsa.signatureS.buffer, rs->second.data(), 32);
    // aHash = SHA256(approvedPolicy ‖ policyRef), the policyRef being empty.
    const Digest a_hash = crypto::sha256(approval.policy);
    TPM2B_DIGEST approval_digest{};
    approval_digest.size = 32;
    std::memcpy(approval_digest.buffer, a_hash.data(), 32);
    TPMT_TK_VERIFIED* raw_ticket = nullptr;
    rc = Esys_VerifySignature(ctx, release_handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &approval_digest,
                              &signed_approval, &raw_ticket);
    EsysPtr<TPMT_TK_VERIFIED> ticket(raw_ticket);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::policy, "the release approval's signature");
    TPM2B_NAME* raw_name = nullptr;
    rc = Esys_TR_GetName(ctx, release_handle, &raw_name);
    EsysPtr<TPM2B_NAME> name(raw_name);
    if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "release key name");
    TPM2B_DIGEST approved{};
    approved.size = 32;
    std::memcpy(approved.buffer, approval.policy.data(), 32);
    const TPM2B_NONCE policy_ref{};
    rc = Esys_PolicyAuthorize(ctx, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &approved, &policy_ref,
                              name.get(), ticket.get());
    if (rc != TSS2_RC_SUCCESS) {
      return tpm_error(rc, Step::policy, "the approved state does not match this platform (PolicyAuthorize)");
    }
    connection.flush_now(release_handle);
    return session;
  }

  Tpm2Config config_;
  std::vector<uint8_t> public_key_;
  std::vector<uint8_t> release_public_key_;
  Approval approval_;
  std::optional<Approval> activation_;   // absent: credential activation is refused
  std::optional<TpmEvidence> evidence_;  // read at the first registration
  std::mutex mutex_;
};

Result<std::string> resolve_tcti(const Tpm2Config& config) {
  if (!config.tcti.empty()) return config.tcti;
  if (std::filesystem::exists("/dev/tpmrm0")) return std::string("device:/dev/tpmrm0");
  return make_error(Errc::unavailable, "no TPM: /dev/tpmrm0 is absent and no TCTI is configured");
}

// The policy a key at the handle must carry, and the release material for using it.
struct PolicyMaterial {
  TPM2B_DIGEST auth_policy{};
  std::vector<uint8_t> release_public_key;
  Approval approval;
  std::optional<Approval> activation;
};

// PREFIX.policy (a 32-byte digest) and PREFIX.sig.
Result<Approval> read_approval(const std::string& prefix) {
  Approval approval;
  auto policy = read_file(prefix + ".policy");
  if (!policy) return policy.error();
  if (policy->size() != 32) return make_error(Errc::bad_format, prefix + ".policy must hold a 32-byte digest");
  std::memcpy(approval.policy.data(), policy->data(), 32);
  auto signature = read_file(prefix + ".sig");
  if (!signature) return signature.error();
  approval.signature.assign(signature->begin(), signature->end());
  return approval;
}

Result<PolicyMaterial> policy_material(const Tpm2Config& config) {
  PolicyMaterial material;
  if (config.policy == "none") return material;
  if (config.policy != "authorize") return make_error(Errc::invalid_argument, "TPM policy must be authorize or none");
  if (config.pcr > 23) return make_error(Errc::invalid_argument, "PCR index must be 0-23");
  if ((config.pcr == 16 || config.pcr == 23) && !config.allow_resettable_pcr) {
    return make_error(Errc::invalid_argument,
                      fmt::format("PCR {} can be reset and extended by any local process, so a policy on it binds "
                                  "nothing; name the PCR your measured launcher extends (--tpm-pcr), or pass "
                                  "--tpm-allow-resettable-pcr for tests",
                                  config.pcr));
  }
  if (config.release_key.empty() || config.approval.empty()) {
    return make_error(Errc::invalid_argument, "the authorize policy needs --tpm-release-key and --tpm-approval");
  }
  auto pem = read_file(config.release_key);
  if (!pem) return pem.error();
  auto release = crypto::p256_public_key_from_pem(*pem);
  if (!release) return release.error().with_context(config.release_key);
  material.release_public_key = *release;
  auto approval = read_approval(config.approval);
  if (!approval) return approval.error();
  material.approval = std::move(*approval);
  // Optional: without it the key signs, and cannot prove itself for the hardware level.
  if (std::filesystem::exists(config.approval + ".activate.policy")) {
    auto activation = read_approval(config.approval + ".activate");
    if (!activation) return activation.error();
    material.activation = std::move(*activation);
  }
  const Digest digest = policy_authorize_digest(release_key_name(material.release_public_key));
  material.auth_policy.size = 32;
  std::memcpy(material.auth_policy.buffer, digest.data(), 32);
  return material;
}

// A key found at the handle must be exactly what this code creates: P-256 ECDSA signing key,
// fixed to this TPM, with this policy. Anything else is someone else's object.
Status check_key(const TPMT_PUBLIC& area, const PolicyMaterial& material, const Tpm2Config& config) {
  std::vector<std::string> problems;
  if (area.type != TPM2_ALG_ECC || area.parameters.eccDetail.curveID != TPM2_ECC_NIST_P256)
    problems.push_back("not P-256");
  if (area.nameAlg != TPM2_ALG_SHA256) problems.push_back("name algorithm is not SHA-256");
  if ((area.objectAttributes & kKeyAttributes) != kKeyAttributes)
    problems.push_back("not a fixed, TPM-generated signing key");
  if (area.objectAttributes & (TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT))
    problems.push_back("restricted or decrypting");
  const bool password = (area.objectAttributes & TPMA_OBJECT_USERWITHAUTH) != 0;
  if (password != (config.policy == "none")) problems.push_back(password ? "usable with a password" : "needs a policy");
  const bool admin_policy = (area.objectAttributes & TPMA_OBJECT_ADMINWITHPOLICY) != 0;
  if (config.policy != "none" && !admin_policy) problems.push_back("administrable without the policy");
  if (area.authPolicy.size != material.auth_policy.size ||
      std::memcmp(area.authPolicy.buffer, material.auth_policy.buffer, area.authPolicy.size) != 0) {
    problems.push_back("a different policy");
  }
  if (problems.empty()) return {};
  std::string joined;
  for (const auto& problem : problems) joined += (joined.empty() ? "" : ", ") + problem;
  return make_error(Errc::bad_format,
                    fmt::format("the object at 0x{:08x} is not this provider's key ({})", config.handle, joined));
}

// A storage primary under the owner hierarchy: the same template gives the same key every time,
// so blobs created under it load again in a later connection.
Result<ESYS_TR> create_primary(Connection& connection) {
  TPM2B_PUBLIC primary_template{};
  TPMT_PUBLIC& primary = primary_template.publicArea;
  primary.type = TPM2_ALG_ECC;
  primary.nameAlg = TPM2_ALG_SHA256;
  primary.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                             TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA;
  primary.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  primary.parameters.eccDetail.symmetric.keyBits.aes = 128;
  primary.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  primary.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  primary.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  primary.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  const TPM2B_SENSITIVE_CREATE no_secret{};
  const TPM2B_DATA no_outside{};
  const TPML_PCR_SELECTION no_pcrs{};
  ESYS_TR primary_handle = ESYS_TR_NONE;
  TSS2_RC rc =
      Esys_CreatePrimary(connection.get(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &no_secret,
                         &primary_template, &no_outside, &no_pcrs, &primary_handle, nullptr, nullptr, nullptr, nullptr);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::create, "CreatePrimary (owner hierarchy)");
  connection.flush_later(primary_handle);
  return primary_handle;
}

// A new signing key, wrapped by the primary: the private blob is useless outside this TPM.
struct KeyBlobs {
  TPM2B_PRIVATE private_part{};
  TPM2B_PUBLIC public_part{};
  std::vector<uint8_t> public_key() const {
    const auto& ecc = public_part.publicArea.unique.ecc;
    std::vector<uint8_t> xy(ecc.x.buffer, ecc.x.buffer + ecc.x.size);
    xy.insert(xy.end(), ecc.y.buffer, ecc.y.buffer + ecc.y.size);
    return xy;
  }
};

Result<KeyBlobs> create_blobs(Connection& connection, const PolicyMaterial& material, const Tpm2Config& config) {
  auto primary = create_primary(connection);
  if (!primary) return primary.error();
  TPM2B_PUBLIC key_template{};
  TPMT_PUBLIC& key = key_template.publicArea;
  key.type = TPM2_ALG_ECC;
  key.nameAlg = TPM2_ALG_SHA256;
  // With a policy, the admin role (certify, change auth, duplicate) needs the policy too.
  key.objectAttributes =
      kKeyAttributes | (config.policy == "none" ? TPMA_OBJECT_USERWITHAUTH : TPMA_OBJECT_ADMINWITHPOLICY);
  key.authPolicy = material.auth_policy;
  key.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  key.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
  key.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  key.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  key.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  const TPM2B_SENSITIVE_CREATE no_secret{};
  const TPM2B_DATA no_outside{};
  const TPML_PCR_SELECTION no_pcrs{};
  TPM2B_PRIVATE* raw_private = nullptr;
  TPM2B_PUBLIC* raw_public = nullptr;
  TSS2_RC rc = Esys_Create(connection.get(), *primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &no_secret,
                           &key_template, &no_outside, &no_pcrs, &raw_private, &raw_public, nullptr, nullptr, nullptr);
  EsysPtr<TPM2B_PRIVATE> out_private(raw_private);
  EsysPtr<TPM2B_PUBLIC> out_public(raw_public);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::create, "Create (signing key)");
  KeyBlobs blobs;
  blobs.private_part = *out_private;
  blobs.public_part = *out_public;
  return blobs;
}

// Loads the blobs and makes the key persistent at the handle (which must be free).
Status persist(Connection& connection, const KeyBlobs& blobs, uint32_t handle) {
  ESYS_CONTEXT* ctx = connection.get();
  auto primary = create_primary(connection);
  if (!primary) return primary.error();
  ESYS_TR loaded = ESYS_TR_NONE;
  TSS2_RC rc = Esys_Load(ctx, *primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &blobs.private_part,
                         &blobs.public_part, &loaded);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::create, "Load (signing key)");
  connection.flush_later(loaded);
  ESYS_TR persistent = ESYS_TR_NONE;
  rc = Esys_EvictControl(ctx, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle,
                         &persistent);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::create, fmt::format("EvictControl to 0x{:08x}", handle));
  Esys_TR_Close(ctx, &persistent);
  return {};
}

// Removes the persistent object at the handle.
Status evict(Connection& connection, uint32_t handle) {
  ESYS_CONTEXT* ctx = connection.get();
  ESYS_TR key = ESYS_TR_NONE;
  TSS2_RC rc = Esys_TR_FromTPMPublic(ctx, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &key);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::lookup, fmt::format("key at 0x{:08x}", handle));
  ESYS_TR none = ESYS_TR_NONE;
  rc = Esys_EvictControl(ctx, ESYS_TR_RH_OWNER, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle, &none);
  if (rc != TSS2_RC_SUCCESS) return tpm_error(rc, Step::other, "EvictControl (remove)");
  return {};
}

}  // namespace

Result<std::unique_ptr<AttestationSigner>> make_tpm2_signer(const Tpm2Config& requested) {
  Tpm2Config config = requested;
  auto tcti = resolve_tcti(config);
  if (!tcti) return tcti.error();
  config.tcti = *tcti;
  auto material = policy_material(config);
  if (!material) return material.error();
  std::vector<uint8_t> public_key;
  {
    auto connection = Connection::open(config.tcti);
    if (!connection) return connection.error();
    auto key = find_object(**connection, config.handle);
    if (key) {
      auto area = read_public(**connection, *key);
      if (!area) return area.error();
      DARKBLOOM_RETURN_IF_ERROR(check_key(*area, *material, config));
      const auto& ecc = area->unique.ecc;
      public_key.assign(ecc.x.buffer, ecc.x.buffer + ecc.x.size);
      public_key.insert(public_key.end(), ecc.y.buffer, ecc.y.buffer + ecc.y.size);
    } else {
      if (key.error().code != Errc::not_found) return key.error();  // only "not found" leads to creating a key
      if (!config.create_if_missing) {
        return make_error(Errc::not_found,
                          fmt::format("no key at 0x{:08x} yet (`darkbloom start` creates it)", config.handle));
      }
      auto blobs = create_blobs(**connection, *material, config);
      if (!blobs) return blobs.error();
      DARKBLOOM_RETURN_IF_ERROR(persist(**connection, *blobs, config.handle));
      public_key = blobs->public_key();
    }
  }
  if (public_key.size() != 64) return make_error(Errc::bad_format, "the TPM key is not a P-256 point");
  auto signer = std::make_unique<Tpm2Signer>(config, std::move(public_key), material->release_public_key,
                                             material->approval, material->activation);
  // A key the policy will not release is no identity: find out now, not at the first challenge.
  auto probe = signer->sign(as_bytes("darkbloom-tpm2-probe"));
  if (!probe) return probe.error();
  return std::unique_ptr<AttestationSigner>(std::move(signer));
}

Status delete_tpm2_key(const Tpm2Config& requested) {
  Tpm2Config config = requested;
  auto tcti = resolve_tcti(config);
  if (!tcti) return tcti.error();
  config.tcti = *tcti;
  auto material = policy_material(config);
  if (!material) return material.error();
  auto connection = Connection::open(config.tcti);
  if (!connection) return connection.error();
  // Only our own key goes: the handle might hold an endorsement key or someone else's object.
  auto key = find_object(**connection, config.handle);
  if (!key) return key.error();
  auto area = read_public(**connection, *key);
  if (!area) return area.error();
  if (auto ours = check_key(*area, *material, config); !ours) {
    return ours.error().with_context("refusing to delete");
  }
  return evict(**connection, config.handle);
}

Result<Rotation> rotate_tpm2_key(const Tpm2Config& requested) {
  Tpm2Config config = requested;
  config.create_if_missing = false;
  auto old_key = make_tpm2_signer(config);  // must exist, be ours and be usable now
  if (!old_key) return old_key.error();
  config.tcti = *resolve_tcti(config);
  auto material = policy_material(config);
  if (!material) return material.error();
  // The new key exists only as blobs until the old one has vouched for it; then the old key is
  // evicted and the new one takes its handle. A failure before the swap leaves the old key.
  KeyBlobs blobs;
  {
    auto connection = Connection::open(config.tcti);
    if (!connection) return connection.error();
    auto created = create_blobs(**connection, *material, config);
    if (!created) return created.error();
    blobs = *created;
  }
  auto rotation = sign_rotation((*old_key)->public_key(), blobs.public_key(),
                                [&](std::span<const uint8_t> message) { return (*old_key)->sign(message); });
  if (!rotation) return rotation.error();
  auto connection = Connection::open(config.tcti);
  if (!connection) return connection.error();
  DARKBLOOM_RETURN_IF_ERROR(evict(**connection, config.handle));
  auto persisted = persist(**connection, blobs, config.handle);
  if (!persisted) return persisted.error().with_context("the old key is gone but the new one was not stored");
  return rotation;
}

}  // namespace darkbloom::attest
