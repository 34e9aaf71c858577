// Billing (SPEC §6): prices, reservations before routing, settlement after, exact integer
// micro-USD. Reserving must not wait on the database, so each coordinator moves money from a
// consumer's account into its own escrow account for that consumer in chunks ("holds", one
// database transaction per chunk) and reserves against that allowance in memory. Settlements
// are queued and written in group commits (flush); allowances nobody is using go back to their
// accounts (release_idle), and at start a coordinator returns whatever its escrow accounts still
// hold, which is what a crash leaves behind. The database's balance constraints make overspending
// impossible even with several coordinators on one PostgreSQL. Details: docs/billing.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/metrics.h"
#include "base/result.h"
#include "coordinator/store/store.h"
#include "crypto/system_random.h"
#include "net/clock.h"

namespace darkbloom::coordinator {

// How a charge is split (SPEC §6), in percent: the provider's payout of the charge, and the
// referrer's reward out of the platform's fee (what is left after the payout).
inline constexpr int64_t kProviderPayoutPercent = 95;
inline constexpr int64_t kReferralRewardPercentOfFee = 20;

struct BillingOptions {
  std::string coordinator_id = "main";  // names this coordinator's escrow accounts; unique per coordinator
  std::string platform_account = "acct_platform";
  int64_t default_input_per_million = 50'000;
  int64_t default_output_per_million = 200'000;
  int64_t minimum_charge = 100;
  // A hold covers this many worst cases (or the whole balance, if less): one transaction per that
  // many requests. More means fewer waits on the database; less means less of a balance parked in
  // one coordinator's escrow while another coordinator serves the same account.
  int hold_requests = 32;
  std::chrono::seconds idle_release{30};
};

struct Reservation {
  std::string request_id;
  std::string account_id;
  std::string model;
  int64_t amount = 0;  // the worst case, micro-USD
};

// How a settled cost was split.
struct Settlement {
  int64_t charged = 0;
  int64_t payout = 0;
  int64_t platform_fee = 0;
  int64_t referral_reward = 0;
};

class Ledger {
 public:
  // `clock` times idle allowances; `random` names release entries.
  // What the ledger has done since start, for /metrics.
  struct Counters {
    metrics::Counter reservations;       // requests whose worst case was set aside
    metrics::Counter refusals;           // reservations refused: the balance did not cover them (402)
    metrics::Counter holds;              // escrow holds written (one transaction each)
    metrics::Counter settlements;        // requests charged
    metrics::Counter settled_micro_usd;  // charged in all
  };
  const Counters& counters() const { return counters_; }

  Ledger(Store& store, BillingOptions options, net::Clock& clock = net::system_clock(),
         RandomSource& random = crypto::system_random());

  // Creates the platform account, loads prices and returns what this coordinator's escrow
  // accounts hold to their owners.
  Status start();
  // Prices changed in the store.
  Status reload_prices();

  // floor(in * in_rate / 1e6) + floor(out * out_rate / 1e6), at least the minimum charge.
  int64_t cost(std::string_view model, int64_t input_tokens, int64_t output_tokens) const;

  // Sets aside the worst case from this coordinator's allowance, in memory; nullopt when the
  // allowance does not cover it and a hold is needed (then reserve(), off the network thread).
  std::optional<Result<Reservation>> reserve_in_memory(std::string_view account_id, std::string_view request_id,
                                                       std::string_view model, int64_t max_input_tokens,
                                                       int64_t max_output_tokens);
  // Sets aside the worst case, holding more of the balance first when needed (database calls,
  // made without the ledger's lock). Errc::resource_exhausted when the balance does not cover it
  // (answered 402), Errc::not_found for an unknown account.
  Result<Reservation> reserve(std::string_view account_id, std::string_view request_id, std::string_view model,
                              int64_t max_input_tokens, int64_t max_output_tokens);
  // Charges the cost of the tokens used (never more than reserved; nothing when no token was
  // produced), returns the rest to the allowance and queues the ledger entries: kProviderPayoutPercent to
  // the provider's account (the platform's when it has none), the rest platform fee, of which
  // kReferralRewardPercentOfFee goes to the consumer's referrer (as of the last hold). Settling a reservation twice
  // does nothing.
  Settlement settle(const Reservation& reservation, int64_t input_tokens, int64_t output_tokens,
                    std::string_view provider_account);
  // Nothing was delivered: everything returns to the allowance.
  void refund(const Reservation& reservation);

  // Writes the queued settlements in one transaction.
  Status flush();
  // Returns allowances without open reservations, unused for idle_release (or all with `force`),
  // after a flush.
  Status release_idle(bool force = false);
  // Returns one such allowance; false when there is none. One store transaction: the writer
  // calls it once per account, so no single call on the StoreWorker grows with their number.
  Result<bool> release_next_idle(bool force = false);

  // What the account can spend: its balance plus this coordinator's unreserved allowance.
  Result<int64_t> balance(std::string_view account_id);
  size_t queued() const;

 private:
  // Errors that will not go away by trying again (as opposed to an unreachable database).
  static bool definite_refusal(const Error& error);
  // Puts entries back at the front of the queue.
  void requeue(std::vector<LedgerEntry> entries);
  // A settlement that will never be written: its charge returns to the allowance.
  void unspend(const std::vector<LedgerEntry>& settlement);

  struct Allowance {
    int64_t available = 0;  // in escrow and not reserved
    int open = 0;           // reservations not yet settled
    net::Clock::Time last_used;
    std::optional<std::string> referrer;  // as of the last hold
  };

  std::string escrow_id(std::string_view account_id) const;
  // A hold or release the store may or may not have written (its reply was lost): applied again
  // under the same id, it is written once whatever happened.
  struct UnknownWrite {
    std::vector<LedgerEntry> entries;
    int64_t amount = 0;
  };
  // True when the account's unknown hold turned out written (now in the allowance).
  Result<bool> settle_unknown_hold(std::string_view account_id);
  // Errc::unavailable while the store does not hold this coordinator's id claim.
  Status check_claim() const;
  // A hold landed: its amount joins the allowance.
  void held_in_escrow(std::string_view account_id, int64_t amount);
  std::optional<Result<Reservation>> reserve_in_memory(std::string_view account_id, std::string_view request_id,
                                                       std::string_view model, int64_t worst);
  Status hold(std::string_view account_id, int64_t needed, int64_t wanted);

  Store& store_;
  BillingOptions options_;
  net::Clock& clock_;
  RandomSource& random_;
  mutable std::mutex mutex_;
  std::map<std::string, Price, std::less<>> prices_;
  std::map<std::string, Allowance, std::less<>> allowances_;
  std::set<std::string, std::less<>> escrows_created_;
  std::map<std::string, int64_t, std::less<>> open_;  // request id -> reserved amount; settling removes it
  std::vector<LedgerEntry> queue_;
  std::map<std::string, UnknownWrite, std::less<>> unknown_holds_;  // by account
  std::vector<UnknownWrite> unknown_releases_;
  Counters counters_;
};

}  // namespace darkbloom::coordinator
