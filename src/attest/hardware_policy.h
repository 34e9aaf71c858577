// What the `hardware` trust level is checked against (--tpm-ek-ca, --tpm-release-key): the TPM
// makers' CAs an endorsement-key certificate must chain to, and the authPolicy an identity key
// must carry (PolicyAuthorize of the release key, so only approved binaries can use it). The
// checks themselves are tpm2_credential.h; the coordinator runs credential activation, and the
// consumer's sealing proxy checks the listing with the same policy.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "attest/tpm2_credential.h"
#include "base/result.h"

namespace darkbloom::attest {

struct HardwarePolicy {
  EkTrustStore ek_trust;
  Digest auth_policy{};
};

// Both files given: the policy; neither: nullopt (no provider can be `hardware`); one of them:
// an error, as is a file that does not load.
Result<std::optional<HardwarePolicy>> load_hardware_policy(const std::vector<std::string>& ek_ca_files,
                                                           const std::string& release_key_file);

}  // namespace darkbloom::attest
