#include "crypto/sealed_box.h"

#include <gtest/gtest.h>

#include "base/encoding.h"
#include "crypto/hash.h"

namespace darkbloom::crypto {
namespace {

class SealedBox : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { initialize(); }
};

TEST_F(SealedBox, opens_what_was_sealed_for_it) {
  const KeyPair provider = KeyPair::generate();
  const KeyPair session = KeyPair::generate();
  const std::string message = "{\"prompt\":\"private\"}";
  const auto sealed = seal(as_bytes(message), provider.public_key(), session);
  ASSERT_EQ(sealed.size(), kNonceBytes + kMacBytes + message.size());
  // The ciphertext does not contain the message.
  EXPECT_EQ(std::string(sealed.begin(), sealed.end()).find("private"), std::string::npos);
  auto opened = open(sealed, session.public_key(), provider);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_EQ(opened->view(), message);
}

TEST_F(SealedBox, another_recipient_or_sender_cannot_open_it) {
  const KeyPair provider = KeyPair::generate();
  const KeyPair session = KeyPair::generate();
  const KeyPair stranger = KeyPair::generate();
  const auto sealed = seal(as_bytes(std::string_view("secret")), provider.public_key(), session);
  EXPECT_FALSE(open(sealed, session.public_key(), stranger));
  EXPECT_FALSE(open(sealed, stranger.public_key(), provider));
}

TEST_F(SealedBox, any_changed_byte_is_detected) {
  const KeyPair provider = KeyPair::generate();
  const KeyPair session = KeyPair::generate();
  const auto sealed = seal(as_bytes(std::string_view("integrity matters")), provider.public_key(), session);
  for (size_t i = 0; i < sealed.size(); ++i) {
    auto tampered = sealed;
    tampered[i] ^= 0x01;
    EXPECT_FALSE(open(tampered, session.public_key(), provider)) << "byte " << i;
  }
  EXPECT_FALSE(
      open(std::span<const uint8_t>(sealed).first(kNonceBytes + kMacBytes - 1), session.public_key(), provider));
}

TEST_F(SealedBox, every_seal_uses_a_fresh_nonce) {
  const KeyPair provider = KeyPair::generate();
  const KeyPair session = KeyPair::generate();
  const auto a = seal(as_bytes(std::string_view("same")), provider.public_key(), session);
  const auto b = seal(as_bytes(std::string_view("same")), provider.public_key(), session);
  EXPECT_NE(a, b);
}

TEST_F(SealedBox, a_channel_talks_both_ways_with_the_box_format) {
  const KeyPair provider = KeyPair::generate();
  const KeyPair session = KeyPair::generate();
  const Channel provider_side(session.public_key(), provider);
  const Channel coordinator_side(provider.public_key(), session);
  const auto chunk = provider_side.seal(as_bytes(std::string_view("token text")));
  auto opened = coordinator_side.open(chunk);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->view(), "token text");
  // The precomputed channel and the one-shot box are the same construction.
  auto one_shot = open(chunk, provider.public_key(), session);
  ASSERT_TRUE(one_shot);
  EXPECT_EQ(one_shot->view(), "token text");
  const Channel stranger(provider.public_key(), KeyPair::generate());
  EXPECT_FALSE(stranger.open(chunk));
}

TEST_F(SealedBox, public_keys_must_have_32_bytes) {
  EXPECT_FALSE(public_key_from(std::vector<uint8_t>(31)));
  EXPECT_TRUE(public_key_from(std::vector<uint8_t>(32, 9)));
}

TEST(Hash, sha256_matches_known_vectors) {
  EXPECT_EQ(sha256_hex(as_bytes(std::string_view(""))),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(as_bytes(std::string_view("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(SecureBytes, wipe_clears_the_buffer) {
  SecureBytes bytes(as_bytes(std::string_view("key material")));
  bytes.wipe();
  for (size_t i = 0; i < bytes.size(); ++i) EXPECT_EQ(bytes.data()[i], 0);
}

}  // namespace
}  // namespace darkbloom::crypto
