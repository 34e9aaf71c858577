// darkbloom-coordinator's core: the OpenAI-compatible front door, API keys, the provider
// registry over WebSockets, routing and queueing, sealing to the chosen provider, and relay of
// sealed chunks back as Server-Sent Events. One network thread runs it all.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "coordinator/auth/api_keys.h"
#include "coordinator/billing/ledger.h"
#include "coordinator/registry/provider_registry.h"
#include "coordinator/routing/router.h"
#include "coordinator/store/store.h"
#include "http/server.h"

namespace darkbloom::coordinator {

struct CoordinatorConfig {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 8080;
  std::string data_dir = ".";
  std::string admin_token;   // empty = admin API disabled
  std::string database_url;  // PostgreSQL; empty = SQLite in data_dir
  BillingOptions billing;
  std::chrono::milliseconds ledger_flush_interval{10};  // group commit period of settlements
  TrustLevel min_trust = TrustLevel::self_signed;
  std::chrono::milliseconds challenge_interval{300000};  // between challenges to each provider
  std::chrono::milliseconds challenge_timeout{30000};    // to answer one
  // A provider is routable above `none` until this long after its last passed challenge beyond
  // the interval (5 min + 60 s = the 6 minutes of SPEC §4).
  std::chrono::milliseconds challenge_grace{60000};
  std::chrono::seconds attestation_max_skew{300};  // allowed distance of a document's timestamp
  size_t queue_depth = 10;
  std::chrono::milliseconds queue_wait{120000};
  int max_attempts = 3;
  std::chrono::milliseconds first_chunk_timeout{10000};
  std::chrono::milliseconds heartbeat_timeout{90000};  // a provider silent this long is evicted
  std::chrono::milliseconds eviction_interval{30000};
  std::chrono::milliseconds inference_timeout{600000};  // longest silence between chunks once streaming
  int default_max_tokens = 8192;                        // bound injected when a request has none
  size_t max_providers = 4096;                          // WebSocket sessions at once
  http::ServerLimits limits;
};

class CompletionService;
class ProviderGateway;

class Coordinator {
 public:
  // Opens the store (PostgreSQL at database_url, else data_dir/coordinator.db), starts the ledger
  // (returning escrow a previous run left) and prepares the routes; nothing listens yet.
  static Result<std::unique_ptr<Coordinator>> create(http::net::any_io_executor executor, CoordinatorConfig config);
  ~Coordinator();

  // Binds and starts serving; returns the bound port.
  Result<uint16_t> start();
  // Stops accepting, closes client connections and provider sessions.
  void stop();

  ProviderRegistry& registry() { return registry_; }

 private:
  Coordinator(http::net::any_io_executor executor, CoordinatorConfig config, std::unique_ptr<Store> store,
              std::unique_ptr<Ledger> ledger);
  http::Router routes();
  http::awaitable<void> handle_admin_keys(http::Exchange& exchange);
  http::awaitable<void> handle_admin_credit(http::Exchange& exchange);
  http::awaitable<void> handle_admin_pricing(http::Exchange& exchange);
  http::awaitable<void> handle_admin_referrals(http::Exchange& exchange);
  http::awaitable<void> handle_balance(http::Exchange& exchange);
  http::awaitable<void> handle_usage(http::Exchange& exchange);
  // Group commits of settlements, and idle allowances returned, on the network thread.
  http::awaitable<void> run_ledger();
  http::awaitable<void> handle_models(http::Exchange& exchange);
  http::awaitable<void> handle_admin_releases(http::Exchange& exchange);
  http::awaitable<void> handle_attestations(http::Exchange& exchange);
  // Answers 401 and returns false unless the request carries the admin token.
  http::awaitable<bool> check_admin(http::Exchange& exchange);
  // The account of the request's API key; otherwise answers (401, or 500 if the lookup failed)
  // and returns nullopt.
  http::awaitable<std::optional<std::string>> consumer_account(http::Exchange& exchange);
  std::string models_json() const;

  http::net::any_io_executor executor_;
  CoordinatorConfig config_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  std::shared_ptr<bool> ledger_running_ = std::make_shared<bool>(false);
  std::set<std::string> releases_;  // approved binary hashes, loaded from the store
  ApiKeys keys_;
  ProviderRegistry registry_;
  Router router_;
  std::unique_ptr<CompletionService> completions_;
  std::unique_ptr<ProviderGateway> gateway_;
  std::unique_ptr<http::Server> server_;
};

}  // namespace darkbloom::coordinator
