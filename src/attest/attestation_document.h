// What a provider signs about itself, and how both sides handle it. The attestation document is
// canonical JSON (compact, keys sorted, optional keys omitted) signed over exactly those bytes and
// sent as a string, so the verifier checks the bytes it received, never a re-serialisation. The
// status document answers a challenge with fresh posture; receipts bind an answer to the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "attest/posture.h"
#include "base/result.h"

namespace darkbloom::attest {

struct AttestationDocument {
  std::string public_key;       // base64 of the P-256 key, raw X ‖ Y
  std::string key_backend;      // tpm2 | pkcs11 | ephemeral
  std::string degraded_reason;  // optional: why a preferred backend was not used
  std::string encryption_key;   // base64 X25519 key; must equal the one in `register`
  std::string binary_hash;      // optional: hex SHA-256 of the running executable
  std::string account_binding;  // optional: account_binding() of the payout account's token
  std::string version;
  std::string hardware_cpu;
  int64_t hardware_memory_gb = 0;
  std::string hardware_gpu;  // optional
  std::string os;            // kernel release
  Posture posture;
  std::string timestamp;  // RFC 3339 UTC, seconds
};

std::string canonical_json(const AttestationDocument& document);
Result<AttestationDocument> parse_attestation_document(std::string_view json);

struct StatusDocument {
  std::string nonce;
  std::string timestamp;
  std::string binary_hash;  // optional
  Posture posture;
  std::map<std::string, std::string> model_hashes;  // model id → hex SHA-256 of its file; optional
};

std::string canonical_json(const StatusDocument& document);
Result<StatusDocument> parse_status_document(std::string_view json);

// A key rotation: the old key vouches for the new one.
struct RotationStatement {
  std::string old_public_key;  // base64 raw X ‖ Y
  std::string new_public_key;
  std::string timestamp;
};

std::string canonical_json(const RotationStatement& statement);
Result<RotationStatement> parse_rotation_statement(std::string_view json);

// What binds the payout account to the identity key inside the signed document: hex SHA-256 of
// "darkbloom-account-v1\0" + the identity key (base64, as in the document) + "\0" + the account
// token. The document is published, so the hash is domain-separated and keyed to this identity:
// it matches no other hash of the token (the coordinator's own lookups) and links no two
// providers of one account.
std::string account_binding(std::string_view public_key, std::string_view account_token);

// hex SHA-256 of "<request_id>:<completion_tokens>:<text>": what a response receipt signs.
std::string response_hash(std::string_view request_id, int completion_tokens, std::string_view text);
// The <text> a receipt covers: the answer's text, or with several choices each choice's text after
// its length in bytes, in index order ("2:hi5:there"), so no text moves between choices unseen.
std::string receipt_text(const std::vector<std::string>& choices);

// What a provider signs, in clear for the coordinator, about a blind request's answer it cannot
// open: "darkbloom blind usage v1\n<request_id>:<prompt_tokens>:<completion_tokens>:<chunks>".
// The prefix keeps it apart from everything else the key signs (documents, challenges, receipt
// hashes, `keys sign`).
std::string usage_text(std::string_view request_id, int64_t prompt_tokens, int64_t completion_tokens, uint64_t chunks);

// "2026-11-27T23:48:45Z"
std::string rfc3339(std::chrono::system_clock::time_point time);
Result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text);

// hex SHA-256 of this process's executable (/proc/self/exe).
Result<std::string> self_binary_hash();
std::string kernel_release();

}  // namespace darkbloom::attest
