#include "attest/hardware_policy.h"

#include "attest/tpm2_policy.h"
#include "base/file.h"
#include "crypto/p256.h"

namespace darkbloom::attest {

Result<std::optional<HardwarePolicy>> load_hardware_policy(const std::vector<std::string>& ek_ca_files,
                                                           const std::string& release_key_file) {
  if (ek_ca_files.empty() && release_key_file.empty()) return std::optional<HardwarePolicy>{};
  if (ek_ca_files.empty() || release_key_file.empty()) {
    return make_error(Errc::invalid_argument,
                      "--tpm-ek-ca and --tpm-release-key go together: the hardware level needs both");
  }
  auto trust = EkTrustStore::load(ek_ca_files);
  if (!trust) return trust.error().with_context("--tpm-ek-ca");
  auto pem = read_file(release_key_file);
  if (!pem) return pem.error().with_context("--tpm-release-key");
  auto release = crypto::p256_public_key_from_pem(*pem);
  if (!release) return release.error().with_context("--tpm-release-key " + release_key_file);
  HardwarePolicy policy{std::move(*trust), policy_authorize_digest(release_key_name(*release))};
  return std::optional<HardwarePolicy>(std::move(policy));
}

}  // namespace darkbloom::attest
