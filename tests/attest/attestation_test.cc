// The attest module's parts that need no device: documents, receipts, posture hardening, the
// software key and rotation statements, checked against OpenSSL's own command-line tool.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>

#include "attest/attestation_document.h"
#include "attest/posture.h"
#include "attest/signer.h"
#include "base/encoding.h"
#include "base/file.h"
#include "crypto/hash.h"
#include "crypto/p256.h"
#include "support/temp_dir.h"

namespace darkbloom::attest {
namespace {

AttestationDocument sample_document() {
  AttestationDocument d;
  d.public_key = "cHVibGlj";
  d.key_backend = "tpm2";
  d.encryption_key = "ZW5j";
  d.binary_hash = std::string(64, 'a');
  d.version = "0.1.0";
  d.hardware_cpu = "cpu \"quoted\"";
  d.hardware_memory_gb = 24;
  d.os = "Linux 6.1";
  d.posture.core_dumps_disabled = true;
  d.posture.not_traced = true;
  d.timestamp = "2026-11-27T23:48:45Z";
  return d;
}

// The shell's exit status of a command.
int run(const std::string& command) {
  const int status = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(AttestationDocument, canonical_form_has_sorted_keys_and_omits_empty_optionals) {
  const std::string json = canonical_json(sample_document());
  EXPECT_EQ(json.find("degraded_reason"), std::string::npos);
  EXPECT_EQ(json.find(' '), json.find("cpu \\\"quoted") + 3);  // the only space is inside a value
  // Keys in byte order: binary_hash < core_dumps_disabled < encryption_key < ... < version.
  EXPECT_LT(json.find("\"binary_hash\""), json.find("\"core_dumps_disabled\""));
  EXPECT_LT(json.find("\"core_dumps_disabled\""), json.find("\"encryption_key\""));
  EXPECT_LT(json.find("\"timestamp\""), json.find("\"version\""));
  EXPECT_NE(json.find(R"("hardware":{"cpu":"cpu \"quoted\"","memory_gb":24})"), std::string::npos);
  auto parsed = parse_attestation_document(json);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(canonical_json(*parsed), json);
  EXPECT_TRUE(parsed->posture.not_traced);
  EXPECT_FALSE(parsed->posture.secure_boot);
}

TEST(AttestationDocument, parsing_rejects_missing_and_mistyped_fields) {
  EXPECT_FALSE(parse_attestation_document("[]"));
  EXPECT_FALSE(parse_attestation_document("{not json"));
  std::string json = canonical_json(sample_document());
  const size_t at = json.find("\"public_key\"");
  std::string without_key = json;
  without_key.replace(at, std::string("\"public_key\":\"cHVibGlj\",").size(), "");
  auto missing = parse_attestation_document(without_key);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("public_key"), std::string::npos);
  std::string mistyped = json;
  mistyped.replace(mistyped.find("\"not_traced\":true"), 17, "\"not_traced\":\"yes\"");
  EXPECT_FALSE(parse_attestation_document(mistyped));
}

TEST(AttestationDocument, status_and_rotation_round_trip) {
  StatusDocument status;
  status.nonce = "bm9uY2U=";
  status.timestamp = "2026-11-27T23:48:45Z";
  status.model_hashes["m"] = std::string(64, 'b');
  auto parsed = parse_status_document(canonical_json(status));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->model_hashes.at("m"), std::string(64, 'b'));
  EXPECT_EQ(canonical_json(*parsed), canonical_json(status));
  RotationStatement rotation{"b2xk", "bmV3", "2026-11-27T23:48:45Z"};
  EXPECT_EQ(canonical_json(rotation),
            R"({"new_public_key":"bmV3","old_public_key":"b2xk","timestamp":"2026-11-27T23:48:45Z"})");
}

TEST(AccountBinding, is_a_domain_separated_hash_keyed_to_the_identity_and_signed_in_the_document) {
  // printf 'darkbloom-account-v1\0cHVibGlj\0db-token' | sha256sum
  EXPECT_EQ(account_binding("cHVibGlj", "db-token"),
            "12e2b1822287d7b8dc51eff6762d2b125411a97bd9c1fbf06eefd651c8c2e499");
  EXPECT_NE(account_binding("b3RoZXI=", "db-token"), account_binding("cHVibGlj", "db-token"));
  EXPECT_NE(account_binding("cHVibGlj", "db-token"), crypto::sha256_hex(as_bytes("db-token")));
  AttestationDocument document = sample_document();
  document.account_binding = account_binding(document.public_key, "db-token");
  auto parsed = parse_attestation_document(canonical_json(document));
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->account_binding, document.account_binding);
  EXPECT_EQ(canonical_json(sample_document()).find("account_binding"), std::string::npos);
}

TEST(Receipt, hash_is_sha256_of_id_tokens_and_text) {
  // printf 'att_1:3:héllo' | sha256sum
  EXPECT_EQ(response_hash("att_1", 3, "h\xC3\xA9llo"),
            "bb19dc116226bd0fae620bf38e9873a3bd4317cf1b702dbaa5c3833048c645cf");
}

