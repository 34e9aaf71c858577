// A database transaction as a guard, for both stores: begun when made, rolled back when it goes
// out of scope uncommitted, so no error path can leave a connection inside a transaction (every
// later BEGIN on it would fail). It takes no lock: callers hold their store's mutex.
#pragma once

#include <concepts>
#include <string>
#include <utility>

#include "base/result.h"

namespace darkbloom::coordinator {

// What a transaction needs of a connection: a cheap handle, copied into the guard, that runs one
// statement and says whether the connection is inside a transaction.
template <typename Session>
concept TransactionSession = std::copyable<Session> && requires(const Session& session, const std::string& sql) {
  { session.exec(sql) } -> std::same_as<Status>;
  { session.in_transaction() } -> std::same_as<bool>;
};

template <TransactionSession Session>
class [[nodiscard]] Transaction {
 public:
  // Runs `begin_sql`: "BEGIN IMMEDIATE" on SQLite, so that a second writer waits for the write
  // lock at BEGIN (busy timeout) instead of failing with SQLITE_BUSY when its read lock would be
  // upgraded mid-way; "BEGIN" on PostgreSQL, whose row locks do that waiting.
  static Result<Transaction> begin(Session session, const std::string& begin_sql) {
    DARKBLOOM_RETURN_IF_ERROR(session.exec(begin_sql));
    return Transaction(std::move(session));
  }

  Transaction(Transaction&& other) noexcept
      : session_(std::move(other.session_)), open_(std::exchange(other.open_, false)) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Transaction& operator=(Transaction&&) = delete;

  // The error that abandoned the transaction is already on its way to the caller; a failed
  // ROLLBACK adds nothing it could act on.
  ~Transaction() {
    if (open_) (void)session_.exec("ROLLBACK");
  }

  // COMMIT, and if that failed without ending the transaction (SQLite leaves it open on some
  // errors, SQLITE_BUSY among them), ROLLBACK: either way the connection is outside a transaction
  // afterwards. Call it once.
  Status commit() {
    open_ = false;
    Status committed = session_.exec("COMMIT");
    if (!committed && session_.in_transaction()) (void)session_.exec("ROLLBACK");
    return committed;
  }

 private:
  explicit Transaction(Session session) : session_(std::move(session)) {}

  Session session_;
  bool open_ = true;
};

}  // namespace darkbloom::coordinator
