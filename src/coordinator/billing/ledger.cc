#include "coordinator/billing/ledger.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/encoding.h"
#include "base/log.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

// rate * tokens / 1e6 without overflow, clamped to the largest ledger entry.
int64_t part(int64_t tokens, int64_t per_million) {
  int64_t product = 0;
  if (__builtin_mul_overflow(std::max<int64_t>(tokens, 0), per_million, &product)) return kMaxEntryAmount;
  return std::min(product / 1'000'000, kMaxEntryAmount);
}

LedgerEntry entry(const std::string& request, const std::string& account, LedgerKind kind, int64_t amount) {
  return LedgerEntry{request, account, kind, amount, 0};
}

}  // namespace

Ledger::Ledger(Store& store, BillingOptions options, net::Clock& clock, RandomSource& random)
    : store_(store), options_(std::move(options)), clock_(clock), random_(random) {}

Status Ledger::start() {
  // Before touching escrow: another live coordinator with this id would be spending from it.
  DARKBLOOM_RETURN_IF_ERROR(store_.claim_coordinator(options_.coordinator_id));
  DARKBLOOM_RETURN_IF_ERROR(store_.ensure_account(options_.platform_account, "platform", ""));
  DARKBLOOM_RETURN_IF_ERROR(reload_prices());
  // What this coordinator held when it last stopped (or crashed) goes back to its owners.
  auto leftover = store_.escrows(escrow_id(""));
  if (!leftover) return leftover.error();
  for (const Store::Escrow& escrow : *leftover) {
    const std::string id = "release_" + random_.id("", 8);
    auto released = store_.apply({entry(id, escrow.id, LedgerKind::release, -escrow.balance),
                                  entry(id, escrow.owner, LedgerKind::release, escrow.balance)});
    if (!released) return released.error();
    log::info("billing: returned {} micro-USD left in escrow to {}", escrow.balance, escrow.owner);
  }
  return {};
}

Status Ledger::reload_prices() {
  auto prices = store_.prices();
  if (!prices) return prices.error();
  std::lock_guard lock(mutex_);
  prices_.clear();
  for (Price& price : *prices) prices_[price.model] = price;
  return {};
}

int64_t Ledger::cost(std::string_view model, int64_t input_tokens, int64_t output_tokens) const {
  int64_t in_rate = options_.default_input_per_million, out_rate = options_.default_output_per_million;
  {
    std::lock_guard lock(mutex_);
    auto found = prices_.find(model);
    if (found == prices_.end()) found = prices_.find("");
    if (found != prices_.end()) {
      in_rate = found->second.input_per_million;
      out_rate = found->second.output_per_million;
    }
  }
  const int64_t total = std::min(kMaxEntryAmount, part(input_tokens, in_rate) + part(output_tokens, out_rate));
  return std::max(total, options_.minimum_charge);
}

std::string Ledger::escrow_id(std::string_view account_id) const {
  return fmt::format("escrow_{}_{}", options_.coordinator_id, account_id);
}

Status Ledger::check_claim() const {
  if (store_.claims_held()) return {};
  return make_error(Errc::unavailable,
                    fmt::format("billing is paused: this coordinator's id '{}' is not held on the database; it is "
                                "taken again at the next call",
                                options_.coordinator_id));
}

std::optional<Result<Reservation>> Ledger::reserve_in_memory(std::string_view account_id, std::string_view request_id,
                                                             std::string_view model, int64_t worst) {
  // Without the claim another coordinator may be spending from the same escrow accounts.
  if (Status claimed = check_claim(); !claimed) return Result<Reservation>(claimed.error());
  std::lock_guard lock(mutex_);
  if (open_.count(request_id) != 0) {
    return make_error(Errc::already_exists, fmt::format("request {} is already reserved", request_id));
  }
  Allowance& allowance = allowances_[std::string(account_id)];
  if (allowance.available < worst) return std::nullopt;
  allowance.available -= worst;
  allowance.open += 1;
  allowance.last_used = clock_.now();
  open_.emplace(std::string(request_id), worst);
  counters_.reservations.add();
  return Reservation{std::string(request_id), std::string(account_id), std::string(model), worst};
}

std::optional<Result<Reservation>> Ledger::reserve_in_memory(std::string_view account_id, std::string_view request_id,
                                                             std::string_view model, int64_t max_input_tokens,
                                                             int64_t max_output_tokens) {
  return reserve_in_memory(account_id, request_id, model, cost(model, max_input_tokens, max_output_tokens));
}

