#include "coordinator/store/store_worker.h"

#include <fmt/format.h>

namespace darkbloom::coordinator {

StoreWorker::StoreWorker(net::Clock& clock, StoreWorkerOptions options) : clock_(clock), options_(options) {
  if (options_.threads > 0) pool_ = std::make_unique<net::asio::thread_pool>(options_.threads);
}

StoreWorker::~StoreWorker() {
  stopped_ = true;
  if (pool_) pool_->join();
}

bool StoreWorker::stop() {
  stopped_ = true;
  if (stalled()) return false;
  if (pool_) pool_->join();
  return true;
}

bool StoreWorker::stalled() const {
  std::lock_guard lock(mutex_);
  return !running_.empty() && clock_.now() - running_.begin()->second > options_.stall_after;
}

bool StoreWorker::available() const {
  return unavailable_reason().empty();
}

std::string StoreWorker::unavailable_reason() const {
  {
    std::lock_guard lock(mutex_);
    if (!running_.empty() && clock_.now() - running_.begin()->second > options_.stall_after) {
      return fmt::format(
          "the database has not answered for {} ms",
          std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - running_.begin()->second).count());
    }
  }
  if (waiting_.load() >= options_.max_waiting) {
    return fmt::format("the database is busy ({} calls waiting)", waiting_.load());
  }
  return {};
}

uint64_t StoreWorker::started() {
  std::lock_guard lock(mutex_);
  const uint64_t ticket = next_ticket_++;
  running_.emplace(ticket, clock_.now());
  return ticket;
}

void StoreWorker::finished(uint64_t ticket) {
  {
    std::lock_guard lock(mutex_);
    running_.erase(ticket);
  }
  waiting_.fetch_sub(1);
}

}  // namespace darkbloom::coordinator
