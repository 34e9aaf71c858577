#include "coordinator/coordinator.h"

#include <fmt/format.h>

#include <filesystem>

#include "base/log.h"
#include "coordinator/api/api_context.h"
#include "coordinator/api/completion_handler.h"
#include "coordinator/api/http_replies.h"
#include "coordinator/api/request_dispatcher.h"
#include "coordinator/billing/ledger_writer.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/store/store_worker.h"
#include "http/metrics_endpoint.h"
#include "http/tls.h"

namespace darkbloom::coordinator {

using net::awaitable;

Result<std::unique_ptr<Coordinator>> Coordinator::create(net::Executor executor, CoordinatorConfig config,
                                                         net::Clock& clock, RandomSource& random) {
  std::error_code error;
  std::filesystem::create_directories(config.data_dir, error);
  if (error)
    return make_error(Errc::io_error,
                      fmt::format("cannot create data directory {}: {}", config.data_dir, error.message()));
  auto store = config.database_url.empty()
                   ? open_sqlite_store((std::filesystem::path(config.data_dir) / "coordinator.db").string())
                   : open_postgres_store(config.database_url);
  if (!store) return store.error();
  auto releases = (*store)->list_releases();
  if (!releases) return releases.error();
  auto catalog = (*store)->catalog_models();
  if (!catalog) return catalog.error();
  auto hardware = attest::load_hardware_policy(config.tpm_ek_ca, config.tpm_release_key);
  if (!hardware) return hardware.error();
  auto ledger = std::make_unique<Ledger>(**store, config.billing, clock, random);
  if (auto started = ledger->start(); !started) return started.error().with_context("starting the ledger");
  auto coordinator = std::unique_ptr<Coordinator>(
      new Coordinator(std::move(executor), std::move(config), clock, random, std::move(*store), std::move(ledger)));
  for (const auto& release : *releases) coordinator->releases_.insert(release.binary_hash);
  for (auto& model : *catalog) coordinator->catalog_.emplace(model.id, std::move(model));
  coordinator->hardware_ = std::move(*hardware);
  if (coordinator->hardware_) {
    log::info("hardware trust: EK certificates checked against {} CA certificates",
              coordinator->hardware_->ek_trust.size());
  }
  auto limits = coordinator->store_->account_limits();
  if (!limits) return limits.error();
  for (const AccountLimits& own : *limits) {
    coordinator->limiter_->set(own.account_id, RateLimits{own.requests_per_second, own.burst, own.max_concurrent});
  }
  if (!coordinator->releases_.empty()) {
    log::info("release allow-list: {} approved provider binaries", coordinator->releases_.size());
  }
  return coordinator;
}

Coordinator::Coordinator(net::Executor executor, CoordinatorConfig config, net::Clock& clock, RandomSource& random,
                         std::unique_ptr<Store> store, std::unique_ptr<Ledger> ledger)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      clock_(clock),
      random_(random),
      store_(std::move(store)),
      store_worker_(std::make_unique<StoreWorker>(clock_, StoreWorkerOptions{})),
      offload_(std::make_unique<net::Offload>(config_.offload_threads, config_.offload_max_waiting)),
      ledger_(std::move(ledger)) {
  keys_ = std::make_unique<ApiKeys>(*store_, clock_, random_);
  limiter_ = std::make_unique<RateLimiter>(clock_, config_.rate_limits);
  admin_failures_ = std::make_unique<FailedAttempts>(clock_, config_.max_admin_failures);
  registry_ = std::make_unique<ProviderRegistry>(clock_, random_);
  router_ = std::make_unique<Router>(executor_, clock_, random_, *registry_,
                                     RoutingOptions{config_.min_trust, config_.queue_depth, config_.queue_wait});
  gateway_ = std::make_unique<ProviderGateway>(
      ProviderGateway::Dependencies{executor_, config_, clock_, random_, *registry_, *router_, *store_, *store_worker_,
                                    *keys_, releases_, catalog_, hardware_});
  api_.reset(new ApiContext{config_, clock_, random_, *store_, *store_worker_, *offload_, *ledger_, *keys_, *limiter_,
                            *admin_failures_, *registry_, *router_, releases_, catalog_, api_metrics_});
  api_->catalog_changed = [this](const CatalogModel& model) { gateway_->catalog_changed(model); };
  dispatcher_ = std::make_unique<RequestDispatcher>(
      RequestDispatcher::Dependencies{executor_, config_, clock_, random_, *router_, *gateway_, *offload_});
  completions_ = std::make_unique<CompletionHandler>(*api_, *dispatcher_, *gateway_);
  server_ = std::make_unique<http::Server>(executor_, routes(), config_.limits);
  server_->set_header_check([this](const http::Request& request, const std::string& address) {
    return completions_->check_before_body(request, address);
  });
  server_->set_observer([this](std::string_view route, unsigned status) { api_metrics_.count_request(route, status); });
  register_metrics();
}

void Coordinator::register_metrics() {
  metrics::Registry& m = metrics_;
  m.counter("darkbloom_http_requests_total", "HTTP requests answered, by route and status class",
            api_metrics_.requests);
  for (size_t i = 0; i < ApiMetrics::kPhases.size(); ++i) {
    m.histogram("darkbloom_request_phase_seconds",
                "time of each X-Timing phase of the requests that reached a provider",
                {{"phase", ApiMetrics::kPhases[i]}}, api_metrics_.phases[i]);
  }
  m.histogram("darkbloom_time_to_first_token_seconds", "from a request's arrival to its first chunk", {},
              api_metrics_.time_to_first_token);
  m.counter("darkbloom_tokens_total", "tokens billed", {{"direction", "in"}}, api_metrics_.prompt_tokens);
  m.counter("darkbloom_tokens_total", "tokens billed", {{"direction", "out"}}, api_metrics_.completion_tokens);
  m.gauge("darkbloom_queue_depth", "requests waiting for a free provider", {},
          [this] { return static_cast<double>(router_->queued_total()); });
  for (const TrustLevel level : {TrustLevel::none, TrustLevel::self_signed, TrustLevel::hardware}) {
    m.gauge("darkbloom_providers", "registered providers by trust level", {{"trust_level", trust_level_name(level)}},
            [this, level] {
              size_t count = 0;
              for (const auto& session : registry_->all()) count += session->registered() && session->trust() == level;
              return static_cast<double>(count);
            });
  }
  m.gauge("darkbloom_providers_routable", "providers that receive requests now", {},
          [this] { return static_cast<double>(registry_->routable_count(config_.min_trust)); });
  m.counter("darkbloom_challenges_total", "attestation challenges by result", {{"result", "passed"}},
            gateway_->challenges_passed());
  m.counter("darkbloom_challenges_total", "attestation challenges by result", {{"result", "failed"}},
            gateway_->challenges_failed());
  const Ledger::Counters& ledger = ledger_->counters();
  m.counter("darkbloom_ledger_reservations_total", "requests whose worst case was set aside", {}, ledger.reservations);
  m.counter("darkbloom_ledger_refusals_total", "reservations refused for want of balance (402)", {}, ledger.refusals);
  m.counter("darkbloom_ledger_holds_total", "escrow holds written", {}, ledger.holds);
  m.counter("darkbloom_ledger_settlements_total", "requests charged", {}, ledger.settlements);
  m.counter("darkbloom_ledger_settled_micro_usd_total", "micro-USD charged to consumers", {}, ledger.settled_micro_usd);
  m.histogram("darkbloom_store_call_seconds", "time of each database call on the store worker", {},
              store_worker_->call_seconds());
  m.counter("darkbloom_store_errors_total", "database calls that failed", {}, store_worker_->errors());
  m.counter("darkbloom_store_refused_total", "database calls refused at once (worker full, stuck or stopping)", {},
            store_worker_->refused());
  // The worker may be released by stop() (a stuck database) but is never destroyed then.
  m.gauge("darkbloom_store_waiting", "database calls queued or running", {},
          [worker = store_worker_.get()] { return static_cast<double>(worker->waiting()); });
  m.gauge("darkbloom_open_connections", "HTTP connections and WebSocket sessions open", {},
          [this] { return static_cast<double>(server_->open_connections()); });
  m.counter("darkbloom_tls_handshake_failures_total", "TLS handshakes that failed or timed out", {},
            [this] { return static_cast<double>(server_->tls_handshake_failures()); });
}

Coordinator::~Coordinator() {
  stop();
}

http::Router Coordinator::routes() {
  http::Router routes;
  completions_->add_routes(routes);
  add_catalog_routes(routes, *api_);
  add_admin_routes(routes, *api_);
  add_billing_routes(routes, *api_);
  routes.add(http::bhttp::verb::get, std::string(proto::kProviderSocketPath),
             [this](http::Exchange& exchange) { return gateway_->handle(exchange); });
  routes.add(http::bhttp::verb::get, "/metrics", [this](http::Exchange& exchange) -> awaitable<void> {
    if (!co_await authorize_admin(exchange, config_.admin_token, *admin_failures_)) co_return;
    co_await http::respond_metrics(exchange, metrics_);
  });
  return routes;
}

Result<uint16_t> Coordinator::start() {
  if (!config_.tls_cert_file.empty()) {
    if (auto loaded = reload_tls(); !loaded) return loaded.error();
  }
  auto port = server_->listen(config_.listen_host, config_.listen_port);
  if (!port) return port.error();
  if (!config_.metrics_listen_host.empty()) {
    uint16_t metrics_port = 0;
    auto served = http::serve_metrics_only(executor_, metrics_, config_.metrics_listen_host,
                                           config_.metrics_listen_port, &metrics_port);
    if (!served) return served.error().with_context("--metrics-listen");
    metrics_server_ = std::move(*served);
    log::info("metrics at http://{}:{}/metrics", config_.metrics_listen_host, metrics_port);
  }
  gateway_->start();
  log::info("store: {}; billing as coordinator '{}'", store_->kind(), config_.billing.coordinator_id);
  ledger_running_.set(true);
  net::asio::co_spawn(executor_,
                      run_ledger_writer(*ledger_, *store_worker_, clock_, config_.ledger_flush_interval,
                                        config_.ledger_release_interval, ledger_running_),
                      net::asio::detached);
  return port;
}

Status Coordinator::reload_tls() {
  auto context = http::make_server_tls_context(config_.tls_cert_file, config_.tls_key_file);
  if (!context) return context.error();
  server_->set_tls(std::move(*context));
  log::info("TLS certificate {}: {}", config_.tls_cert_file, http::describe_certificate_file(config_.tls_cert_file));
  return {};
}

void Coordinator::stop() {
  if (metrics_server_) metrics_server_->stop();
  if (server_) server_->stop();
  if (offload_) offload_->stop();
  if (gateway_) gateway_->stop();
  if (store_worker_ && !store_worker_->stop()) {
    // A call is stuck in a database that stopped answering: joining would hang the shutdown.
    // The worker and the store are left to the process's end; the next start returns the escrow.
    log::error("store: the database is not answering; stopping without writing the ledger");
    (void)store_worker_.release();
    (void)store_.release();
    ledger_running_.set(false);
    return;
  }
  if (ledger_running_) {
    ledger_running_.set(false);
    // What is settled is written; allowances go back to their accounts.
    if (auto flushed = ledger_->release_idle(true); !flushed) {
      log::error("billing: writing the ledger at stop failed: {}", flushed.error().message);
    }
  }
}

}  // namespace darkbloom::coordinator
