#include "coordinator/auth/api_keys.h"

#include "base/encoding.h"
#include "base/time.h"
#include "crypto/hash.h"
#include "crypto/secure_bytes.h"

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

Result<CreatedKey> ApiKeys::make_account_key(std::string_view account_name) {
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
  return created;
}

void ApiKeys::remember(const CreatedKey& created) {
  verified_[crypto::sha256_hex(as_bytes(created.api_key))] = created.account_id;
  // Keys created here are never in the unknown cache (they are random); clearing it anyway keeps
  // "a created key works at once" true whatever created it.
  unknown_.clear();
}

Result<CreatedKey> ApiKeys::create_account_key(std::string_view account_name) {
  auto created = make_account_key(account_name);
  if (created) remember(*created);
  return created;
}

ApiKeys::Cached ApiKeys::cached(const std::string& hash) {
  if (const auto it = verified_.find(hash); it != verified_.end()) return {true, it->second};
  if (const auto it = unknown_.find(hash); it != unknown_.end()) {
    if (clock_.now() < it->second) return {true, std::nullopt};
    unknown_.erase(it);
  }
  return {};
}

std::optional<std::string> ApiKeys::learn(const std::string& hash, const std::optional<ApiKeyRecord>& record) {
  if (record) {
    verified_[hash] = record->account_id;
    return record->account_id;
  }
  const auto now = clock_.now();
  if (unknown_.size() >= kMaxUnknown) {
    std::erase_if(unknown_, [now](const auto& entry) { return entry.second <= now; });
    if (unknown_.size() >= kMaxUnknown) unknown_.clear();  // a flood: start over rather than grow
  }
  unknown_[hash] = now + kUnknownTtl;
  return std::nullopt;
}

net::awaitable<Result<std::optional<std::string>>> ApiKeys::authenticate(std::string_view authorization_header,
                                                                         StoreWorker& worker) {
  std::string key(bearer_token(authorization_header));
  co_return co_await authenticate_key(std::move(key), worker);
}

net::awaitable<Result<std::optional<std::string>>> ApiKeys::authenticate_key(std::string key, StoreWorker& worker) {
  const bool usable = well_formed(key);
  const std::string hash = usable ? crypto::sha256_hex(as_bytes(key)) : std::string();
  crypto::wipe_memory(key.data(), key.size());  // a secret: only its hash is kept
  if (!usable) co_return std::optional<std::string>{};
  if (Cached hit = cached(hash); hit.known) co_return hit.account;
  // Requests with the same key not yet cached wait for one lookup rather than each making one: a
  // client opening a thousand streams at once with a new key costs one database call.
  if (const auto it = lookups_.find(hash); it != lookups_.end()) {
    const std::shared_ptr<Lookup> lookup = it->second;
    co_await lookup->waiters.wait();
    if (lookup->result) co_return *lookup->result;
    co_return make_error(Errc::unavailable, "the key's lookup did not finish");
  }
  const auto lookup = std::make_shared<Lookup>(clock_);
  lookups_.emplace(hash, lookup);
  auto find = [this, hash] { return store_.find_api_key(hash); };
  auto record = co_await worker.run(find);
  Result<std::optional<std::string>> result = record ? Result<std::optional<std::string>>(learn(hash, *record))
                                                     : Result<std::optional<std::string>>(record.error());
  lookups_.erase(hash);
  lookup->result = result;
  lookup->waiters.wake_all();
  co_return result;
}

}  // namespace darkbloom::coordinator
