#include "coordinator/store/store.h"

#include <fmt/format.h>

#include <array>
#include <utility>

namespace darkbloom::coordinator {
namespace {

constexpr std::array<std::pair<LedgerKind, std::string_view>, 9> kKindNames = {{
    {LedgerKind::deposit, "deposit"},
    {LedgerKind::charge, "charge"},
    {LedgerKind::refund, "refund"},
    {LedgerKind::payout, "payout"},
    {LedgerKind::platform_fee, "platform_fee"},
    {LedgerKind::referral_reward, "referral_reward"},
    {LedgerKind::admin_credit, "admin_credit"},
    {LedgerKind::hold, "hold"},
    {LedgerKind::release, "release"},
}};

constexpr size_t kMaxIdBytes = 128;

}  // namespace

std::string_view ledger_kind_name(LedgerKind kind) {
  for (const auto& [k, name] : kKindNames) {
    if (k == kind) return name;
  }
  return "unknown";
}

std::optional<LedgerKind> parse_ledger_kind(std::string_view name) {
  for (const auto& [kind, n] : kKindNames) {
    if (n == name) return kind;
  }
  return std::nullopt;
}

Status validate_entries(const std::vector<LedgerEntry>& entries) {
  for (const LedgerEntry& entry : entries) {
    if (entry.request_id.empty() || entry.request_id.size() > kMaxIdBytes || entry.account_id.empty() ||
        entry.account_id.size() > kMaxIdBytes) {
      return make_error(Errc::invalid_argument, "a ledger entry needs a request id and an account id");
    }
    if (entry.amount == 0 || entry.amount > kMaxEntryAmount || entry.amount < -kMaxEntryAmount) {
      return make_error(Errc::invalid_argument, fmt::format("ledger amount {} is outside ±{} micro-USD or zero",
                                                            entry.amount, kMaxEntryAmount));
    }
    const bool transfer = entry.kind == LedgerKind::hold || entry.kind == LedgerKind::release;
    if (!transfer && (entry.kind == LedgerKind::charge) != (entry.amount < 0)) {
      return make_error(Errc::invalid_argument,
                        fmt::format("a {} of {} has the wrong sign", ledger_kind_name(entry.kind), entry.amount));
    }
  }
  return {};
}

Status validate_price(const Price& price) {
  if (price.model.size() > kMaxIdBytes) return make_error(Errc::invalid_argument, "model name too long");
  for (int64_t rate : {price.input_per_million, price.output_per_million}) {
    if (rate < 0 || rate > kMaxEntryAmount) {
      return make_error(Errc::invalid_argument,
                        fmt::format("price {} micro-USD per million tokens is outside [0, {}]", rate, kMaxEntryAmount));
    }
  }
  return {};
}

Status BalanceChanges::add(const LedgerEntry& entry) {
  int64_t& sum = by_account[entry.account_id];
  if (__builtin_add_overflow(sum, entry.amount, &sum)) {
    return make_error(Errc::invalid_argument, fmt::format("the batch moves too much for account {}", entry.account_id));
  }
  return {};
}

Error rotated_elsewhere() {
  return {Errc::already_exists, "the old key was already rotated to another key"};
}

Error balance_refused(const LedgerEntry& entry) {
  if (entry.amount < 0) {
    return {Errc::resource_exhausted, fmt::format("insufficient balance on account {}", entry.account_id)};
  }
  return {Errc::invalid_argument,
          fmt::format("the balance of account {} would exceed {}", entry.account_id, kMaxBalance)};
}

}  // namespace darkbloom::coordinator
