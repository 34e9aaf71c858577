// darkbloom-coordinator's core, wired together: the store and ledger, API keys, the provider
// registry, router and gateway, the HTTP routes, and the server. Wiring only: what each part
// does lives in its own folder (docs/architecture.md). One network thread runs it all.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "attest/hardware_policy.h"
#include "base/metrics.h"
#include "base/random.h"
#include "coordinator/api/api_metrics.h"
#include "coordinator/config.h"
#include "coordinator/trust/model_proof.h"
#include "net/clock.h"
#include "net/offload.h"
#include "net/shared_flag.h"

namespace darkbloom::coordinator {

class Store;
class StoreWorker;
class Ledger;
class ApiKeys;
class RateLimiter;
class FailedAttempts;
class ProviderRegistry;
class Router;
class ProviderGateway;
class RequestDispatcher;
class CompletionHandler;
struct ApiContext;

class Coordinator {
 public:
  // Opens the store (PostgreSQL at database_url, else data_dir/coordinator.db), starts the ledger
  // (returning escrow a previous run left) and prepares the routes; nothing listens yet. `clock`
  // and `random` must outlive the coordinator.
  static Result<std::unique_ptr<Coordinator>> create(net::Executor executor, CoordinatorConfig config,
                                                     net::Clock& clock, RandomSource& random);
  ~Coordinator();

  // Binds and starts serving (TLS when config.tls_cert_file is set); returns the bound port.
  Result<uint16_t> start();
  // Every metric in the Prometheus text format (GET /metrics and the --metrics-listen server).
  std::string render_metrics() const { return metrics_.render(); }
  // Reads the TLS certificate and key again (SIGHUP). New connections use them; open ones keep
  // theirs. On an error the old certificate stays in use.
  Status reload_tls();
  // Stops accepting, closes client connections and provider sessions, writes the ledger.
  void stop();

 private:
  Coordinator(net::Executor executor, CoordinatorConfig config, net::Clock& clock, RandomSource& random,
              std::unique_ptr<Store> store, std::unique_ptr<Ledger> ledger);
  http::Router routes();
  void register_metrics();

  net::Executor executor_;
  CoordinatorConfig config_;
  net::Clock& clock_;
  RandomSource& random_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StoreWorker> store_worker_;  // stopped before the store and ledger go
  std::unique_ptr<net::Offload> offload_;      // joined in stop(): its jobs resume handlers
  std::unique_ptr<Ledger> ledger_;
  net::SharedFlag ledger_running_{false};
  std::set<std::string> releases_;                  // approved binary hashes, loaded from the store
  ModelCatalog catalog_;                            // the model catalogue, loaded from the store
  std::optional<attest::HardwarePolicy> hardware_;  // --tpm-ek-ca and --tpm-release-key, loaded
  std::unique_ptr<ApiKeys> keys_;
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<FailedAttempts> admin_failures_;
  std::unique_ptr<ProviderRegistry> registry_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<ProviderGateway> gateway_;
  std::unique_ptr<ApiContext> api_;
  std::unique_ptr<RequestDispatcher> dispatcher_;
  std::unique_ptr<CompletionHandler> completions_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<http::Server> metrics_server_;  // --metrics-listen
  ApiMetrics api_metrics_;
  metrics::Registry metrics_;
};

}  // namespace darkbloom::coordinator
