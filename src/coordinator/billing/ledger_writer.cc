#include "coordinator/billing/ledger_writer.h"

#include "base/log.h"

namespace darkbloom::coordinator {

net::awaitable<void> run_ledger_writer(Ledger& ledger, net::Clock& clock, std::chrono::milliseconds flush_interval,
                                       std::chrono::milliseconds release_interval, net::SharedFlag running) {
  net::Timer timer(clock, co_await net::asio::this_coro::executor);
  auto last_release = clock.now();
  bool failing = false;
  while (running) {
    timer.expires_after(flush_interval);
    co_await timer.wait();
    if (!running) co_return;
    auto flushed = ledger.flush();
    if (!flushed && !failing) {
      log::error("billing: settlements are not being written ({}); retrying", flushed.error().message);
    } else if (flushed && failing) {
      log::info("billing: settlements are written again");
    }
    failing = !flushed;
    if (clock.now() - last_release > release_interval) {
      last_release = clock.now();
      if (auto released = ledger.release_idle(); !released) log::error("billing: {}", released.error().message);
    }
  }
}

}  // namespace darkbloom::coordinator
