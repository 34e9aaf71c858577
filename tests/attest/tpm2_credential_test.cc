// Credential activation's software half: KDFa, and MakeCredential byte for byte against the
// tpm2-tools implementation (`tpm2_makecredential -T none`, no TPM), given the seed it chose
// (recovered with the test's own RSA key standing in for an EK).
#include "attest/tpm2_credential.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "base/encoding.h"
#include "crypto/hash.h"
#include "support/temp_dir.h"

namespace darkbloom::attest {
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct ContextFree {
  void operator()(EVP_PKEY_CTX* context) const { EVP_PKEY_CTX_free(context); }
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// RSA-OAEP(SHA-256) decryption with label "IDENTITY\0": what the TPM does with the EK.
std::vector<uint8_t> decrypt_seed(EVP_PKEY* key, std::span<const uint8_t> encrypted) {
  std::unique_ptr<EVP_PKEY_CTX, ContextFree> context(EVP_PKEY_CTX_new(key, nullptr));
  static constexpr char kLabel[] = "IDENTITY";
  EXPECT_EQ(EVP_PKEY_decrypt_init(context.get()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(context.get(), RSA_PKCS1_OAEP_PADDING), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_oaep_md(context.get(), EVP_sha256()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(context.get(), EVP_sha256()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set0_rsa_oaep_label(context.get(), OPENSSL_memdup(kLabel, sizeof(kLabel)), sizeof(kLabel)), 1);
  size_t size = 0;
  EXPECT_EQ(EVP_PKEY_decrypt(context.get(), nullptr, &size, encrypted.data(), encrypted.size()), 1);
  std::vector<uint8_t> out(size);
  if (EVP_PKEY_decrypt(context.get(), out.data(), &size, encrypted.data(), encrypted.size()) != 1) return {};
  out.resize(size);
  return out;
}

// A TPM2B at `at`: its bytes with the 2-byte size in front, and `at` moved past it.
std::vector<uint8_t> take_tpm2b(const std::vector<uint8_t>& bytes, size_t* at) {
  const size_t size = (size_t{bytes.at(*at)} << 8) | bytes.at(*at + 1);
  std::vector<uint8_t> out(bytes.begin() + static_cast<ptrdiff_t>(*at),
                           bytes.begin() + static_cast<ptrdiff_t>(*at + 2 + size));
  *at += 2 + size;
  return out;
}

TEST(TpmCredential, kdfa_is_hmac_counter_mode_over_label_nul_and_contexts) {
  // One block by hand: HMAC(key, 00000001 ‖ "STORAGE" ‖ 00 ‖ U ‖ V ‖ 00000080), cut to 16 bytes.
  const std::vector<uint8_t> key(32, 0x11);
  const std::vector<uint8_t> u{1, 2, 3};
  const std::vector<uint8_t> v{4, 5};
  std::vector<uint8_t> input{0, 0, 0, 1, 'S', 'T', 'O', 'R', 'A', 'G', 'E', 0, 1, 2, 3, 4, 5, 0, 0, 0, 128};
  unsigned char mac[32];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), 32, input.data(), input.size(), mac, &length);
  const std::vector<uint8_t> expected(mac, mac + 16);
  EXPECT_EQ(kdfa_sha256(key, "STORAGE", u, v, 128), expected);
  // Past one block: the counter goes on (00000001, 00000002), with the length asked for (512 bits)
  // in every block.
  std::vector<uint8_t> two_blocks;
  for (uint8_t counter : {1, 2}) {
    input[3] = counter;
    input[input.size() - 2] = 0x02;  // 512 = 0x00000200
    input[input.size() - 1] = 0x00;
    HMAC(EVP_sha256(), key.data(), 32, input.data(), input.size(), mac, &length);
    two_blocks.insert(two_blocks.end(), mac, mac + 32);
  }
  EXPECT_EQ(kdfa_sha256(key, "STORAGE", u, v, 512), two_blocks);
  EXPECT_NE(kdfa_sha256(key, "STORAGE", u, v, 512), kdfa_sha256(key, "INTEGRITY", u, v, 512));
}

TEST(TpmCredential, make_credential_matches_tpm2_makecredential_byte_for_byte) {
  darkbloom::testing::TempDir dir;
  std::unique_ptr<EVP_PKEY, KeyFree> ek(EVP_RSA_gen(2048));
  ASSERT_TRUE(ek);
  const std::string pem_path = dir.file("ek.pem");
  {
    std::FILE* file = std::fopen(pem_path.c_str(), "w");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(PEM_write_PUBKEY(file, ek.get()), 1);
    std::fclose(file);
  }
  unsigned char* der = nullptr;
  const int der_size = i2d_PUBKEY(ek.get(), &der);
  ASSERT_GT(der_size, 0);
  const std::vector<uint8_t> ek_public(der, der + der_size);
  OPENSSL_free(der);

  for (const size_t credential_size : {size_t{32}, size_t{16}}) {
    SCOPED_TRACE(credential_size);
    const std::vector<uint8_t> credential = crypto::random_bytes(credential_size);
    std::vector<uint8_t> name{0x00, 0x0B};
    const auto digest = crypto::random_bytes(32);
    name.insert(name.end(), digest.begin(), digest.end());
    write_bytes(dir.file("secret.bin"), credential);
    const std::string out = dir.file("cred.out");
    const std::string command = "tpm2_makecredential -T none -G rsa -u " + pem_path + " -s " + dir.file("secret.bin") +
                                " -n " + hex_encode(name) + " -o " + out + " 2>" + dir.file("stderr");
    const int status = std::system(command.c_str());
    const std::vector<uint8_t> errors = read_bytes(dir.file("stderr"));
    ASSERT_EQ(status, 0) << command << "\n" << std::string(errors.begin(), errors.end());
    // The tools' file: magic BADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    const std::vector<uint8_t> file = read_bytes(out);
    ASSERT_GE(file.size(), 8u);
    EXPECT_EQ(std::vector<uint8_t>(file.begin(), file.begin() + 8),
              (std::vector<uint8_t>{0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1}));
    size_t at = 8;
    const std::vector<uint8_t> their_blob = take_tpm2b(file, &at);
    const std::vector<uint8_t> their_secret = take_tpm2b(file, &at);
    EXPECT_EQ(at, file.size());
    const std::vector<uint8_t> seed = decrypt_seed(ek.get(), std::span(their_secret).subspan(2));
    ASSERT_EQ(seed.size(), 32u);

    auto ours = make_credential(ek_public, credential, name, seed);
    ASSERT_TRUE(ours) << ours.error().message;
    EXPECT_EQ(hex_encode(ours->credential_blob), hex_encode(their_blob));
    // OAEP is randomized: our encrypted seed differs, and opens to the same seed.
    ASSERT_EQ(ours->encrypted_secret.size(), their_secret.size());
    EXPECT_EQ(decrypt_seed(ek.get(), std::span(ours->encrypted_secret).subspan(2)), seed);
    // Another Name gives another blob: the activation is bound to the object.
    std::vector<uint8_t> other_name = name;
    other_name.back() ^= 1;
    auto other = make_credential(ek_public, credential, other_name, seed);
    ASSERT_TRUE(other);
    EXPECT_NE(other->credential_blob, their_blob);
  }
  // With no seed given, a fresh random one each time.
  const std::vector<uint8_t> credential(32, 7);
  const std::vector<uint8_t> name(34, 1);
  auto first = make_credential(ek_public, credential, name);
  auto second = make_credential(ek_public, credential, name);
  ASSERT_TRUE(first && second);
  EXPECT_NE(first->credential_blob, second->credential_blob);
  EXPECT_FALSE(make_credential(ek_public, std::vector<uint8_t>(33, 0), name));
}

}  // namespace
}  // namespace darkbloom::attest
