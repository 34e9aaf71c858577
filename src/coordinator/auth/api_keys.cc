#include "coordinator/auth/api_keys.h"

#include "base/encoding.h"
#include "base/time.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

constexpr std::string_view kKeyPrefix = "db-";
constexpr size_t kKeyHexLength = 64;

bool well_formed(std::string_view key) {
  if (key.size() != kKeyPrefix.size() + kKeyHexLength || key.substr(0, kKeyPrefix.size()) != kKeyPrefix) return false;
  for (char c : key.substr(kKeyPrefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string_view bearer_token(std::string_view header) {
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.substr(0, kBearer.size()) != kBearer) return {};
  return header.substr(kBearer.size());
}

Result<CreatedKey> ApiKeys::create_account_key(std::string_view account_name) {
  auto account = store_.create_account(account_name);
  if (!account) return account.error();
  CreatedKey created;
  created.account_id = *account;
  created.api_key = std::string(kKeyPrefix) + hex_encode(random_.bytes(32));
  ApiKeyRecord record;
  record.key_hash = crypto::sha256_hex(as_bytes(created.api_key));
  record.key_prefix = created.api_key.substr(0, kKeyPrefix.size() + 8);
  record.account_id = created.account_id;
  record.created_at = unix_seconds(clock_.wall_now());
  DARKBLOOM_RETURN_IF_ERROR(store_.add_api_key(record));
  verified_[record.key_hash] = record.account_id;
  return created;
}

Result<std::optional<std::string>> ApiKeys::authenticate(std::string_view authorization_header) {
  return authenticate_key(bearer_token(authorization_header));
}

Result<std::optional<std::string>> ApiKeys::authenticate_key(std::string_view key) {
  if (!well_formed(key)) return std::optional<std::string>{};
  // Looking up by hash means the comparison never touches the secret itself.
  const std::string hash = crypto::sha256_hex(as_bytes(key));
  if (const auto it = verified_.find(hash); it != verified_.end()) return std::optional<std::string>{it->second};
  auto record = store_.find_api_key(hash);
  if (!record) return record.error();
  if (!*record) return std::optional<std::string>{};
  verified_[hash] = (*record)->account_id;
  return std::optional<std::string>{(*record)->account_id};
}

}  // namespace darkbloom::coordinator
