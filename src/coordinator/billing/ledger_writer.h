// The ledger's background duty, timed on the network thread and written on the StoreWorker: write
// queued settlements every flush interval (group commits), and return idle allowances every
// release interval, until `running` turns false. A database outage is logged when it starts and
// when it ends, not at every retry; settlements stay queued meanwhile and are written on recovery.
#pragma once

#include <chrono>

#include "coordinator/billing/ledger.h"
#include "coordinator/store/store_worker.h"
#include "net/clock.h"
#include "net/shared_flag.h"

namespace darkbloom::coordinator {

net::awaitable<void> run_ledger_writer(Ledger& ledger, StoreWorker& worker, net::Clock& clock,
                                       std::chrono::milliseconds flush_interval,
                                       std::chrono::milliseconds release_interval, net::SharedFlag running);

}  // namespace darkbloom::coordinator
