// `darkbloom keys show|sign|rotate|delete|approve|prove` and `darkbloom doctor`: the provider's identity key
// and the facts a coordinator will judge it by. Wiring only: the work lives in the attest module.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "apps/darkbloom/commands.h"
#include "apps/darkbloom/key_options.h"
#include "attest/attestation_document.h"
#include "attest/posture.h"
#include "attest/signer.h"
#include "attest/tpm2_credential.h"
#include "attest/tpm2_policy.h"
#include "base/cpu_features.h"
#include "base/encoding.h"
#include "base/file.h"
#include "base/json.h"
#include "base/system_info.h"
#include "base/thread_pool.h"
#include "crypto/hash.h"
#include "crypto/p256.h"
#include "engine/kernels/kernel_set.h"

namespace darkbloom::apps {
namespace {

constexpr std::string_view kManualSignaturePrefix = "darkbloom keys sign v1\n";

struct KeysArgs {
  KeyArgs key;
  std::string out;
  bool yes = false;
  // approve
  std::string release_key;
  int pcr = 16;
  std::string pcr_value;
  std::string binary;
  // sign
  std::string in;
  // prove
  std::vector<std::string> ek_ca;
};

// `keys` and `doctor` look; they never create a key.
Result<attest::SignerConfig> lookup_config(const KeyArgs& args) {
  auto config = signer_config(args);
  if (!config) return config.error();
  config->tpm2.create_if_missing = false;
  config->pkcs11.create_if_missing = false;
  return config;
}

void print_signer(const attest::AttestationSigner& signer) {
  const attest::SignerInfo info = signer.info();
  std::printf("backend: %s\n", info.backend.c_str());
  std::printf("key: %s\n", info.key_ref.c_str());
  std::printf("persistent: %s\n", info.persistent ? "yes" : "no (a new key at every start)");
  std::printf("hardware_bound: %s\n", info.hardware_bound ? "yes" : "no");
  std::printf("public_key: %s\n", base64_encode(signer.public_key()).c_str());
  std::printf("fingerprint: %s\n", hex_encode(crypto::sha256(signer.public_key())).substr(0, 16).c_str());
  if (!info.degraded_reason.empty()) std::printf("degraded_reason: %s\n", info.degraded_reason.c_str());
}

int run_show(const KeysArgs& args) {
  auto config = lookup_config(args.key);
  if (!config) return fail(config.error().message);
  auto signer = attest::make_signer(*config);
  if (!signer) return fail(signer.error().message);
  print_signer(**signer);
  std::printf("posture: %s\n", attest::describe(attest::probe_posture()).c_str());
  return 0;
}

// The coordinator's `hardware` check, run here against the same TPM: the EK certificate's chain,
// the key's public area and policy, then a credential made in software and activated by the TPM.
// Says what a coordinator with these CAs and this release key would conclude, and why.
int run_prove(const KeysArgs& args) {
  auto config = lookup_config(args.key);
  if (!config) return fail(config.error().message);
  if (config->tpm2.release_key.empty()) return fail("--tpm-release-key is required (the coordinator's too)");
  auto trust = attest::EkTrustStore::load(args.ek_ca);
  if (!trust) return fail(trust.error().message);
  auto release_pem = read_file(config->tpm2.release_key);
  if (!release_pem) return fail(release_pem.error().message);
  auto release = crypto::p256_public_key_from_pem(*release_pem);
  if (!release) return fail(release.error().message);
  const attest::Digest auth_policy = attest::policy_authorize_digest(attest::release_key_name(*release));
  config->backend = "tpm2";
  auto signer = attest::make_exact_signer(*config);
  if (!signer) return fail(signer.error().message);
  const auto started = std::chrono::steady_clock::now();
  auto evidence = (*signer)->tpm_evidence();
  if (!evidence) return fail("no evidence: " + evidence.error().message);
  auto checked = attest::check_tpm_evidence(*evidence, (*signer)->public_key(), auth_policy, *trust,
                                            std::chrono::system_clock::now());
  if (!checked) return fail("not hardware: " + checked.error().message);
  const std::vector<uint8_t> secret = crypto::random_bytes(32);
  auto made = attest::make_credential(checked->ek_public, secret, checked->name);
  if (!made) return fail(made.error().message);
  auto activated = (*signer)->activate_credential(made->credential_blob, made->encrypted_secret);
  if (!activated) return fail("not hardware: activation failed: " + activated.error().message);
  if (*activated != secret) return fail("not hardware: the TPM returned another secret");
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  std::printf(
      "hardware: yes (EK certificate chains to the CAs, key %s fixed to the TPM under the release key's "
      "policy, credential activated) in %.1f ms\n",
      hex_encode(checked->name).c_str(), ms);
  return 0;
}

// Signs "darkbloom keys sign v1\n" + a file with the identity key, creating the key like `start`
// would: for checking a key with other tools (`openssl dgst -sha256 -verify` over the prefixed
// file). The prefix keeps it from ever signing an attestation, a challenge answer or a receipt.
int run_sign(const KeysArgs& args) {
  auto config = signer_config(args.key);
  if (!config) return fail(config.error().message);
  auto message = read_file(args.in);
  if (!message) return fail(message.error().message);
  auto signer = attest::make_signer(*config);
  if (!signer) return fail(signer.error().message);
  const std::string prefixed = std::string(kManualSignaturePrefix) + *message;
  auto signature = (*signer)->sign(as_bytes(prefixed));
  if (!signature) return fail(signature.error().message);
  if (auto written = write_file(args.out, std::string(signature->begin(), signature->end())); !written) {
    return fail(written.error().message);
  }
  print_signer(**signer);
  std::printf("signature: %s (DER ECDSA over SHA-256 of 'darkbloom keys sign v1\\n' + the file)\n", args.out.c_str());
  return 0;
}

int run_rotate(const KeysArgs& args) {
  auto config = signer_config(args.key);
  if (!config) return fail(config.error().message);
  auto rotation = attest::rotate_key(*config);
  if (!rotation) return fail(rotation.error().message);
  const std::string out = args.out.empty() ? default_rotation_file() : args.out;
  std::error_code ignored;
  std::filesystem::create_directories(std::filesystem::path(out).parent_path(), ignored);
  json::bj::object file;
  file["statement"] = rotation->statement;
  file["signature"] = base64_encode(rotation->signature);
  if (auto written = write_file(out, json::bj::serialize(file) + "\n"); !written) return fail(written.error().message);
  std::printf("old_public_key: %s\n", base64_encode(rotation->old_public_key).c_str());
  std::printf("new_public_key: %s\n", base64_encode(rotation->new_public_key).c_str());
  std::printf("statement: %s (sent with the next registration)\n", out.c_str());
  return 0;
}

int run_delete(const KeysArgs& args) {
  if (!args.yes) return fail("deleting the identity key cannot be undone; add --yes to do it");
  auto config = signer_config(args.key);
  if (!config) return fail(config.error().message);
  Status deleted;
  if (config->backend == "tpm2") {
    deleted = attest::delete_tpm2_key(config->tpm2);
  } else if (config->backend == "pkcs11") {
    deleted = attest::delete_pkcs11_key(config->pkcs11);
  } else {
    return fail("say which key to delete: --key-backend tpm2 or pkcs11");
  }
  if (!deleted) return fail(deleted.error().message);
  std::printf("deleted the %s key\n", config->backend.c_str());
  return 0;
}

// Signs the PolicyPCR state of a release: the PCR as it reads after a reset and one extend with
// the measurement (the binary's SHA-256), or an explicit value. Needs no TPM.
int run_approve(const KeysArgs& args) {
  if (args.out.empty()) {
    return fail("--out PREFIX is required (writes PREFIX.policy, PREFIX.sig and the .activate pair)");
  }
  if (args.pcr_value.empty() == args.binary.empty())
    return fail("give exactly one of --pcr-value HEX and --binary PATH");
  attest::Digest pcr{};
  if (!args.binary.empty()) {
    auto measurement = crypto::sha256_file(args.binary);
    if (!measurement) return fail(measurement.error().message);
    pcr = attest::pcr_after_extend(*measurement);
  } else {
    auto bytes = hex_decode(args.pcr_value);
    if (!bytes || bytes->size() != 32) return fail("--pcr-value must be 64 hex digits (a SHA-256 PCR)");
    std::copy(bytes->begin(), bytes->end(), pcr.begin());
  }
  auto release = crypto::P256Key::load_pem(args.release_key);
  if (!release) return fail(release.error().message);
  const attest::Digest policy = attest::policy_pcr_digest(static_cast<uint32_t>(args.pcr), pcr);
  // The signing branch, and the branch that lets ActivateCredential use the key's ADMIN role in
  // the same state (and do nothing else): the coordinator's proof of the hardware level.
  const attest::Digest activation = attest::policy_command_code_digest(policy, TPM2_CC_ActivateCredential);
  for (const auto& [suffix, digest] :
       {std::pair{std::string(), policy}, std::pair{std::string(".activate"), activation}}) {
    const std::string digest_bytes(digest.begin(), digest.end());
    const std::vector<uint8_t> signature = release->sign(as_bytes(digest_bytes));
    const std::string signature_bytes(signature.begin(), signature.end());
    if (auto written = write_file(args.out + suffix + ".policy", digest_bytes); !written) {
      return fail(written.error().message);
    }
    if (auto written = write_file(args.out + suffix + ".sig", signature_bytes); !written) {
      return fail(written.error().message);
    }
  }
  std::printf("pcr %d: %s\n", args.pcr, hex_encode(pcr).c_str());
  std::printf("approved policy: %s\n", hex_encode(policy).c_str());
  std::printf("approved activation policy: %s\n", hex_encode(activation).c_str());
  std::printf("wrote %s.policy, %s.sig, %s.activate.policy and %s.activate.sig\n", args.out.c_str(), args.out.c_str(),
              args.out.c_str(), args.out.c_str());
  return 0;
}

struct DoctorArgs {
  KeyArgs key;
  std::string model;
};

int run_doctor(const DoctorArgs& args) {
  const CpuFeatures& cpu = cpu_features();
  std::printf("cpu: %s, %d hardware threads\n", cpu.brand.empty() ? "unknown" : cpu.brand.c_str(),
              ThreadPool::hardware_threads());
  std::printf("simd: avx2=%s fma=%s f16c=%s avx512f=%s avx512vnni=%s (kernels: %s)\n", cpu.avx2 ? "yes" : "no",
              cpu.fma ? "yes" : "no", cpu.f16c ? "yes" : "no", cpu.avx512f ? "yes" : "no",
              cpu.avx512vnni ? "yes" : "no", std::string(engine::kernels::best_kernels().name).c_str());
  const double memory_gib = static_cast<double>(physical_memory_bytes()) / (1ull << 30);
  std::printf("memory: %.1f GiB\n", memory_gib);
  std::printf("kernel: %s\n", attest::kernel_release().c_str());
  auto binary = attest::self_binary_hash();
  std::printf("binary_hash: %s\n", binary ? binary->c_str() : ("unavailable: " + binary.error().message).c_str());

  const attest::Posture posture = attest::probe_posture();
  std::printf("posture:\n");
  std::printf("  secure_boot: %s\n", posture.secure_boot ? "true" : "false");
  std::printf("  kernel_lockdown: %s\n", posture.kernel_lockdown ? "true" : "false");
  std::printf("  ptrace_restricted: %s\n", posture.ptrace_restricted ? "true" : "false");
  std::printf("  core_dumps_disabled: %s\n", posture.core_dumps_disabled ? "true" : "false");
  std::printf("  not_traced: %s\n", posture.not_traced ? "true" : "false");
  std::printf("  env_clean: %s\n", posture.env_clean ? "true" : "false");

  std::printf("identity key:\n");
  auto config = lookup_config(args.key);
  if (!config) return fail(config.error().message);
  auto signer = attest::make_signer(*config);
  if (!signer) return fail(signer.error().message);
  const attest::SignerInfo info = (*signer)->info();
  std::printf("  backend: %s (%s)\n", info.backend.c_str(), info.key_ref.c_str());
  std::printf("  public_key: %s\n", base64_encode((*signer)->public_key()).c_str());
  if (!info.degraded_reason.empty()) std::printf("  degraded_reason: %s\n", info.degraded_reason.c_str());
  std::printf("  trust a coordinator can give: %s\n",
              info.hardware_bound ? "self_signed (hardware needs a TPM-certified key; see docs/trust.md)"
                                  : "self_signed at most (the key is in memory)");

  if (!args.model.empty()) {
    std::error_code error;
    const auto size = std::filesystem::file_size(args.model, error);
    if (error) return fail(args.model + ": " + error.message());
    const double size_gib = static_cast<double>(size) / (1ull << 30);
    std::printf("model: %s, %.2f GiB of weights, %s\n", args.model.c_str(), size_gib,
                size_gib < memory_gib * 0.8 ? "fits in memory" : "does NOT fit in 80% of memory");
  }
  return 0;
}

struct SignBenchArgs {
  KeyArgs key;
  int iterations = 50;
};

// Sign latency of the configured key, and what answering one challenge costs a provider: probe
// its posture and make two signatures (its binary was hashed once at start).
int run_sign_bench(const SignBenchArgs& args) {
  auto config = signer_config(args.key);
  if (!config) return fail(config.error().message);
  auto signer = attest::make_signer(*config);
  if (!signer) return fail(signer.error().message);
  const attest::SignerInfo info = (*signer)->info();
  using Clock = std::chrono::steady_clock;
  auto elapsed_ms = [](Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  std::vector<double> sign_ms;
  std::vector<double> challenge_ms;
  const std::string message(96, 'm');
  for (int i = 0; i < args.iterations; ++i) {
    auto start = Clock::now();
    auto signature = (*signer)->sign(as_bytes(message));
    if (!signature) return fail(signature.error().message);
    sign_ms.push_back(elapsed_ms(start));
  }
  const auto hash_started = Clock::now();
  auto hash = attest::self_binary_hash();
  const double hash_ms = elapsed_ms(hash_started);
  for (int i = 0; i < std::max(1, args.iterations / 5); ++i) {
    auto start = Clock::now();
    attest::StatusDocument status;
    status.binary_hash = hash ? *hash : std::string();
    status.posture = attest::probe_posture();
    status.nonce = std::string(44, 'n');
    status.timestamp = attest::rfc3339(std::chrono::system_clock::now());
    auto first = (*signer)->sign(as_bytes(status.nonce + status.timestamp));
    auto second = (*signer)->sign(as_bytes(attest::canonical_json(status)));
    if (!first || !second) return fail("signing failed during the challenge benchmark");
    challenge_ms.push_back(elapsed_ms(start));
  }
  std::printf("backend: %s (%s)%s\n", info.backend.c_str(), info.key_ref.c_str(),
              info.degraded_reason.empty() ? "" : (" degraded: " + info.degraded_reason).c_str());
  std::printf("sign: median %.3f ms over %d signatures\n", median(sign_ms), args.iterations);
  std::printf("challenge answer: median %.3f ms (posture probe + status document + 2 signatures)\n",
              median(challenge_ms));
  std::printf("binary hash: %.3f ms (once, at start)\n", hash_ms);
  return 0;
}

}  // namespace

void register_keys(CLI::App& app, CommandRunner* runner) {
  CLI::App* keys = app.add_subcommand("keys", "The provider's identity key: show, rotate, delete, approve a release");
  keys->require_subcommand(1);

  auto show = std::make_shared<KeysArgs>();
  CLI::App* show_cmd = keys->add_subcommand("show", "Print the key `start` would use (creates nothing)");
  add_key_options(show_cmd, &show->key);
  show_cmd->callback([runner, show] { *runner = [show] { return run_show(*show); }; });

  auto prove = std::make_shared<KeysArgs>();
  CLI::App* prove_cmd = keys->add_subcommand(
      "prove", "Run the coordinator's hardware-level check against this TPM key (EK chain, policy, activation)");
  add_key_options(prove_cmd, &prove->key);
  prove_cmd->add_option("--tpm-ek-ca", prove->ek_ca, "PEM CA certificates the EK certificate must chain to")
      ->required()
      ->check(CLI::ExistingFile);
  prove_cmd->callback([runner, prove] { *runner = [prove] { return run_prove(*prove); }; });

  auto sign = std::make_shared<KeysArgs>();
  CLI::App* sign_cmd = keys->add_subcommand(
      "sign", "Sign 'darkbloom keys sign v1\\n' + a file with the key `start` would use (creating it like start)");
  add_key_options(sign_cmd, &sign->key);
  sign_cmd->add_option("--in", sign->in, "file to sign")->required()->check(CLI::ExistingFile);
  sign_cmd->add_option("--out", sign->out, "where to write the DER signature")->required();
  sign_cmd->callback([runner, sign] { *runner = [sign] { return run_sign(*sign); }; });

  auto rotate = std::make_shared<KeysArgs>();
  CLI::App* rotate_cmd = keys->add_subcommand(
      "rotate", "Replace the key with a new one; the old key signs a statement the coordinator accepts");
  add_key_options(rotate_cmd, &rotate->key);
  rotate_cmd->add_option("--out", rotate->out,
                         "where to write the statement (default ~/.config/darkbloom/rotation.json)");
  rotate_cmd->callback([runner, rotate] { *runner = [rotate] { return run_rotate(*rotate); }; });

  auto remove = std::make_shared<KeysArgs>();
  CLI::App* delete_cmd = keys->add_subcommand("delete", "Destroy the key (tpm2 or pkcs11); cannot be undone");
  add_key_options(delete_cmd, &remove->key);
  delete_cmd->add_flag("--yes", remove->yes, "really delete it");
  delete_cmd->callback([runner, remove] { *runner = [remove] { return run_delete(*remove); }; });

  auto approve = std::make_shared<KeysArgs>();
  CLI::App* approve_cmd = keys->add_subcommand(
      "approve", "Sign the PCR state of a release with the release key, so the TPM key signs for it (needs no TPM)");
  approve_cmd->add_option("--release-key", approve->release_key, "PEM P-256 private release key")
      ->required()
      ->check(CLI::ExistingFile);
  approve_cmd->add_option("--pcr", approve->pcr, "PCR index")->check(CLI::Range(0, 23))->capture_default_str();
  approve_cmd->add_option("--pcr-value", approve->pcr_value, "the PCR's SHA-256 value (64 hex digits)");
  approve_cmd->add_option("--binary", approve->binary,
                          "or: the provider binary; the PCR value is a reset PCR extended with its SHA-256");
  approve_cmd->add_option(
      "--out", approve->out,
      "PREFIX: writes PREFIX.policy and PREFIX.sig, and PREFIX.activate.{policy,sig} for credential activation");
  approve_cmd->callback([runner, approve] { *runner = [approve] { return run_approve(*approve); }; });

  CLI::App* bench = nullptr;
  for (CLI::App* command : app.get_subcommands([](CLI::App* c) { return c->get_name() == "bench"; })) bench = command;
  if (bench != nullptr) {
    auto sign_bench = std::make_shared<SignBenchArgs>();
    CLI::App* sign_cmd =
        bench->add_subcommand("sign", "Signature latency of the identity key and the cost of answering one challenge");
    add_key_options(sign_cmd, &sign_bench->key);
    sign_cmd->add_option("-n,--iterations", sign_bench->iterations, "signatures to time")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    sign_cmd->callback([runner, sign_bench] { *runner = [sign_bench] { return run_sign_bench(*sign_bench); }; });
  }

  auto doctor = std::make_shared<DoctorArgs>();
  CLI::App* doctor_cmd = app.add_subcommand(
      "doctor", "Check this machine as a provider: CPU, memory, identity key, security posture (creates nothing)");
  add_key_options(doctor_cmd, &doctor->key);
  doctor_cmd->add_option("--model", doctor->model, "also check that this GGUF file fits in memory");
  doctor_cmd->callback([runner, doctor] { *runner = [doctor] { return run_doctor(*doctor); }; });
}

}  // namespace darkbloom::apps
