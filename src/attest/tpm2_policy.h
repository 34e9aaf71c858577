// TPM 2.0 policy arithmetic done in software, so a release pipeline can approve a platform state
// without a TPM: PolicyPCR and PolicyAuthorize digests, the Name of a P-256 release key as the
// TPM computes it after LoadExternal, and the approval a release key signs.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "base/result.h"

namespace darkbloom::attest {

using Digest = std::array<uint8_t, 32>;

// The PCR value after extending a freshly reset (all-zero) SHA-256 PCR with `measurement`:
// SHA256(0³² ‖ measurement).
Digest pcr_after_extend(const Digest& measurement);

// PolicyPCR over one SHA-256 PCR holding `pcr_value`:
// SHA256(0³² ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ SHA256(pcr_value)).
Digest policy_pcr_digest(uint32_t pcr_index, const Digest& pcr_value);

// How a P-256 release key (X ‖ Y) is loaded into the TPM (LoadExternal); its Name depends on
// exactly these fields, so the signer and release_key_name must both use this.
TPMT_PUBLIC release_key_area(std::span<const uint8_t> public_key_xy);

// The Name of that loaded key: 0x000B ‖ SHA256(marshalled TPMT_PUBLIC).
std::vector<uint8_t> release_key_name(std::span<const uint8_t> public_key_xy);

// PolicyCommandCode(code) after `previous`: SHA256(previous ‖ TPM_CC_PolicyCommandCode ‖ code).
// An approval of PolicyPCR then PolicyCommandCode(TPM2_CC_ActivateCredential) lets the key's
// ADMIN role activate a credential in the approved state, and do nothing else.
Digest policy_command_code_digest(const Digest& previous, uint32_t command_code);

// PolicyAuthorize(keySign = name, policyRef = empty) starting from an empty policy:
// SHA256(SHA256(0³² ‖ TPM_CC_PolicyAuthorize ‖ name)).
Digest policy_authorize_digest(std::span<const uint8_t> release_key_name);

}  // namespace darkbloom::attest