Result<Reservation> Ledger::reserve(std::string_view account_id, std::string_view request_id, std::string_view model,
                                    int64_t max_input_tokens, int64_t max_output_tokens) {
  const int64_t worst = cost(model, max_input_tokens, max_output_tokens);
  // The slow path, once per `hold_requests` requests: one transaction moves a chunk of the
  // balance into escrow. The store is called without the lock, so the network thread's
  // reservations and settlements never wait for it; another hold may land meanwhile, so the
  // allowance is looked at again after each.
  const int64_t wanted = worst > kMaxEntryAmount / options_.hold_requests ? worst : worst * options_.hold_requests;
  if (!store_.claims_held()) (void)store_.balance(account_id);  // a call takes a lost claim again, if it can
  for (int round = 0; round < 3; ++round) {
    if (auto reserved = reserve_in_memory(account_id, request_id, model, worst)) return std::move(*reserved);
    int64_t needed = 0;
    {
      std::lock_guard lock(mutex_);
      needed = worst - allowances_[std::string(account_id)].available;
    }
    if (needed <= 0) continue;  // a settlement returned enough meanwhile
    if (Status held = hold(account_id, needed, wanted); !held) {
      if (held.error().code == Errc::resource_exhausted) counters_.refusals.add();
      return held.error();
    }
    counters_.holds.add();
  }
  // Other reservations took each hold before this one could: busy, not broke.
  return make_error(Errc::unavailable, "the balance was taken by other requests while holding it; try again");
}

Status Ledger::hold(std::string_view account_id, int64_t needed, int64_t wanted) {
  const std::string escrow = escrow_id(account_id);
  bool escrow_exists = false;
  {
    std::lock_guard lock(mutex_);
    escrow_exists = escrows_created_.count(escrow) != 0;
  }
  if (!escrow_exists) {
    DARKBLOOM_RETURN_IF_ERROR(store_.ensure_account(escrow, "escrow", account_id));
    std::lock_guard lock(mutex_);
    escrows_created_.insert(escrow);
  }
  // A hold whose outcome is unknown goes first, under its own id: applied again it either lands
  // now or is found applied before (entries are idempotent per id), and is counted once.
  // Landed, it joins the allowance and the caller looks again before holding more.
  auto settled = settle_unknown_hold(account_id);
  if (!settled) return settled.error();
  if (*settled) return {};
  // Another coordinator may spend from the same balance between reading and holding: the
  // store refuses an overdraft, so read again and retry with what is left.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto balance = store_.balance(account_id);
    if (!balance) return balance.error();
    if (!*balance) return make_error(Errc::not_found, fmt::format("no account {}", account_id));
    const int64_t amount = std::min({wanted, **balance, kMaxEntryAmount});
    if (amount < needed) {
      return make_error(Errc::resource_exhausted,
                        fmt::format("the balance does not cover this request's worst case ({} micro-USD)", needed));
    }
    // One id per hold, kept for as long as its outcome is unknown.
    const std::string id = fmt::format("hold_{}_{}", options_.coordinator_id, random_.id("", 8));
    std::vector<LedgerEntry> entries{entry(id, std::string(account_id), LedgerKind::hold, -amount),
                                     entry(id, escrow, LedgerKind::hold, amount)};
    auto held = store_.apply(entries);
    if (held) {
      held_in_escrow(account_id, amount);
      return {};
    }
    if (held.error().code == Errc::resource_exhausted) continue;  // refused: it did not happen
    if (!definite_refusal(held.error())) {
      std::lock_guard lock(mutex_);
      unknown_holds_[std::string(account_id)] = UnknownWrite{std::move(entries), amount};
    }
    return held.error();
  }
  return make_error(Errc::resource_exhausted, "the balance changed while holding it; try again");
}

Result<bool> Ledger::settle_unknown_hold(std::string_view account_id) {
  std::optional<UnknownWrite> unknown;
  {
    std::lock_guard lock(mutex_);
    auto it = unknown_holds_.find(account_id);
    if (it == unknown_holds_.end()) return false;
    unknown = std::move(it->second);
    unknown_holds_.erase(it);
  }
  auto applied = store_.apply(unknown->entries);
  if (applied) {
    held_in_escrow(account_id, unknown->amount);
    return true;
  }
  if (definite_refusal(applied.error())) return false;  // it never happened: hold afresh
  std::lock_guard lock(mutex_);
  unknown_holds_[std::string(account_id)] = std::move(*unknown);
  return applied.error();
}

