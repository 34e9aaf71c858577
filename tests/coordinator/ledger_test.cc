// Billing over both stores: the SPEC §6 formula and split, reservations that never overdraw under
// concurrency, idempotent settlement, refunds, crash recovery of escrow, two coordinators on one
// database. After everything settles, money is conserved: the balances of every account
// (consumers, escrows, providers, referrers, platform) add up to what was credited.
#include <gtest/gtest.h>

#include <algorithm>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "coordinator/billing/ledger.h"
#include "coordinator/store_fixture.h"

namespace darkbloom::coordinator {
namespace {

// A real store whose next `failing_applies` apply() calls fail the way an unreachable database
// does (before anything is written).
class FlakyStore final : public Store {
 public:
  explicit FlakyStore(Store& inner) : inner_(inner) {}
  int failing_applies = 0;  // refused, not written
  int lost_replies = 0;     // written, but the reply never came: the outcome is unknown to the caller
  bool claim_held = true;

  std::string_view kind() const override { return inner_.kind(); }
  Result<std::string> create_account(std::string_view name) override { return inner_.create_account(name); }
  Status add_api_key(const ApiKeyRecord& key) override { return inner_.add_api_key(key); }
  Result<std::optional<ApiKeyRecord>> find_api_key(std::string_view hash) override { return inner_.find_api_key(hash); }
  Result<std::optional<int64_t>> balance(std::string_view account) override { return inner_.balance(account); }
  Result<int> apply(const std::vector<LedgerEntry>& entries) override {
    if (failing_applies > 0) {
      --failing_applies;
      return make_error(Errc::io_error, "database error: connection lost");
    }
    if (lost_replies > 0) {
      --lost_replies;
      (void)inner_.apply(entries);
      return make_error(Errc::unavailable, "database error: connection lost during COMMIT");
    }
    return inner_.apply(entries);
  }
  Result<std::vector<LedgerEntry>> ledger(std::string_view account, int limit) override {
    return inner_.ledger(account, limit);
  }
  Status set_price(const Price& price) override { return inner_.set_price(price); }
  Result<std::vector<Price>> prices() override { return inner_.prices(); }
  Status ensure_account(std::string_view id, std::string_view name, std::string_view owner) override {
    return inner_.ensure_account(id, name, owner);
  }
  Result<std::vector<Escrow>> escrows(std::string_view prefix) override { return inner_.escrows(prefix); }
  Result<std::vector<LedgerEntry>> charges(std::string_view owner, int limit) override {
    return inner_.charges(owner, limit);
  }
  Status set_referrer(std::string_view account, std::string_view referrer) override {
    return inner_.set_referrer(account, referrer);
  }
  Result<std::optional<std::string>> referrer(std::string_view account) override { return inner_.referrer(account); }
  Status claim_coordinator(std::string_view id) override { return inner_.claim_coordinator(id); }
  bool claims_held() const override { return claim_held; }
  Status add_release(const ReleaseRecord& release) override { return inner_.add_release(release); }
  Result<std::vector<ReleaseRecord>> list_releases() override { return inner_.list_releases(); }
  Status set_catalog_model(const CatalogModel& model) override { return inner_.set_catalog_model(model); }
  Result<std::vector<CatalogModel>> catalog_models() override { return inner_.catalog_models(); }
  Result<std::optional<ProviderKeyRecord>> find_provider_key(std::string_view key) override {
    return inner_.find_provider_key(key);
  }
  Status record_provider_key(std::string_view key, std::string_view backend, std::string_view replaces) override {
    return inner_.record_provider_key(key, backend, replaces);
  }
  Status expire_provider_keys(int64_t unix_seconds) override { return inner_.expire_provider_keys(unix_seconds); }
  Status set_account_limits(const AccountLimits& limits) override { return inner_.set_account_limits(limits); }
  Result<std::vector<AccountLimits>> account_limits() override { return inner_.account_limits(); }

