// One suite for every Store: SQLite on a file in a temporary directory, and PostgreSQL on a
// private server this process starts (support/postgres_server.h). Each test gets a fresh database.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "base/time.h"
#include "coordinator/store/store.h"
#include "coordinator/store_fixture.h"

namespace darkbloom::coordinator {
namespace {

class StoreTest : public StoreParamTest {
 protected:
  // A second process that opens this test's database, claims `id`, reports that on a pipe, and
  // then waits to be killed; it is killed when this object dies, even if the test fails first.
  class ClaimHolder {
   public:
    ClaimHolder(const std::string& kind, const std::string& location, const std::string& id) {
      int fds[2];
      if (pipe(fds) != 0) return;
      pid_ = fork();
      if (pid_ == 0) {
        // No destructors, no gtest here: only the byte on the pipe says that the claim was taken.
        close(fds[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(1);
        auto store = kind == "sqlite" ? open_sqlite_store(location) : open_postgres_store(location);
        if (store && (*store)->claim_coordinator(id) && write(fds[1], "c", 1) == 1) pause();
        _exit(1);
      }
      close(fds[1]);
      char byte = 0;
      claimed_ = pid_ > 0 && read(fds[0], &byte, 1) == 1;
      close(fds[0]);
    }
    ~ClaimHolder() { crash(); }
    ClaimHolder(const ClaimHolder&) = delete;
    ClaimHolder& operator=(const ClaimHolder&) = delete;

    bool claimed() const { return claimed_; }
    // SIGKILL: the holder gets no chance to release anything.
    void crash() {
      if (pid_ <= 0) return;
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }

   private:
    pid_t pid_ = -1;
    bool claimed_ = false;
  };
};

TEST_P(StoreTest, accounts_and_api_keys_round_trip) {
  auto store = open();
  EXPECT_EQ(store->kind(), GetParam());
  auto account = store->create_account("alice");
  ASSERT_TRUE(account) << account.error().message;
  EXPECT_EQ(account->rfind("acct_", 0), 0u);
  ASSERT_TRUE(store->add_api_key({"hash1", "dbk_abc", *account, 1700000000}));
  auto found = store->find_api_key("hash1");
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->account_id, *account);
  EXPECT_EQ((*found)->key_prefix, "dbk_abc");
  EXPECT_EQ((*found)->created_at, 1700000000);
  EXPECT_FALSE(store->find_api_key("nope")->has_value());
  // A key for an account that does not exist is refused by the schema.
  EXPECT_FALSE(store->add_api_key({"hash2", "dbk_x", "acct_missing", 1}));
  EXPECT_EQ(**store->balance(*account), 0);
  EXPECT_FALSE(store->balance("acct_missing")->has_value());
}

TEST_P(StoreTest, credits_and_charges_move_balances_and_are_listed_newest_first) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  const std::string bob = *store->create_account("bob");
  auto added = store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 10'000)});
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ(*added, 1);
  added =
      store->apply({entry("req_1", alice, LedgerKind::charge, -3'000), entry("req_1", bob, LedgerKind::payout, 2'850),
                    entry("req_1", alice, LedgerKind::refund, 500)});
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ(*added, 3);
  EXPECT_EQ(**store->balance(alice), 7'500);
  EXPECT_EQ(**store->balance(bob), 2'850);
  auto entries = store->ledger(alice, 10);
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].kind, LedgerKind::refund);
  EXPECT_EQ((*entries)[1].kind, LedgerKind::charge);
  EXPECT_EQ((*entries)[1].amount, -3'000);
  EXPECT_EQ((*entries)[2].kind, LedgerKind::admin_credit);
  EXPECT_GT((*entries)[2].created_at, 1'600'000'000);
  EXPECT_EQ(store->ledger("", 100)->size(), 4u);
  EXPECT_EQ(store->ledger(alice, 1)->size(), 1u);
}

TEST_P(StoreTest, applying_a_settlement_twice_changes_nothing) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  const std::string bob = *store->create_account("bob");
  ASSERT_TRUE(store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 1'000)}));
  const std::vector<LedgerEntry> settlement = {entry("req_7", alice, LedgerKind::charge, -400),
                                               entry("req_7", bob, LedgerKind::payout, 380)};
  EXPECT_EQ(*store->apply(settlement), 2);
  EXPECT_EQ(*store->apply(settlement), 0);
  // Even mixed with a new entry, only the new one counts.
  EXPECT_EQ(*store->apply({settlement[0], entry("req_8", alice, LedgerKind::charge, -100)}), 1);
  EXPECT_EQ(**store->balance(alice), 500);
  EXPECT_EQ(**store->balance(bob), 380);
  EXPECT_EQ(store->ledger("", 100)->size(), 4u);
}

TEST_P(StoreTest, an_overdraft_refuses_the_whole_batch) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  const std::string bob = *store->create_account("bob");
  ASSERT_TRUE(store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 1'000)}));
  auto refused =
      store->apply({entry("req_1", bob, LedgerKind::payout, 950), entry("req_1", alice, LedgerKind::charge, -1'001)});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::resource_exhausted) << refused.error().message;
  EXPECT_NE(refused.error().message.find(alice), std::string::npos);
  EXPECT_EQ(**store->balance(alice), 1'000);
  EXPECT_EQ(**store->balance(bob), 0);
  EXPECT_EQ(store->ledger("", 100)->size(), 1u);
  // Exactly the balance is fine.
  EXPECT_TRUE(store->apply({entry("req_2", alice, LedgerKind::charge, -1'000)}));
  EXPECT_EQ(**store->balance(alice), 0);
}

TEST_P(StoreTest, bad_entries_are_refused_and_change_nothing) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  ASSERT_TRUE(store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 1'000)}));
  auto unknown = store->apply({entry("req_1", "acct_missing", LedgerKind::payout, 5)});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found) << unknown.error().message;
  const std::vector<std::vector<LedgerEntry>> bad = {
      {entry("req_2", alice, LedgerKind::charge, 0)},
      {entry("req_3", alice, LedgerKind::charge, 10)},         // a charge must be negative
      {entry("req_4", alice, LedgerKind::admin_credit, -10)},  // a credit must be positive
      {entry("req_5", alice, LedgerKind::admin_credit, kMaxEntryAmount + 1)},
      {entry("req_6", alice, LedgerKind::charge, -kMaxEntryAmount - 1)},
      {entry("", alice, LedgerKind::admin_credit, 10)},
      {entry("req_7", "", LedgerKind::admin_credit, 10)},
      {entry("req_8", alice, LedgerKind::admin_credit, 10), entry("req_8", alice, LedgerKind::charge, 10)},
  };
  for (const auto& batch : bad) {
    auto result = store->apply(batch);
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, Errc::invalid_argument) << result.error().message;
  }
  EXPECT_EQ(**store->balance(alice), 1'000);
  EXPECT_EQ(store->ledger("", 100)->size(), 1u);
}

TEST_P(StoreTest, balances_have_a_ceiling_that_sums_cannot_overflow) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  std::vector<LedgerEntry> credits;
  for (int i = 0; i < 1000; ++i) {
    credits.push_back(entry("credit_" + std::to_string(i), alice, LedgerKind::admin_credit, kMaxEntryAmount));
  }
  ASSERT_TRUE(store->apply(credits));
  EXPECT_EQ(**store->balance(alice), kMaxBalance);
  auto over = store->apply({entry("credit_over", alice, LedgerKind::admin_credit, 1)});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, Errc::invalid_argument) << over.error().message;
  EXPECT_EQ(**store->balance(alice), kMaxBalance);
}

// Several threads, and a second connection as a second coordinator would hold, charging one
// account at once: exactly the covered charges go through and the balance never goes negative.
TEST_P(StoreTest, concurrent_charges_from_two_connections_never_overdraw) {
  auto first = open();
  auto second = open();
  const std::string alice = *first->create_account("alice");
  ASSERT_TRUE(first->apply({entry("credit_1", alice, LedgerKind::admin_credit, 2'000)}));
  std::atomic<int> accepted{0}, refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Store& store = t % 2 == 0 ? *first : *second;
      for (int i = 0; i < 25; ++i) {
        auto result =
            store.apply({entry("req_" + std::to_string(t) + "_" + std::to_string(i), alice, LedgerKind::charge, -100)});
        if (result) {
          ++accepted;
        } else if (result.error().code == Errc::resource_exhausted) {
          ++refused;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(accepted.load(), 20);
  EXPECT_EQ(refused.load(), 180);
  EXPECT_EQ(**second->balance(alice), 0);
  auto entries = first->ledger(alice, 1000);
  ASSERT_TRUE(entries);
  const int64_t sum = std::accumulate(entries->begin(), entries->end(), int64_t{0},
                                      [](int64_t total, const LedgerEntry& e) { return total + e.amount; });
  EXPECT_EQ(sum, 0);  // the ledger explains the balance
}

// Escrow accounts: a hold moves money in, a charge pays from it, a release moves the rest back.
TEST_P(StoreTest, escrow_accounts_hold_charge_and_release) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  const std::string provider = *store->create_account("provider");
  const std::string escrow = "escrow_c1_" + alice;
  ASSERT_TRUE(store->ensure_account(escrow, "escrow", alice));
  ASSERT_TRUE(store->ensure_account(escrow, "escrow", alice));  // kept as it is
  ASSERT_TRUE(store->ensure_account("acct_platform", "platform", ""));
  EXPECT_EQ(**store->balance("acct_platform"), 0);
  auto missing = store->ensure_account("escrow_c1_x", "escrow", "acct_missing");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  ASSERT_TRUE(store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 1'000)}));
  ASSERT_TRUE(
      store->apply({entry("hold_1", alice, LedgerKind::hold, -600), entry("hold_1", escrow, LedgerKind::hold, 600)}));
  ASSERT_TRUE(store->apply(
      {entry("req_1", escrow, LedgerKind::charge, -200), entry("req_1", provider, LedgerKind::payout, 200)}));
  auto held = store->escrows("escrow_c1_");
  ASSERT_TRUE(held);
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0].id, escrow);
  EXPECT_EQ((*held)[0].owner, alice);
  EXPECT_EQ((*held)[0].balance, 400);
  EXPECT_TRUE(store->escrows("escrow_c2_")->empty());
  auto charges = store->charges(alice, 10);
  ASSERT_TRUE(charges);
  ASSERT_EQ(charges->size(), 1u);
  EXPECT_EQ((*charges)[0].request_id, "req_1");
  EXPECT_EQ((*charges)[0].amount, -200);
  ASSERT_TRUE(store->apply(
      {entry("release_1", escrow, LedgerKind::release, -400), entry("release_1", alice, LedgerKind::release, 400)}));
  EXPECT_TRUE(store->escrows("escrow_c1_")->empty());
  EXPECT_EQ(**store->balance(alice), 800);
  EXPECT_EQ(**store->balance(provider), 200);
}

// Two coordinators with one id would spend each other's escrow: only one connection may hold it.
TEST_P(StoreTest, a_coordinator_id_is_claimed_by_one_holder_at_a_time) {
  auto first = open();
  ASSERT_TRUE(first->claim_coordinator("main"));
  ASSERT_TRUE(first->claim_coordinator("main"));  // the holder again: fine
  auto second = open();
  auto taken = second->claim_coordinator("main");
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, Errc::already_exists);
  EXPECT_NE(taken.error().message.find("--coordinator-id"), std::string::npos);
  EXPECT_TRUE(second->claim_coordinator("other"));
  first.reset();  // the holder closes: its claim has ended when the destructor returns
  EXPECT_TRUE(second->claim_coordinator("main"));
}

// A holder that crashes releases nothing itself; its claim ends with its process, on PostgreSQL
// once the server has noticed the connection closed (a moment later, so this waits for it).
TEST_P(StoreTest, a_crashed_holders_claim_ends_with_its_process) {
  auto survivor = open();
  ClaimHolder holder(GetParam(), location_, "main");
  ASSERT_TRUE(holder.claimed());
  auto taken = survivor->claim_coordinator("main");
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, Errc::already_exists);
  holder.crash();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  Status claimed = survivor->claim_coordinator("main");
  while (!claimed && claimed.error().code == Errc::already_exists && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    claimed = survivor->claim_coordinator("main");
  }
  EXPECT_TRUE(claimed) << claimed.error().message;
}

TEST_P(StoreTest, prices_are_set_replaced_and_checked) {
  auto store = open();
  EXPECT_TRUE(store->prices()->empty());
  ASSERT_TRUE(store->set_price({"", 50'000, 200'000}));
  ASSERT_TRUE(store->set_price({"qwen3-8b", 10, 20}));
  ASSERT_TRUE(store->set_price({"qwen3-8b", 30, 40}));
  auto prices = store->prices();
  ASSERT_TRUE(prices);
  ASSERT_EQ(prices->size(), 2u);
  EXPECT_EQ((*prices)[0].model, "");
  EXPECT_EQ((*prices)[0].output_per_million, 200'000);
  EXPECT_EQ((*prices)[1].model, "qwen3-8b");
  EXPECT_EQ((*prices)[1].input_per_million, 30);
  EXPECT_EQ((*prices)[1].output_per_million, 40);
  for (const Price& bad : {Price{"m", -1, 0}, Price{"m", 0, kMaxEntryAmount + 1}, Price{std::string(200, 'm'), 1, 1}}) {
    auto result = store->set_price(bad);
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, Errc::invalid_argument);
  }
  EXPECT_EQ(store->prices()->size(), 2u);
}

TEST_P(StoreTest, a_referrer_is_set_once_and_must_exist) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  const std::string bob = *store->create_account("bob");
  EXPECT_FALSE(store->referrer(alice)->has_value());
  auto self = store->set_referrer(alice, alice);
  ASSERT_FALSE(self);
  EXPECT_EQ(self.error().code, Errc::invalid_argument);
  auto unknown = store->set_referrer(alice, "acct_missing");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
  unknown = store->set_referrer("acct_missing", alice);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
  ASSERT_TRUE(store->set_referrer(alice, bob));
  EXPECT_EQ(**store->referrer(alice), bob);
  auto again = store->set_referrer(alice, bob);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::already_exists);
}

TEST_P(StoreTest, catalogue_entries_are_replaced_by_id_and_listed_in_id_order) {
  auto store = open();
  const std::string root_a(64, 'a');
  const std::string root_b(64, 'b');
  ASSERT_TRUE(store->set_catalog_model({"zeta", root_a, 10, 100}));
  ASSERT_TRUE(store->set_catalog_model({"alpha", root_a, uint64_t{1} << 40, 100}));
  ASSERT_TRUE(store->set_catalog_model({"zeta", root_b, 20, 200}));
  auto models = store->catalog_models();
  ASSERT_TRUE(models) << models.error().message;
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].id, "alpha");
  EXPECT_EQ((*models)[0].size_bytes, uint64_t{1} << 40);  // past 32 bits, on both stores
  EXPECT_EQ((*models)[1].id, "zeta");
  EXPECT_EQ((*models)[1].merkle_root, root_b);
  EXPECT_EQ((*models)[1].size_bytes, 20u);
  EXPECT_EQ((*models)[1].created_at, 200);
}

TEST_P(StoreTest, releases_and_provider_keys_round_trip) {
  auto store = open();
  ASSERT_TRUE(store->add_release({"aa", "1.0", "first", 10}));
  ASSERT_TRUE(store->add_release({"aa", "1.1", "renamed", 10}));
  ASSERT_TRUE(store->add_release({"bb", "2.0", "", 20}));
  auto releases = store->list_releases();
  ASSERT_TRUE(releases);
  ASSERT_EQ(releases->size(), 2u);
  EXPECT_EQ((*releases)[0].version, "1.1");
  EXPECT_EQ((*releases)[1].binary_hash, "bb");
  ASSERT_TRUE(store->record_provider_key("key1", "tpm2", ""));
  ASSERT_TRUE(store->record_provider_key("key2", "tpm2", "key1"));
  auto old_key = store->find_provider_key("key1");
  ASSERT_TRUE(old_key && old_key->has_value());
  EXPECT_EQ((*old_key)->replaced_by, "key2");
  auto new_key = store->find_provider_key("key2");
  ASSERT_TRUE(new_key && new_key->has_value());
  EXPECT_EQ((*new_key)->replaced_by, "");
  EXPECT_EQ((*new_key)->key_backend, "tpm2");
  EXPECT_FALSE(store->find_provider_key("key3")->has_value());

  // A key is retired once, to one new key; an old key the store never saw leaves no row.
  auto again = store->record_provider_key("key3", "tpm2", "key1");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::already_exists);
  EXPECT_FALSE(store->find_provider_key("key3")->has_value()) << "refused as a whole";
  EXPECT_TRUE(store->record_provider_key("key2", "tpm2", "key1")) << "the same rotation again is fine";
  ASSERT_TRUE(store->record_provider_key("key4", "tpm2", "never-seen"));
  EXPECT_FALSE(store->find_provider_key("never-seen")->has_value());
  ASSERT_TRUE(store->expire_provider_keys(unix_seconds_now() - 3600));
  EXPECT_TRUE(store->find_provider_key("key4")->has_value());

  // Expiry forgets keys unused since the cut-off, but never the row of a retired key.
  ASSERT_TRUE(store->expire_provider_keys(unix_seconds_now() - 3600));
  EXPECT_TRUE(store->find_provider_key("key2")->has_value());
  ASSERT_TRUE(store->expire_provider_keys(unix_seconds_now() + 3600));
  EXPECT_FALSE(store->find_provider_key("key2")->has_value());
  auto retired = store->find_provider_key("key1");
  ASSERT_TRUE(retired && retired->has_value());
  EXPECT_EQ((*retired)->replaced_by, "key2");
}

TEST_P(StoreTest, account_limits_round_trip_and_name_a_real_account) {
  auto store = open();
  const std::string alice = *store->create_account("alice");
  ASSERT_TRUE(store->set_account_limits({alice, 5, 10, 2}));
  ASSERT_TRUE(store->set_account_limits({alice, 0, 0, 0}));  // unlimited
  auto all = store->account_limits();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].account_id, alice);
  EXPECT_EQ((*all)[0].requests_per_second, 0);
  auto unknown = store->set_account_limits({"acct_nobody", 1, 1, 1});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
}

// Reopening applies no migration twice and keeps everything.
TEST_P(StoreTest, reopening_keeps_the_data) {
  std::string alice;
  {
    auto store = open();
    alice = *store->create_account("alice");
    ASSERT_TRUE(store->apply({entry("credit_1", alice, LedgerKind::admin_credit, 42)}));
  }
  auto again = open();
  EXPECT_EQ(**again->balance(alice), 42);
  auto third = open();
  EXPECT_EQ(third->ledger(alice, 10)->size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(PostgresStore, an_unreachable_server_is_a_clear_error) {
  auto store = open_postgres_store("postgresql://darkbloom@127.0.0.1:1/nothing?connect_timeout=2");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::unavailable);
  EXPECT_NE(store.error().message.find("cannot connect to PostgreSQL"), std::string::npos) << store.error().message;
  EXPECT_EQ(store.error().message.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace darkbloom::coordinator
