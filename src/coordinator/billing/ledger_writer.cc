#include "coordinator/billing/ledger_writer.h"

#include "base/log.h"

namespace darkbloom::coordinator {

net::awaitable<void> run_ledger_writer(Ledger& ledger, StoreWorker& worker, net::Clock& clock,
                                       std::chrono::milliseconds flush_interval,
                                       std::chrono::milliseconds release_interval, net::SharedFlag running) {
  auto flush = [&ledger] { return ledger.flush(); };
  auto release_one = [&ledger] { return ledger.release_next_idle(); };
  net::Timer timer(clock, co_await net::asio::this_coro::executor);
  auto last_release = clock.now();
  bool failing = false;
  while (running) {
    timer.expires_after(flush_interval);
    co_await timer.wait();
    if (!running) co_return;
    if (ledger.queued() == 0 && clock.now() - last_release <= release_interval) continue;
    const Status flushed = co_await worker.run(flush);
    if (!flushed && !failing) {
      log::error("billing: settlements are not being written ({}); retrying", flushed.error().message);
    } else if (flushed && failing) {
      log::info("billing: settlements are written again");
    }
    failing = !flushed;
    if (flushed && clock.now() - last_release > release_interval) {
      // After a flush the escrow holds exactly the allowance: idle ones go back, one at a time.
      last_release = clock.now();
      for (;;) {
        const Result<bool> released = co_await worker.run(release_one);
        if (!released) log::error("billing: {}", released.error().message);
        if (!released || !*released || !running) break;
      }
    }
  }
}

}  // namespace darkbloom::coordinator