void Ledger::held_in_escrow(std::string_view account_id, int64_t amount) {
  // Read with each hold, not on every settlement: a referral set later counts from the next hold.
  auto referrer = store_.referrer(account_id);
  if (!referrer) log::warn("billing: cannot read the referrer of {}: {}", account_id, referrer.error().message);
  std::lock_guard lock(mutex_);
  Allowance& allowance = allowances_[std::string(account_id)];
  allowance.available += amount;
  allowance.last_used = clock_.now();  // not released as idle before the reservation takes it
  if (referrer) allowance.referrer = *referrer;
}

Settlement Ledger::settle(const Reservation& reservation, int64_t input_tokens, int64_t output_tokens,
                          std::string_view provider_account) {
  Settlement settlement;
  const bool delivered = output_tokens > 0 || input_tokens > 0;
  const int64_t full_cost = delivered ? this->cost(reservation.model, input_tokens, output_tokens) : 0;
  std::lock_guard lock(mutex_);
  auto open = open_.find(reservation.request_id);
  if (open == open_.end()) return settlement;  // settled before
  const int64_t reserved = open->second;
  open_.erase(open);
  Allowance& allowance = allowances_[reservation.account_id];
  allowance.open -= 1;
  allowance.last_used = clock_.now();
  const int64_t cost = std::min(reserved, full_cost);
  allowance.available += reserved - cost;
  if (cost == 0) return settlement;
  counters_.settlements.add();
  counters_.settled_micro_usd.add(static_cast<uint64_t>(cost));
  settlement.charged = cost;
  settlement.payout = cost * kProviderPayoutPercent / 100;
  const int64_t fee = cost - settlement.payout;
  const std::optional<std::string>& referrer = allowance.referrer;
  settlement.referral_reward = referrer ? fee * kReferralRewardPercentOfFee / 100 : 0;
  settlement.platform_fee = fee - settlement.referral_reward;
  const std::string& request = reservation.request_id;
  queue_.push_back(entry(request, escrow_id(reservation.account_id), LedgerKind::charge, -cost));
  const std::string payee = provider_account.empty() ? options_.platform_account : std::string(provider_account);
  if (settlement.payout > 0) queue_.push_back(entry(request, payee, LedgerKind::payout, settlement.payout));
  if (settlement.platform_fee > 0) {
    queue_.push_back(entry(request, options_.platform_account, LedgerKind::platform_fee, settlement.platform_fee));
  }
  if (settlement.referral_reward > 0) {
    queue_.push_back(entry(request, *referrer, LedgerKind::referral_reward, settlement.referral_reward));
  }
  return settlement;
}

void Ledger::refund(const Reservation& reservation) {
  (void)settle(reservation, 0, 0, "");
}

Status Ledger::flush() {
  if (!store_.claims_held()) (void)store_.balance(options_.platform_account);  // take the claim again, if it can
  DARKBLOOM_RETURN_IF_ERROR(check_claim());                                    // the queue waits
  std::vector<LedgerEntry> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(queue_);
  }
  if (batch.empty()) return {};
  auto written = store_.apply(batch);
  if (written) return {};
  if (!definite_refusal(written.error())) {
    // The database is unreachable or busy: keep everything for the next flush (applying an entry
    // twice changes nothing, so a commit that did happen is harmless to repeat).
    requeue(std::move(batch));
    return written.error();
  }
  // One bad settlement must not hold back the others: write them one request at a time.
  log::warn("billing: group commit of {} entries refused ({}); writing them one request at a time", batch.size(),
            written.error().message);
  Status first_failure;
  std::vector<LedgerEntry> retry;
  size_t begin = 0;
  while (begin < batch.size()) {
    size_t end = begin + 1;
    while (end < batch.size() && batch[end].request_id == batch[begin].request_id) ++end;
    std::vector<LedgerEntry> one(batch.begin() + static_cast<std::ptrdiff_t>(begin),
                                 batch.begin() + static_cast<std::ptrdiff_t>(end));
    auto single = store_.apply(one);
    if (!single && !definite_refusal(single.error())) {
      retry.insert(retry.end(), one.begin(), one.end());
    } else if (!single) {
      // Refused for good: the consumer is not charged for it. The cost is still in the escrow, so
      // it goes back to the allowance, keeping escrow = allowance + reservations + queue.
      log::error("billing: settlement of {} dropped: {}", batch[begin].request_id, single.error().message);
      unspend(one);
      if (first_failure) first_failure = single.error();
    }
    begin = end;
  }
  if (!retry.empty()) requeue(std::move(retry));
  return first_failure;
}

