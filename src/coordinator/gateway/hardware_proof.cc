// The `hardware` trust level: a registered provider that sent TPM evidence has it checked
// (the EK certificate's chain to --tpm-ek-ca, the key's public area: the attested key, fixed to
// the TPM, sign-only, under --tpm-release-key's PolicyAuthorize), then gets a credential made in
// software for its EK and its key's Name. Only the TPM holding both can activate it; the right
// answer, once, makes the provider `hardware`. Anything short of that leaves it `self_signed`,
// with the reason in the log, its trust_status and the attestation listing.
#include <fmt/format.h>

#include "base/log.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/gateway/provider_text.h"
#include "crypto/hash.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::coordinator {
namespace {

// Built outside any coroutine, like every frame here.
std::string credential_frame(attest::MadeCredential made) {
  proto::CredentialChallenge challenge;
  challenge.credential_blob = std::move(made.credential_blob);
  challenge.encrypted_secret = std::move(made.encrypted_secret);
  return proto::encode(challenge);
}

}  // namespace

void ProviderGateway::start_hardware_proof(ProviderSession& session) {
  TrustState& trust = session.trust_state_;
  const auto not_proven = [&](const std::string& reason) {
    trust.hardware_reason = "not proven: " + reason;
    log::warn("provider {}: hardware level not proven: {}", session.id_, printable(reason));
    send_trust_status(session);
  };
  if (!hardware_) {
    not_proven("this coordinator checks no TPM (no --tpm-ek-ca and --tpm-release-key)");
    return;
  }
  const attest::TpmEvidence evidence{trust.ek_certificate, trust.key_public};
  auto checked = attest::check_tpm_evidence(evidence, trust.public_key, hardware_->auth_policy, hardware_->ek_trust,
                                            clock_.wall_now());
  if (!checked) {
    not_proven(checked.error().message);
    return;
  }
  trust.expected_credential = crypto::random_bytes(32);
  auto made = attest::make_credential(checked->ek_public, trust.expected_credential, checked->name);
  if (!made) {
    trust.expected_credential.clear();
    not_proven("cannot make a credential: " + made.error().message);
    return;
  }
  trust.hardware_reason = "credential activation pending";
  session.link_->send(credential_frame(std::move(*made)));
}

void ProviderGateway::on_credential_response(ProviderSession& session, const proto::CredentialResponse& answer) {
  TrustState& trust = session.trust_state_;
  // Single use: one answer per credential sent; a second one, or one never asked for (a replay
  // from another session), proves nothing.
  std::vector<uint8_t> expected = std::move(trust.expected_credential);
  trust.expected_credential.clear();
  if (expected.empty()) {
    uint64_t suppressed = 0;
    if (session.may_log(clock_.now(), &suppressed)) {
      log::warn("provider {}: a credential answer no activation asked for; ignored{}", session.id_,
                suppressed_note(suppressed));
    }
    return;
  }
  std::string failure;
  if (!answer.error.empty()) {
    failure = "the provider's TPM did not activate the credential: " + printable(answer.error, 200);
  } else if (answer.credential.size() != expected.size() || !crypto::equal_constant_time(answer.credential, expected)) {
    failure = "the activated credential is not the one sent (another TPM, or another key)";
  }
  crypto::wipe_memory(expected.data(), expected.size());
  if (!failure.empty()) {
    trust.hardware_reason = "not proven: " + failure;
    log::warn("provider {}: hardware level not proven: {}", session.id_, failure);
    send_trust_status(session);
    return;
  }
  trust.hardware_reason = "proven (EK certificate chain, key attributes and policy, credential activation)";
  if (session.trust_ != TrustLevel::self_signed) {
    send_trust_status(session);  // distrusted meanwhile: `none` stays
    return;
  }
  const bool was_routable = session.routable(config_.min_trust, clock_.now());
  session.trust_ = TrustLevel::hardware;
  log::info("provider {}: trust hardware (TPM-held key proven)", session.id_);
  send_trust_status(session);
  if (!was_routable && session.routable(config_.min_trust, clock_.now())) announce_capacity(session);
}

}  // namespace darkbloom::coordinator
