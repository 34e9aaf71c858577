#include "attest/tpm2_policy.h"

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstring>
#include <stdexcept>

#include "crypto/hash.h"

namespace darkbloom::attest {
namespace {

void append_u32(std::vector<uint8_t>* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<uint8_t>(v >> shift));
}

Digest sha256(const std::vector<uint8_t>& bytes) {
  return crypto::sha256(bytes);
}

}  // namespace

Digest pcr_after_extend(const Digest& measurement) {
  std::vector<uint8_t> bytes(32, 0);
  bytes.insert(bytes.end(), measurement.begin(), measurement.end());
  return sha256(bytes);
}

Digest policy_pcr_digest(uint32_t pcr_index, const Digest& pcr_value) {
  std::vector<uint8_t> bytes(32, 0);  // the policy digest starts as 32 zero bytes
  append_u32(&bytes, TPM2_CC_PolicyPCR);
  // TPML_PCR_SELECTION: count 1; hash SHA-256; a 3-byte bitmap with the PCR's bit set.
  append_u32(&bytes, 1);
  bytes.push_back(static_cast<uint8_t>(TPM2_ALG_SHA256 >> 8));
  bytes.push_back(static_cast<uint8_t>(TPM2_ALG_SHA256 & 0xFF));
  bytes.push_back(3);
  uint8_t select[3] = {0, 0, 0};
  select[pcr_index / 8] = static_cast<uint8_t>(1u << (pcr_index % 8));
  bytes.insert(bytes.end(), select, select + 3);
  const Digest pcr_digest = crypto::sha256(pcr_value);
  bytes.insert(bytes.end(), pcr_digest.begin(), pcr_digest.end());
  return sha256(bytes);
}

TPMT_PUBLIC release_key_area(std::span<const uint8_t> public_key_xy) {
  if (public_key_xy.size() != 64) throw std::invalid_argument("a P-256 public key has 64 bytes");
  TPMT_PUBLIC area{};
  area.type = TPM2_ALG_ECC;
  area.nameAlg = TPM2_ALG_SHA256;
  // The attributes tpm2-tools' loadexternal gives a PEM public key; the Name depends on them.
  area.objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_SIGN_ENCRYPT;
  area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  area.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  area.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  area.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  area.unique.ecc.x.size = 32;
  std::memcpy(area.unique.ecc.x.buffer, public_key_xy.data(), 32);
  area.unique.ecc.y.size = 32;
  std::memcpy(area.unique.ecc.y.buffer, public_key_xy.data() + 32, 32);
  return area;
}

std::vector<uint8_t> release_key_name(std::span<const uint8_t> public_key_xy) {
  const TPMT_PUBLIC area = release_key_area(public_key_xy);
  uint8_t buffer[sizeof(TPMT_PUBLIC)];
  size_t offset = 0;
  if (Tss2_MU_TPMT_PUBLIC_Marshal(&area, buffer, sizeof buffer, &offset) != TSS2_RC_SUCCESS) {
    throw std::runtime_error("cannot marshal TPMT_PUBLIC");
  }
  const Digest hash = crypto::sha256(std::span<const uint8_t>(buffer, offset));
  std::vector<uint8_t> name(2 + hash.size());
  name[0] = static_cast<uint8_t>(TPM2_ALG_SHA256 >> 8);
  name[1] = static_cast<uint8_t>(TPM2_ALG_SHA256 & 0xFF);
  std::copy(hash.begin(), hash.end(), name.begin() + 2);
  return name;
}

Digest policy_command_code_digest(const Digest& previous, uint32_t command_code) {
  std::vector<uint8_t> bytes(previous.begin(), previous.end());
  append_u32(&bytes, TPM2_CC_PolicyCommandCode);
  append_u32(&bytes, command_code);
  return sha256(bytes);
}

Digest policy_authorize_digest(std::span<const uint8_t> name) {
  std::vector<uint8_t> bytes(32, 0);
  append_u32(&bytes, TPM2_CC_PolicyAuthorize);
  bytes.insert(bytes.end(), name.begin(), name.end());
  const Digest first = sha256(bytes);
  // Then the policyRef (empty here) is folded in: SHA256(digest ‖ policyRef).
  return sha256(std::vector<uint8_t>(first.begin(), first.end()));
}

}  // namespace darkbloom::attest