TEST(Time, rfc3339_round_trips_and_rejects_other_forms) {
  auto parsed = parse_rfc3339("2026-11-27T23:48:45Z");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(rfc3339(*parsed), "2026-11-27T23:48:45Z");
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*parsed), 1795823325);
  EXPECT_FALSE(parse_rfc3339("2026-11-27 23:48:45"));
  EXPECT_FALSE(parse_rfc3339("2026-11-27T23:48:45+01:00"));
  EXPECT_FALSE(parse_rfc3339(""));
  // strptime alone takes each of these; a signed timestamp has exactly one spelling.
  EXPECT_FALSE(parse_rfc3339("2026-2-27T23:48:45Z"));
  EXPECT_FALSE(parse_rfc3339(" 2026-11-27T23:48:45Z"));
  EXPECT_FALSE(parse_rfc3339("2026-11-27T23:48:60Z"));
  EXPECT_FALSE(parse_rfc3339("2026-02-31T23:48:45Z"));
  EXPECT_FALSE(parse_rfc3339(std::string_view("2026-11-27T23:48:45Z\0x", 22)));
  // Years whose nanoseconds overflow the clock (or its difference to now): refused, not UB.
  EXPECT_FALSE(parse_rfc3339("1709-02-03T04:05:06Z"));
  EXPECT_FALSE(parse_rfc3339("4052-12-31T23:59:59Z"));
  EXPECT_FALSE(parse_rfc3339("9999-12-31T23:59:59Z"));
  EXPECT_TRUE(parse_rfc3339("1970-01-01T00:00:00Z"));
  EXPECT_TRUE(parse_rfc3339("2200-12-31T23:59:59Z"));
}

TEST(Posture, hardening_disables_dumps_and_scrubs_loader_variables) {
  setenv("LD_PRELOAD", "/nonexistent/evil.so", 1);
  setenv("LD_AUDIT", "/nonexistent/audit.so", 1);
  EXPECT_FALSE(probe_posture().env_clean);
  harden_process();
  EXPECT_EQ(std::getenv("LD_PRELOAD"), nullptr);
  EXPECT_EQ(std::getenv("LD_AUDIT"), nullptr);
  EXPECT_EQ(prctl(PR_GET_DUMPABLE), 0);
  rlimit core{};
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &core), 0);
  EXPECT_EQ(core.rlim_cur, 0u);
  const Posture posture = probe_posture();
  // Scrubbed, but what they loaded may still be here: reported for the life of the process.
  EXPECT_FALSE(posture.env_clean);
  EXPECT_TRUE(posture.core_dumps_disabled);
  EXPECT_TRUE(posture.not_traced);  // nobody traces the test binary
  EXPECT_NE(describe(posture).find("core_dumps_disabled=true"), std::string::npos);
}

TEST(EphemeralSigner, signatures_verify_with_the_openssl_command_line_tool) {
  testing::TempDir dir;
  auto signer = make_ephemeral_signer("tpm2: no TPM");
  EXPECT_EQ(signer->info().backend, "ephemeral");
  EXPECT_FALSE(signer->info().persistent);
  EXPECT_EQ(signer->info().degraded_reason, "tpm2: no TPM");
  const std::string message = "attest me";
  auto signature = signer->sign(as_bytes(message));
  ASSERT_TRUE(signature);
  ASSERT_TRUE(write_file(dir.file("message"), message));
  ASSERT_TRUE(write_file(dir.file("sig.der"), std::string(signature->begin(), signature->end())));
  ASSERT_TRUE(write_file(dir.file("key.pem"), crypto::p256_public_key_pem(signer->public_key())));
  const std::string verify =
      "openssl dgst -sha256 -verify " + dir.file("key.pem") + " -signature " + dir.file("sig.der") + " ";
  EXPECT_EQ(run(verify + dir.file("message")), 0);
  ASSERT_TRUE(write_file(dir.file("other"), "attest me!"));
  EXPECT_NE(run(verify + dir.file("other")), 0);
}

TEST(Rotation, statement_is_signed_by_the_old_key_over_its_exact_bytes) {
  auto old_key = crypto::P256Key::generate();
  auto new_key = crypto::P256Key::generate();
  auto rotation =
      sign_rotation(old_key.public_key(), new_key.public_key(),
                    [&](std::span<const uint8_t> m) -> Result<std::vector<uint8_t>> { return old_key.sign(m); });
  ASSERT_TRUE(rotation);
  auto statement = parse_rotation_statement(rotation->statement);
  ASSERT_TRUE(statement);
  EXPECT_EQ(statement->old_public_key, base64_encode(old_key.public_key()));
  EXPECT_EQ(statement->new_public_key, base64_encode(new_key.public_key()));
  auto valid = crypto::p256_verify(old_key.public_key(), as_bytes(rotation->statement), rotation->signature);
  ASSERT_TRUE(valid);
  EXPECT_TRUE(*valid);
  auto by_new = crypto::p256_verify(new_key.public_key(), as_bytes(rotation->statement), rotation->signature);
  ASSERT_TRUE(by_new);
  EXPECT_FALSE(*by_new);
  SignerConfig ephemeral;
  ephemeral.backend = "ephemeral";
  auto refused = rotate_key(ephemeral);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("nothing to rotate"), std::string::npos);
}

TEST(MakeSigner, auto_without_devices_falls_back_with_every_cause_named) {
  SignerConfig config;
  config.tpm2.tcti = "swtpm:path=/nonexistent/tpm.sock";
  config.tpm2.policy = "none";
  config.pkcs11.module = "/nonexistent/libpkcs11.so";
  auto signer = make_signer(config);
  ASSERT_TRUE(signer);
  const SignerInfo info = (*signer)->info();
  EXPECT_EQ(info.backend, "ephemeral");
  EXPECT_NE(info.degraded_reason.find("tpm2: cannot reach the TPM"), std::string::npos) << info.degraded_reason;
  EXPECT_NE(info.degraded_reason.find("pkcs11: cannot load PKCS#11 module"), std::string::npos) << info.degraded_reason;
  config.backend = "hsm";
  EXPECT_FALSE(make_signer(config));
}

}  // namespace
}  // namespace darkbloom::attest