bool Ledger::definite_refusal(const Error& error) {
  return error.code == Errc::not_found || error.code == Errc::resource_exhausted ||
         error.code == Errc::invalid_argument;
}

void Ledger::requeue(std::vector<LedgerEntry> entries) {
  std::lock_guard lock(mutex_);
  entries.insert(entries.end(), std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_ = std::move(entries);
}

void Ledger::unspend(const std::vector<LedgerEntry>& settlement) {
  const std::string prefix = escrow_id("");
  std::lock_guard lock(mutex_);
  for (const LedgerEntry& entry : settlement) {
    if (entry.kind != LedgerKind::charge || entry.account_id.rfind(prefix, 0) != 0) continue;
    allowances_[entry.account_id.substr(prefix.size())].available += -entry.amount;
  }
}

Status Ledger::release_idle(bool force) {
  DARKBLOOM_RETURN_IF_ERROR(flush());  // the escrow then holds exactly the allowance
  for (;;) {
    auto released = release_next_idle(force);
    if (!released) return released.error();
    if (!*released) return {};
  }
}

Result<bool> Ledger::release_next_idle(bool force) {
  // A hold whose outcome is unknown is settled here too, so a landed one joins the allowance (and
  // goes back with it) instead of waiting for its account's next hold.
  std::string unknown_hold;
  {
    std::lock_guard lock(mutex_);
    if (!unknown_holds_.empty()) unknown_hold = unknown_holds_.begin()->first;
  }
  if (!unknown_hold.empty()) {
    auto settled = settle_unknown_hold(unknown_hold);
    if (!settled) return settled.error();
    return true;
  }
  // A release whose outcome is unknown goes first, under its own id; its amount is in neither
  // the allowance nor (as far as anyone knows) the escrow until that is settled.
  std::optional<UnknownWrite> unknown;
  {
    std::lock_guard lock(mutex_);
    if (!unknown_releases_.empty()) {
      unknown = std::move(unknown_releases_.back());
      unknown_releases_.pop_back();
    }
  }
  if (unknown) {
    auto applied = store_.apply(unknown->entries);
    if (applied) return true;
    std::lock_guard lock(mutex_);
    if (definite_refusal(applied.error())) {
      // It never happened: the money is still in escrow.
      allowances_[unknown->entries.back().account_id].available += unknown->amount;
      return true;
    }
    unknown_releases_.push_back(std::move(*unknown));
    return applied.error();
  }
  std::string account;
  int64_t amount = 0;
  {
    std::lock_guard lock(mutex_);
    const auto now = clock_.now();
    for (auto& [id, allowance] : allowances_) {
      if (allowance.open > 0 || allowance.available <= 0) continue;
      if (!force && now - allowance.last_used < options_.idle_release) continue;
      account = id;
      amount = allowance.available;
      allowance.available = 0;
      break;
    }
  }
  if (account.empty()) return false;
  const std::string id = "release_" + random_.id("", 8);
  std::vector<LedgerEntry> entries{entry(id, escrow_id(account), LedgerKind::release, -amount),
                                   entry(id, account, LedgerKind::release, amount)};
  auto released = store_.apply(entries);
  if (!released) {
    std::lock_guard lock(mutex_);
    if (definite_refusal(released.error())) {
      allowances_[account].available += amount;  // still in escrow; try again later
    } else {
      // Maybe written: counting it back into the allowance could spend it twice. Kept aside and
      // applied again under the same id until the store says either way.
      unknown_releases_.push_back(UnknownWrite{std::move(entries), amount});
    }
    return released.error();
  }
  return true;
}

Result<int64_t> Ledger::balance(std::string_view account_id) {
  auto stored = store_.balance(account_id);
  if (!stored) return stored.error();
  if (!*stored) return make_error(Errc::not_found, fmt::format("no account {}", account_id));
  std::lock_guard lock(mutex_);
  auto allowance = allowances_.find(account_id);
  return **stored + (allowance == allowances_.end() ? 0 : allowance->second.available);
}

size_t Ledger::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

}  // namespace darkbloom::coordinator
