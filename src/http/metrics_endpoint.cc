#include "http/metrics_endpoint.h"

namespace darkbloom::http {

awaitable<void> respond_metrics(Exchange& exchange, const metrics::Registry& registry) {
  Response response{bhttp::status::ok, exchange.request().version()};
  response.set(bhttp::field::content_type, metrics::kContentType);
  response.body() = registry.render();
  response.prepare_payload();
  co_await exchange.respond(std::move(response));
}

Result<std::unique_ptr<Server>> serve_metrics_only(asio::any_io_executor executor, const metrics::Registry& registry,
                                                   const std::string& host, uint16_t port, uint16_t* bound) {
  Router routes;
  routes.add(bhttp::verb::get, "/metrics",
             [&registry](Exchange& exchange) { return respond_metrics(exchange, registry); });
  ServerLimits limits;
  limits.max_connections = 64;  // scrapers, not clients
  auto server = std::make_unique<Server>(std::move(executor), std::move(routes), limits);
  auto listening = server->listen(host, port);
  if (!listening) return listening.error();
  *bound = *listening;
  return server;
}

}  // namespace darkbloom::http
