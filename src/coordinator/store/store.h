// The coordinator's durable state behind one interface: accounts, API keys, the ledger, prices,
// referrals, the release allow-list and the provider keys seen. SQLite is the embedded default;
// PostgreSQL (libpq) serves several coordinators. Both pass one test suite
// (tests/coordinator/store_test.cc). Every method is safe to call from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace darkbloom::coordinator {

struct ApiKeyRecord {
  std::string key_hash;    // hex SHA-256 of the whole key; the key itself is never stored
  std::string key_prefix;  // first characters, to recognise a key in listings
  std::string account_id;
  int64_t created_at = 0;  // unix seconds
};

// A provider binary the operator approved: its hash joins the allow-list.
struct ReleaseRecord {
  std::string binary_hash;  // hex SHA-256
  std::string version;
  std::string note;
  int64_t created_at = 0;
};

// A model of the admin catalogue: what file the id names, by the Merkle root of its 1 MiB chunks
// (crypto/merkle.h) and its size. A provider that offers the id with another root is refused.
struct CatalogModel {
  std::string id;
  std::string merkle_root;  // 64 lowercase hex digits
  uint64_t size_bytes = 0;
  int64_t created_at = 0;  // unix seconds of the last change
};

// An identity key a provider has registered with.
struct ProviderKeyRecord {
  std::string public_key;  // base64 P-256 X ‖ Y
  std::string key_backend;
  int64_t first_seen = 0;
  int64_t last_seen = 0;
  std::string replaced_by;  // set once the key was rotated out; it may not register again
};

// Kinds of ledger movements (SPEC §6), plus hold and release: money a coordinator moves from a
// consumer's account into its escrow account for that consumer (and back), so that it can reserve
// in memory without a database round trip per request (docs/billing.md).
enum class LedgerKind { deposit, charge, refund, payout, platform_fee, referral_reward, admin_credit, hold, release };
std::string_view ledger_kind_name(LedgerKind kind);
std::optional<LedgerKind> parse_ledger_kind(std::string_view name);

// One movement of money: `amount` micro-USD added to the account's balance (negative for a
// charge). Every movement carries the request it belongs to (admin credits get their own id).
struct LedgerEntry {
  std::string request_id;
  std::string account_id;
  LedgerKind kind = LedgerKind::charge;
  int64_t amount = 0;
  int64_t created_at = 0;  // unix seconds; set by the store
};

// Micro-USD per million tokens. The model "" is the default for models without their own price.
struct Price {
  std::string model;
  int64_t input_per_million = 0;
  int64_t output_per_million = 0;
};

// An account's request limits (the admin route); 0 means unlimited.
struct AccountLimits {
  std::string account_id;
  int64_t requests_per_second = 0;
  int64_t burst = 0;
  int64_t max_concurrent = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // "sqlite" or "postgres", for messages.
  virtual std::string_view kind() const = 0;

