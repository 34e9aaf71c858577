// The identity-key options shared by `darkbloom start`, `keys` and `doctor`: which backend, and
// where its key lives (TPM handle and policy, PKCS#11 module, token, PIN source and label).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "attest/signer.h"
#include "base/result.h"

namespace darkbloom::apps {

struct KeyArgs {
  std::string backend = "auto";
  std::string tpm_tcti;
  std::string tpm_handle = "0x8101D000";
  std::string tpm_policy = "authorize";
  int tpm_pcr = 16;
  bool tpm_allow_resettable_pcr = false;
  std::string tpm_release_key;
  std::string tpm_approval;
  std::string pkcs11_module;
  std::string pkcs11_token = "darkbloom";
  std::string pkcs11_pin_file;
  std::string pkcs11_label = "darkbloom-provider-v1";
};

void add_key_options(CLI::App* command, KeyArgs* args);

// The signer configuration; the PIN comes from --pkcs11-pin-file or DARKBLOOM_PKCS11_PIN (never
// a flag: command lines are visible to every user of the machine).
Result<attest::SignerConfig> signer_config(const KeyArgs& args);

// Where `keys rotate` leaves the statement and `start` picks it up.
std::string default_rotation_file();

}  // namespace darkbloom::apps
