// Tests that run on every Store: the parameter is "sqlite" (a file in a temporary directory) or
// "postgres" (a fresh database on a private server this test process starts once).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "coordinator/store/store.h"
#include "support/postgres_server.h"
#include "support/temp_dir.h"

namespace darkbloom::coordinator {

// One server per test process, started on first use and stopped at exit.
inline testing::PostgresServer& postgres() {
  static testing::PostgresServer server;
  return server;
}

class StoreParamTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    location_ = GetParam() == "sqlite" ? dir_.file("coordinator.db") : postgres().create_database();
  }

  // A new connection to this test's database (call it again for a second coordinator's view).
  std::unique_ptr<Store> open() {
    auto store = GetParam() == "sqlite" ? open_sqlite_store(location_) : open_postgres_store(location_);
    if (!store) throw std::runtime_error(store.error().message);
    return std::move(*store);
  }

  static LedgerEntry entry(std::string request, std::string account, LedgerKind kind, int64_t amount) {
    return LedgerEntry{std::move(request), std::move(account), kind, amount, 0};
  }

  testing::TempDir dir_;
  std::string location_;
};

}  // namespace darkbloom::coordinator