  // A new account; returns its id ("acct_...").
  virtual Result<std::string> create_account(std::string_view name) = 0;
  virtual Status add_api_key(const ApiKeyRecord& key) = 0;
  virtual Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view key_hash) = 0;
  // nullopt for an unknown account.
  virtual Result<std::optional<int64_t>> balance(std::string_view account_id) = 0;

  // Applies the entries as one transaction. Each entry is recorded once per (request id,
  // account, kind): an entry already recorded is skipped, so applying a settlement twice changes
  // nothing. Fails, changing nothing, when an account is unknown (Errc::not_found) or a balance
  // would go below zero (Errc::resource_exhausted). Returns how many entries were new.
  virtual Result<int> apply(const std::vector<LedgerEntry>& entries) = 0;
  // An account's entries, newest first (at most `limit`); the empty id lists every account's.
  virtual Result<std::vector<LedgerEntry>> ledger(std::string_view account_id, int limit) = 0;

  // Sets (or replaces) a model's price.
  virtual Status set_price(const Price& price) = 0;
  virtual Result<std::vector<Price>> prices() = 0;

  // An account with an id chosen by the caller (the platform's, escrow accounts), created once;
  // an existing one is kept as it is. `owner` (may be empty) is the account an escrow belongs to.
  virtual Status ensure_account(std::string_view id, std::string_view name, std::string_view owner) = 0;
  // Escrow accounts whose id starts with `prefix` and that hold money.
  struct Escrow {
    std::string id;
    std::string owner;
    int64_t balance = 0;
  };
  virtual Result<std::vector<Escrow>> escrows(std::string_view prefix) = 0;
  // Charges paid from the escrow accounts `owner` owns (what a consumer was billed), newest first.
  virtual Result<std::vector<LedgerEntry>> charges(std::string_view owner, int limit) = 0;

  // Claims a coordinator id for as long as this store object lives (a PostgreSQL advisory lock of
  // the session, a lock file beside a SQLite database): two coordinators with one id would spend
  // each other's escrow. Claiming again through the same object is fine; another holder gives
  // Errc::already_exists at once (no waiting). Destroying the store ends its claims before the
  // destructor returns. A crashed holder's claim ends with its process; on PostgreSQL only once the
  // server has noticed the connection closed, normally within milliseconds (a holder whose host
  // vanished holds on until TCP gives up), so a coordinator restarted that fast may see
  // Errc::already_exists and should be started again.
  virtual Status claim_coordinator(std::string_view id) = 0;
  // False while a claim is not held (PostgreSQL: between losing the connection, which ends the
  // session's advisory locks, and taking them again). Safe from any thread.
  virtual bool claims_held() const { return true; }

  // Records who referred an account. Once set it does not change (Errc::already_exists); an
  // account cannot refer itself and both must exist (Errc::not_found).
  virtual Status set_referrer(std::string_view account_id, std::string_view referrer_id) = 0;
  virtual Result<std::optional<std::string>> referrer(std::string_view account_id) = 0;

  // The release allow-list (empty: no list, any binary).
  virtual Status add_release(const ReleaseRecord& release) = 0;
  virtual Result<std::vector<ReleaseRecord>> list_releases() = 0;

  // The model catalogue: sets (or replaces) a model's entry; lists them by id.
  virtual Status set_catalog_model(const CatalogModel& model) = 0;
  virtual Result<std::vector<CatalogModel>> catalog_models() = 0;

  virtual Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view public_key) = 0;
  // Records that `public_key` registered (now: last_seen); with `replaces`, also retires that old
  // key, once and to this key only: Errc::already_exists when it was retired to another key. An
  // old key the store never saw is not written.
  virtual Status record_provider_key(std::string_view public_key, std::string_view key_backend,
                                     std::string_view replaces) = 0;
  // Forgets keys last seen before `unix_seconds` that record no rotation (a retired key's row,
  // with replaced_by, stays forever so the key can never come back).
  virtual Status expire_provider_keys(int64_t unix_seconds) = 0;
  // Sets an account's limits (Errc::not_found for an unknown account); all of them.
  virtual Status set_account_limits(const AccountLimits& limits) = 0;
  virtual Result<std::vector<AccountLimits>> account_limits() = 0;
};

// Largest single movement: a billion USD. Balances stay within [0, 10^18] micro-USD, so sums of
// a balance and an entry never overflow.
inline constexpr int64_t kMaxEntryAmount = 1'000'000'000'000'000;
inline constexpr int64_t kMaxBalance = 1'000'000'000'000'000'000;
// Shared by the implementations: ids present, amounts non-zero, within kMaxEntryAmount, and
// signed as their kind says (charges negative, holds and releases either way, the rest positive).
Status validate_entries(const std::vector<LedgerEntry>& entries);
// Rates within [0, kMaxEntryAmount] per million tokens.
Status validate_price(const Price& price);
// The error for an entry a balance constraint refused.
Error balance_refused(const LedgerEntry& entry);
// The error for a rotation whose old key was already retired to another key.
Error rotated_elsewhere();

// What a batch does to each account's balance, summed, in account-id order. Stores update the
// accounts in this order, so two transactions always lock shared rows in the same order and
// cannot deadlock each other (several coordinators on one PostgreSQL).
struct BalanceChanges {
  std::map<std::string, int64_t> by_account;
  // Errc::invalid_argument if a sum leaves the int64 range.
  Status add(const LedgerEntry& entry);
};

// Opens (creating if needed) a SQLite database in WAL mode and applies pending migrations.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);
// Connects to PostgreSQL (a libpq URL, "postgresql://user@host:port/db") and applies pending
// migrations (one coordinator at a time, under an advisory lock).
Result<std::unique_ptr<Store>> open_postgres_store(const std::string& url);

}  // namespace darkbloom::coordinator
