// GET /metrics for either program: the registry's text as a Prometheus scrape answer, and a small
// plain-HTTP server that answers only that (the --metrics-listen of both programs).
#pragma once

#include <memory>
#include <string>

#include "base/metrics.h"
#include "base/result.h"
#include "http/server.h"

namespace darkbloom::http {

awaitable<void> respond_metrics(Exchange& exchange, const metrics::Registry& registry);

// Listens on host:port (port 0 picks one, written to `*bound`); `registry` must outlive the server.
Result<std::unique_ptr<Server>> serve_metrics_only(asio::any_io_executor executor, const metrics::Registry& registry,
                                                   const std::string& host, uint16_t port, uint16_t* bound);

}  // namespace darkbloom::http