 private:
  Store& inner_;
};

class LedgerTest : public StoreParamTest {
 protected:
  void SetUp() override {
    StoreParamTest::SetUp();
    store_ = open();
    alice_ = *store_->create_account("alice");
    provider_ = *store_->create_account("provider");
  }

  void credit(const std::string& account, int64_t amount) {
    ASSERT_TRUE(
        store_->apply({entry("credit_" + std::to_string(++credits_), account, LedgerKind::admin_credit, amount)}));
    credited_ += amount;
  }

  // Sum of every account's balance, escrows included: must equal what was credited.
  int64_t total_balances() {
    auto entries = store_->ledger("", 1'000'000);
    EXPECT_TRUE(entries);
    int64_t total = 0;
    for (const auto& e : *entries) total += e.amount;
    return total;
  }

  std::unique_ptr<Store> store_;
  std::string alice_, provider_;
  int credits_ = 0;
  int64_t credited_ = 0;
};

TEST_P(LedgerTest, cost_follows_the_formula_with_a_minimum_and_no_overflow) {
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  // Defaults: 50,000 / 200,000 micro-USD per million input / output tokens.
  EXPECT_EQ(ledger.cost("m", 10'000, 5'000), 500 + 1'000);
  EXPECT_EQ(ledger.cost("m", 1'999, 0), 100);  // floor(99.95) = 99, below the minimum of 100
  EXPECT_EQ(ledger.cost("m", 1, 1), 100);
  ASSERT_TRUE(store_->set_price({"cheap", 1'000'000, 3'000'000}));  // 1 and 3 micro-USD per token
  ASSERT_TRUE(ledger.reload_prices());
  EXPECT_EQ(ledger.cost("cheap", 1'000, 2'000), 1'000 + 6'000);
  EXPECT_EQ(ledger.cost("m", 10'000, 5'000), 1'500);  // no default row: the built-in default
  ASSERT_TRUE(store_->set_price({"", 100'000, 100'000}));
  ASSERT_TRUE(ledger.reload_prices());
  EXPECT_EQ(ledger.cost("m", 10'000, 5'000), 1'500);
  ASSERT_TRUE(store_->set_price({"huge", kMaxEntryAmount, kMaxEntryAmount}));
  ASSERT_TRUE(ledger.reload_prices());
  EXPECT_EQ(ledger.cost("huge", int64_t{1} << 40, int64_t{1} << 40), kMaxEntryAmount);
}

TEST_P(LedgerTest, settlement_splits_the_cost_and_refunds_the_rest) {
  const std::string bob = *store_->create_account("bob");
  ASSERT_TRUE(store_->set_referrer(alice_, bob));
  credit(alice_, 1'000'000);
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  auto reservation = ledger.reserve(alice_, "req_1", "m", 20'000, 10'000);  // worst case 1,000 + 2,000
  ASSERT_TRUE(reservation) << reservation.error().message;
  EXPECT_EQ(reservation->amount, 3'000);
  EXPECT_EQ(*ledger.balance(alice_), 1'000'000 - 3'000);
  // 10,000 in + 500 out = 500 + 100 = 600: 570 to the provider, 30 fee, 6 of it to the referrer.
  const Settlement settled = ledger.settle(*reservation, 10'000, 500, provider_);
  EXPECT_EQ(settled.charged, 600);
  EXPECT_EQ(settled.payout, 570);
  EXPECT_EQ(settled.referral_reward, 6);
  EXPECT_EQ(settled.platform_fee, 24);
  EXPECT_EQ(ledger.settle(*reservation, 10'000, 500, provider_).charged, 0);  // twice: nothing
  ASSERT_TRUE(ledger.flush());
  EXPECT_EQ(**store_->balance(provider_), 570);
  EXPECT_EQ(**store_->balance(bob), 6);
  EXPECT_EQ(**store_->balance("acct_platform"), 24);
  EXPECT_EQ(*ledger.balance(alice_), 1'000'000 - 600);
  auto charges = store_->charges(alice_, 10);
  ASSERT_EQ(charges->size(), 1u);
  EXPECT_EQ((*charges)[0].request_id, "req_1");
  EXPECT_EQ((*charges)[0].amount, -600);
  ASSERT_TRUE(ledger.release_idle(true));
  EXPECT_EQ(**store_->balance(alice_), 1'000'000 - 600);  // the allowance went back
  EXPECT_EQ(total_balances(), credited_);
}

TEST_P(LedgerTest, a_failure_before_the_first_token_costs_nothing) {
  credit(alice_, 10'000);
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  auto reservation = ledger.reserve(alice_, "req_1", "m", 100, 100);
  ASSERT_TRUE(reservation);
  ledger.refund(*reservation);
  ledger.refund(*reservation);
  ASSERT_TRUE(ledger.flush());
  EXPECT_EQ(*ledger.balance(alice_), 10'000);
  EXPECT_TRUE(store_->charges(alice_, 10)->empty());
  EXPECT_EQ(ledger.queued(), 0u);
}

TEST_P(LedgerTest, unknown_accounts_duplicates_and_empty_balances_are_refused) {
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  auto unknown = ledger.reserve("acct_missing", "req_1", "m", 10, 10);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
  auto broke = ledger.reserve(alice_, "req_2", "m", 10, 10);
  ASSERT_FALSE(broke);
  EXPECT_EQ(broke.error().code, Errc::resource_exhausted);
  credit(alice_, 1'000);
  ASSERT_TRUE(ledger.reserve(alice_, "req_3", "m", 10, 10));
  auto twice = ledger.reserve(alice_, "req_3", "m", 10, 10);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, Errc::already_exists);
}

// A database outage during a group commit loses no settlement: it is written by a later flush.
TEST_P(LedgerTest, settlements_survive_a_database_outage) {
  credit(alice_, 100'000);
  FlakyStore flaky(*store_);
  Ledger ledger(flaky, {});
  ASSERT_TRUE(ledger.start());
  auto reservation = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
  ASSERT_TRUE(reservation);
  EXPECT_EQ(ledger.settle(*reservation, 1'000, 1'000, provider_).charged, 250);
  flaky.failing_applies = 2;
  EXPECT_FALSE(ledger.flush());
  EXPECT_FALSE(ledger.flush());
  EXPECT_GT(ledger.queued(), 0u);
  EXPECT_EQ(**store_->balance(provider_), 0);
  ASSERT_TRUE(ledger.flush());
  EXPECT_EQ(ledger.queued(), 0u);
  EXPECT_EQ(**store_->balance(provider_), 250 * 95 / 100);
  ASSERT_TRUE(ledger.release_idle(true));
  EXPECT_EQ(**store_->balance(alice_), 100'000 - 250);
  EXPECT_EQ(total_balances(), credited_);
}

// A hold or a release whose COMMIT reply was lost is applied again under the same id: counted once
// in memory whatever the database did, and the books balance.
TEST_P(LedgerTest, holds_and_releases_with_unknown_outcomes_are_counted_once) {
  credit(alice_, 100'000);
  FlakyStore flaky(*store_);
  Ledger ledger(flaky, {});
  ASSERT_TRUE(ledger.start());
  flaky.lost_replies = 1;  // the hold lands, its reply is lost
  auto refused = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::unavailable);
  auto reservation = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
  ASSERT_TRUE(reservation) << reservation.error().message;
  // One hold in the database, not two: the retry found it applied.
  const auto holds = store_->ledger(alice_, 100);
  ASSERT_TRUE(holds);
  EXPECT_EQ(
      std::count_if(holds->begin(), holds->end(), [](const LedgerEntry& e) { return e.kind == LedgerKind::hold; }), 1);
  ledger.settle(*reservation, 1'000, 1'000, provider_);
  ASSERT_TRUE(ledger.flush());
  flaky.lost_replies = 1;  // the release lands, its reply is lost
  EXPECT_FALSE(ledger.release_idle(true));
  EXPECT_EQ(*ledger.balance(alice_), 100'000 - 250) << "not counted back into the allowance as well";
  ASSERT_TRUE(ledger.release_idle(true));  // applied again: found written
  EXPECT_EQ(**store_->balance(alice_), 100'000 - 250);
  EXPECT_EQ(*ledger.balance(alice_), 100'000 - 250);
  EXPECT_TRUE(store_->escrows("escrow_")->empty());
  EXPECT_EQ(total_balances(), credited_);
}

// Without its coordinator-id claim (a PostgreSQL reconnect that could not take it again) the
// ledger neither reserves nor writes: another coordinator may be using the same escrow.
TEST_P(LedgerTest, a_lost_coordinator_claim_pauses_billing_until_it_is_held_again) {
  credit(alice_, 100'000);
  FlakyStore flaky(*store_);
  Ledger ledger(flaky, {});
  ASSERT_TRUE(ledger.start());
  auto reservation = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
  ASSERT_TRUE(reservation);
  ledger.settle(*reservation, 1'000, 1'000, provider_);
  flaky.claim_held = false;
  auto paused = ledger.reserve(alice_, "req_2", "m", 1'000, 1'000);
  ASSERT_FALSE(paused);
  EXPECT_EQ(paused.error().code, Errc::unavailable);
  EXPECT_FALSE(ledger.reserve_in_memory(alice_, "req_3", "m", 1'000, 1'000).value());
  EXPECT_FALSE(ledger.flush());
  EXPECT_GT(ledger.queued(), 0u) << "kept for when the claim is back";
  flaky.claim_held = true;
  ASSERT_TRUE(ledger.flush());
  EXPECT_EQ(**store_->balance(provider_), 250 * 95 / 100);
  ASSERT_TRUE(ledger.release_idle(true));
  EXPECT_EQ(total_balances(), credited_);
}

// A settlement the database refuses for good (its payee does not exist) is dropped, and what it
// would have charged goes back to the consumer instead of staying parked in escrow.
TEST_P(LedgerTest, a_refused_settlement_charges_nothing_and_parks_nothing) {
  credit(alice_, 100'000);
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  auto good = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
  auto bad = ledger.reserve(alice_, "req_2", "m", 1'000, 1'000);
  ASSERT_TRUE(good && bad);
  ledger.settle(*good, 1'000, 1'000, provider_);
  ledger.settle(*bad, 1'000, 1'000, "acct_vanished");
  EXPECT_FALSE(ledger.flush());  // req_2 is refused; req_1 is written on its own
  EXPECT_EQ(ledger.queued(), 0u);
  EXPECT_EQ(**store_->balance(provider_), 250 * 95 / 100);
  ASSERT_TRUE(ledger.release_idle(true));
  EXPECT_EQ(**store_->balance(alice_), 100'000 - 250);
  EXPECT_TRUE(store_->escrows("escrow_")->empty());
  EXPECT_EQ(total_balances(), credited_);
}

// 200 requests at once on an account that covers 20 worst cases: exactly 20 run.
TEST_P(LedgerTest, concurrent_reservations_never_exceed_the_balance) {
  Ledger probe(*store_, {});
  const int64_t worst = probe.cost("m", 1'000, 1'000);
  credit(alice_, 20 * worst);
  Ledger ledger(*store_, {});
  ASSERT_TRUE(ledger.start());
  std::mutex mutex;
  std::vector<Reservation> accepted;
  std::atomic<int> refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto r = ledger.reserve(alice_, "req_" + std::to_string(t) + "_" + std::to_string(i), "m", 1'000, 1'000);
        if (r) {
          std::lock_guard lock(mutex);
          accepted.push_back(*r);
        } else if (r.error().code == Errc::resource_exhausted) {
          ++refused;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  ASSERT_EQ(accepted.size(), 20u);
  EXPECT_EQ(refused.load(), 180);
  EXPECT_EQ(**store_->balance(alice_), 0);
  for (const auto& r : accepted) ledger.settle(r, 1'000, 1'000, provider_);
  ASSERT_TRUE(ledger.flush());
  ASSERT_TRUE(ledger.release_idle(true));
  EXPECT_EQ(**store_->balance(alice_), 0);
  EXPECT_EQ(**store_->balance(provider_), 20 * (worst * 95 / 100));
  EXPECT_EQ(store_->charges(alice_, 100)->size(), 20u);
  EXPECT_EQ(total_balances(), credited_);
}

// A coordinator that dies between reserve and settle: what it held returns at its next start,
// what it never wrote is never charged, and the books balance.
TEST_P(LedgerTest, a_crash_leaves_nothing_held_and_nothing_charged_twice) {
  credit(alice_, 100'000);
  {
    Ledger ledger(*store_, {});
    ASSERT_TRUE(ledger.start());
    auto written = ledger.reserve(alice_, "req_1", "m", 1'000, 1'000);
    auto lost = ledger.reserve(alice_, "req_2", "m", 1'000, 1'000);
    auto open = ledger.reserve(alice_, "req_3", "m", 1'000, 1'000);
    ASSERT_TRUE(written && lost && open);
    ledger.settle(*written, 1'000, 1'000, provider_);
    ASSERT_TRUE(ledger.flush());
    ledger.settle(*lost, 1'000, 1'000, provider_);  // queued, never flushed: the "crash"
    EXPECT_LT(**store_->balance(alice_), 100'000 - 250);
  }
  const int64_t charged = 250;  // req_1 only: 1,000 x 50,000 / 1e6 + 1,000 x 200,000 / 1e6
  Ledger restarted(*store_, {});
  ASSERT_TRUE(restarted.start());
  EXPECT_EQ(**store_->balance(alice_), 100'000 - charged);
  EXPECT_TRUE(store_->escrows("escrow_")->empty());
  EXPECT_EQ(store_->charges(alice_, 10)->size(), 1u);
  // Starting again changes nothing more.
  Ledger again(*store_, {});
  ASSERT_TRUE(again.start());
  EXPECT_EQ(**store_->balance(alice_), 100'000 - charged);
  EXPECT_EQ(total_balances(), credited_);
}

// Two coordinators, each with its own connection and escrow, spending one balance.
TEST_P(LedgerTest, two_coordinators_on_one_database_never_overspend) {
  Ledger probe(*store_, {});
  const int64_t worst = probe.cost("m", 1'000, 1'000);
  credit(alice_, 20 * worst);
  auto second_store = open();
  BillingOptions a_options, b_options;
  a_options.coordinator_id = "a";
  b_options.coordinator_id = "b";
  Ledger a(*store_, a_options), b(*second_store, b_options);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(b.start());
  std::mutex mutex;
  std::vector<std::pair<Ledger*, Reservation>> accepted;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Ledger& ledger = t % 2 == 0 ? a : b;
      for (int i = 0; i < 25; ++i) {
        auto r = ledger.reserve(alice_, "req_" + std::to_string(t) + "_" + std::to_string(i), "m", 1'000, 1'000);
        if (r) {
          std::lock_guard lock(mutex);
          accepted.emplace_back(&ledger, *r);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_LE(accepted.size(), 20u);
  // Each coordinator's last hold takes what is left, so little of the balance can go unused.
  EXPECT_GE(accepted.size(), 16u);
  for (auto& [ledger, r] : accepted) ledger->settle(r, 1'000, 1'000, provider_);
  ASSERT_TRUE(a.release_idle(true));
  ASSERT_TRUE(b.release_idle(true));
  EXPECT_EQ(**store_->balance(alice_), (20 - static_cast<int64_t>(accepted.size())) * worst);
  EXPECT_EQ(store_->charges(alice_, 100)->size(), accepted.size());
  EXPECT_EQ(total_balances(), credited_);
}

INSTANTIATE_TEST_SUITE_P(Stores, LedgerTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace darkbloom::coordinator
