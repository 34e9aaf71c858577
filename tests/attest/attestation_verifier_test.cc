// The coordinator's trust checks, each fed one defect at a time: a forged signature, a changed
// byte, the wrong X25519 binding, a stale or future timestamp, an unapproved or missing binary
// hash, a forged rotation, replayed or stale challenge answers, posture regressions, receipts
// that do not match the answer.
#include "attest/attestation_verifier.h"

#include <gtest/gtest.h>

#include "base/encoding.h"
#include "crypto/p256.h"
#include "support/fake_attester.h"

namespace darkbloom::attest {
namespace {

using namespace std::chrono_literals;

const std::vector<uint8_t> kEncryptionKey(32, 7);
const std::string kBinary(64, 'c');

// A well-formed provider identity, bound to kEncryptionKey, that answers challenges as asked.
struct Provider : testing::FakeAttester {
  Provider() : FakeAttester(kEncryptionKey, std::chrono::system_clock::now()) {}

  proto::AttestationResponse answer(const IssuedChallenge& challenge, const Posture& posture) const {
    return FakeAttester::answer(challenge.nonce, challenge.timestamp, posture);
  }
};

std::string error_of(const Result<VerifiedAttestation>& result) {
  return result ? "" : result.error().message;
}

TEST(VerifyAttestation, accepts_a_well_formed_attestation) {
  Provider provider;
  auto verified = verify_attestation(provider.bundle(), kEncryptionKey, VerificationPolicy{});
  ASSERT_TRUE(verified) << verified.error().message;
  EXPECT_EQ(verified->public_key, provider.key.public_key());
  EXPECT_FALSE(verified->rotation);
}

TEST(VerifyAttestation, rejects_a_forged_signature_and_a_changed_byte) {
  Provider provider;
  auto bundle = provider.bundle();
  auto forged = bundle;
  forged.signature = base64_encode(crypto::P256Key::generate().sign(as_bytes(bundle.document)));
  EXPECT_NE(error_of(verify_attestation(forged, kEncryptionKey, {})).find("does not verify"), std::string::npos);
  // The same fields re-serialised with a space: the signature covers the bytes, not the meaning.
  auto respaced = bundle;
  respaced.document.insert(1, " ");
  EXPECT_FALSE(verify_attestation(respaced, kEncryptionKey, {}));
  auto garbage = bundle;
  garbage.signature = "%%%";
  EXPECT_FALSE(verify_attestation(garbage, kEncryptionKey, {}));
}

TEST(VerifyAttestation, rejects_a_document_bound_to_another_encryption_key) {
  Provider provider;
  const std::vector<uint8_t> other(32, 8);
  EXPECT_NE(error_of(verify_attestation(provider.bundle(), other, {})).find("not bound"), std::string::npos);
}

TEST(VerifyAttestation, rejects_stale_and_future_timestamps) {
  Provider provider;
  provider.document.timestamp = rfc3339(std::chrono::system_clock::now() - 6min);
  EXPECT_NE(error_of(verify_attestation(provider.bundle(), kEncryptionKey, {})).find("away from now"),
            std::string::npos);
  provider.document.timestamp = rfc3339(std::chrono::system_clock::now() + 6min);
  EXPECT_FALSE(verify_attestation(provider.bundle(), kEncryptionKey, {}));
  provider.document.timestamp = rfc3339(std::chrono::system_clock::now() - 4min);
  EXPECT_TRUE(verify_attestation(provider.bundle(), kEncryptionKey, {}));
}

TEST(VerifyAttestation, enforces_the_release_allow_list_and_fails_closed_without_a_hash) {
  Provider provider;
  VerificationPolicy policy;
  policy.allowed_binaries = {std::string(64, 'd')};
  EXPECT_NE(error_of(verify_attestation(provider.bundle(), kEncryptionKey, policy)).find("not an approved release"),
            std::string::npos);
  policy.allowed_binaries.insert(kBinary);
  EXPECT_TRUE(verify_attestation(provider.bundle(), kEncryptionKey, policy));
  provider.document.binary_hash.clear();
  EXPECT_NE(error_of(verify_attestation(provider.bundle(), kEncryptionKey, policy)).find("no binary hash"),
            std::string::npos);
  EXPECT_TRUE(verify_attestation(provider.bundle(), kEncryptionKey, {}));  // no list: any binary
}

TEST(VerifyAttestation, accepts_a_rotation_only_when_signed_by_the_old_key_for_this_key) {
  Provider provider;
  crypto::P256Key old_key = crypto::P256Key::generate();
  RotationStatement statement{base64_encode(old_key.public_key()), provider.document.public_key,
                              rfc3339(std::chrono::system_clock::now())};
  auto bundle = provider.bundle();
  bundle.rotation_statement = canonical_json(statement);
  bundle.rotation_signature = base64_encode(old_key.sign(as_bytes(bundle.rotation_statement)));
  auto accepted = verify_attestation(bundle, kEncryptionKey, {});
  ASSERT_TRUE(accepted) << accepted.error().message;
  ASSERT_TRUE(accepted->rotation);
  EXPECT_EQ(accepted->rotation->old_public_key, statement.old_public_key);

  auto self_signed = bundle;  // signed by the new key instead of the old one
  self_signed.rotation_signature = provider.sign(bundle.rotation_statement);
  EXPECT_NE(error_of(verify_attestation(self_signed, kEncryptionKey, {})).find("rotation statement"),
            std::string::npos);
  RotationStatement elsewhere = statement;
  elsewhere.new_public_key = base64_encode(crypto::P256Key::generate().public_key());
  auto other = bundle;
  other.rotation_statement = canonical_json(elsewhere);
  other.rotation_signature = base64_encode(old_key.sign(as_bytes(other.rotation_statement)));
  EXPECT_NE(error_of(verify_attestation(other, kEncryptionKey, {})).find("different key"), std::string::npos);
}

TEST(VerifyChallenge, accepts_a_fresh_answer_and_spots_posture_regressions) {
  Provider provider;
  const IssuedChallenge challenge = new_challenge(std::chrono::system_clock::now());
  EXPECT_EQ(base64_decode(challenge.nonce)->size(), 32u);
  auto passed = verify_challenge_answer(provider.answer(challenge, provider.document.posture), challenge,
                                        provider.key.public_key(), provider.document, {});
  ASSERT_TRUE(passed) << passed.error().message;
  EXPECT_TRUE(passed->regressions.empty());
  Posture traced = provider.document.posture;
  traced.not_traced = false;
  traced.env_clean = false;
  auto regressed = verify_challenge_answer(provider.answer(challenge, traced), challenge, provider.key.public_key(),
                                           provider.document, {});
  ASSERT_TRUE(regressed);
  EXPECT_EQ(regressed->regressions, "not_traced, env_clean");
  Posture improved = provider.document.posture;
  improved.secure_boot = true;
  auto better = verify_challenge_answer(provider.answer(challenge, improved), challenge, provider.key.public_key(),
                                        provider.document, {});
  ASSERT_TRUE(better);
  EXPECT_TRUE(better->regressions.empty());
}

TEST(VerifyChallenge, rejects_replayed_stale_and_forged_answers) {
  Provider provider;
  const auto now = std::chrono::system_clock::now();
  const IssuedChallenge first = new_challenge(now);
  const IssuedChallenge second = new_challenge(now);
  EXPECT_NE(first.nonce, second.nonce);
  const auto old_answer = provider.answer(first, provider.document.posture);
  auto replayed = verify_challenge_answer(old_answer, second, provider.key.public_key(), provider.document, {});
  ASSERT_FALSE(replayed);
  EXPECT_EQ(replayed.error().code, Errc::invalid_argument);
  auto none_open =
      verify_challenge_answer(old_answer, IssuedChallenge{}, provider.key.public_key(), provider.document, {});
  ASSERT_FALSE(none_open);
  EXPECT_EQ(none_open.error().code, Errc::invalid_argument);

  auto forged = provider.answer(second, provider.document.posture);
  forged.signature = base64_encode(crypto::P256Key::generate().sign(as_bytes(second.nonce + second.timestamp)));
  auto bad_signature = verify_challenge_answer(forged, second, provider.key.public_key(), provider.document, {});
  ASSERT_FALSE(bad_signature);
  EXPECT_EQ(bad_signature.error().code, Errc::permission_denied);

  // A status document from an earlier challenge, re-signed, inside a fresh answer.
  auto mixed = provider.answer(second, provider.document.posture);
  mixed.status = old_answer.status;
  mixed.status_signature = old_answer.status_signature;
  auto wrong_status = verify_challenge_answer(mixed, second, provider.key.public_key(), provider.document, {});
  ASSERT_FALSE(wrong_status);
  EXPECT_NE(wrong_status.error().message.find("different challenge"), std::string::npos);
}

TEST(VerifyChallenge, rejects_a_binary_that_changed_or_left_the_allow_list) {
  Provider provider;
  const IssuedChallenge challenge = new_challenge(std::chrono::system_clock::now());
  AttestationDocument registered = provider.document;
  registered.binary_hash = std::string(64, 'e');
  auto changed = verify_challenge_answer(provider.answer(challenge, provider.document.posture), challenge,
                                         provider.key.public_key(), registered, {});
  ASSERT_FALSE(changed);
  EXPECT_NE(changed.error().message.find("binary changed"), std::string::npos);
  VerificationPolicy policy;
  policy.allowed_binaries = {std::string(64, 'f')};
  auto unlisted = verify_challenge_answer(provider.answer(challenge, provider.document.posture), challenge,
                                          provider.key.public_key(), provider.document, policy);
  ASSERT_FALSE(unlisted);
  EXPECT_NE(unlisted.error().message.find("not an approved release"), std::string::npos);
}

TEST(VerifyReceipt, checks_the_hash_against_the_relayed_text_and_the_signature) {
  Provider provider;
  const std::string hash = response_hash("att_1", 2, "Hello");
  const std::string signature = provider.sign(hash);
  EXPECT_TRUE(verify_receipt("att_1", 2, "Hello", hash, signature, provider.key.public_key()));
  EXPECT_FALSE(verify_receipt("att_1", 2, "Hellp", hash, signature, provider.key.public_key()));
  EXPECT_FALSE(verify_receipt("att_1", 3, "Hello", hash, signature, provider.key.public_key()));
  EXPECT_FALSE(verify_receipt("att_2", 2, "Hello", hash, signature, provider.key.public_key()));
  EXPECT_FALSE(verify_receipt("att_1", 2, "Hello", hash, signature, crypto::P256Key::generate().public_key()));
}

TEST(Usage, SignedInClearUnderItsRequestIdAndCountsOnly) {
  Provider provider;
  proto::BlindUsage usage{12, 30, 7, ""};
  usage.signature = provider.sign(usage_text("att_1", 12, 30, 7));
  EXPECT_EQ(usage_text("att_1", 12, 30, 7), "darkbloom blind usage v1\natt_1:12:30:7");
  EXPECT_TRUE(verify_usage(usage, "att_1", provider.key.public_key()));
  EXPECT_FALSE(verify_usage(usage, "att_2", provider.key.public_key())) << "another attempt";
  for (auto changed : {proto::BlindUsage{13, 30, 7, usage.signature}, proto::BlindUsage{12, 29, 7, usage.signature},
                       proto::BlindUsage{12, 30, 8, usage.signature}}) {
    EXPECT_FALSE(verify_usage(changed, "att_1", provider.key.public_key()));
  }
  EXPECT_FALSE(verify_usage(usage, "att_1", crypto::P256Key::generate().public_key()));
  // A receipt signature over the same numbers is not a usage signature, nor the other way round.
  const std::string hash = response_hash("att_1", 30, "text");
  const proto::BlindUsage receipt_as_usage{12, 30, 7, provider.sign(hash)};
  EXPECT_FALSE(verify_usage(receipt_as_usage, "att_1", provider.key.public_key()));
  EXPECT_FALSE(verify_receipt("att_1", 30, "text", hash, usage.signature, provider.key.public_key()));
}

}  // namespace
}  // namespace darkbloom::attest
