#include "apps/darkbloom/key_options.h"

#include <cstdlib>

#include "apps/common/secrets.h"
#include "base/file.h"

namespace darkbloom::apps {

void add_key_options(CLI::App* command, KeyArgs* args) {
  const std::string group = "Identity key";
  command
      ->add_option("--key-backend", args->backend,
                   "where the identity key lives: auto (tpm2, then pkcs11, then ephemeral), tpm2, pkcs11 or ephemeral")
      ->check(CLI::IsMember({"auto", "tpm2", "pkcs11", "ephemeral"}))
      ->capture_default_str()
      ->group(group);
  command
      ->add_option("--tpm-tcti", args->tpm_tcti,
                   "TPM connection, e.g. device:/dev/tpmrm0 or swtpm:path=SOCKET (default: /dev/tpmrm0 if present)")
      ->group(group);
  command->add_option("--tpm-handle", args->tpm_handle, "persistent TPM handle of the key")
      ->capture_default_str()
      ->group(group);
  command
      ->add_option("--tpm-policy", args->tpm_policy,
                   "authorize (a release key approves PCR states) or none (no policy; tests)")
      ->check(CLI::IsMember({"authorize", "none"}))
      ->capture_default_str()
      ->group(group);
  command->add_option("--tpm-pcr", args->tpm_pcr, "PCR holding the measured provider binary")
      ->check(CLI::Range(0, 23))
      ->capture_default_str()
      ->group(group);
  command
      ->add_flag("--tpm-allow-resettable-pcr", args->tpm_allow_resettable_pcr,
                 "allow PCR 16 or 23, which any local process can reset (tests and demos only)")
      ->group(group);
  command->add_option("--tpm-release-key", args->tpm_release_key, "PEM public key that approves releases")
      ->group(group);
  command
      ->add_option("--tpm-approval", args->tpm_approval,
                   "approval written by `darkbloom keys approve` (PREFIX of PREFIX.policy and PREFIX.sig)")
      ->group(group);
  command->add_option("--pkcs11-module", args->pkcs11_module, "PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so")
      ->group(group);
  command->add_option("--pkcs11-token", args->pkcs11_token, "token label")->capture_default_str()->group(group);
  command
      ->add_option("--pkcs11-pin-file", args->pkcs11_pin_file,
                   "file holding the user PIN (or set DARKBLOOM_PKCS11_PIN)")
      ->group(group);
  command->add_option("--pkcs11-label", args->pkcs11_label, "label of the key on the token")
      ->capture_default_str()
      ->group(group);
}

Result<attest::SignerConfig> signer_config(const KeyArgs& args) {
  attest::SignerConfig config;
  config.backend = args.backend;
  config.tpm2.tcti = args.tpm_tcti;
  try {
    size_t used = 0;
    const unsigned long handle = std::stoul(args.tpm_handle, &used, 0);
    if (used != args.tpm_handle.size() || handle < 0x81000000ul || handle > 0x81FFFFFFul) throw std::out_of_range("");
    config.tpm2.handle = static_cast<uint32_t>(handle);
  } catch (const std::exception&) {
    return make_error(
        Errc::invalid_argument,
        "--tpm-handle must be a persistent handle between 0x81000000 and 0x81FFFFFF (got '" + args.tpm_handle + "')");
  }
  config.tpm2.policy = args.tpm_policy;
  config.tpm2.pcr = static_cast<uint32_t>(args.tpm_pcr);
  config.tpm2.allow_resettable_pcr = args.tpm_allow_resettable_pcr;
  config.tpm2.release_key = args.tpm_release_key;
  config.tpm2.approval = args.tpm_approval;
  config.pkcs11.module = args.pkcs11_module;
  config.pkcs11.token = args.pkcs11_token;
  config.pkcs11.label = args.pkcs11_label;
  if (!args.pkcs11_pin_file.empty()) {
    auto pin = read_secret_file(args.pkcs11_pin_file);  // private, like every secret file
    if (!pin) return pin.error().with_context("--pkcs11-pin-file");
    config.pkcs11.pin = *pin;
  } else if (const char* pin = std::getenv("DARKBLOOM_PKCS11_PIN")) {
    config.pkcs11.pin = pin;
  }
  return config;
}

std::string default_rotation_file() {
  const char* home = std::getenv("HOME");
  return home == nullptr ? std::string("darkbloom-rotation.json")
                         : std::string(home) + "/.config/darkbloom/rotation.json";
}

}  // namespace darkbloom::apps
