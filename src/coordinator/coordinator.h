// darkbloom-coordinator's core: the OpenAI-compatible front door, API keys, the provider
// registry over WebSockets, routing and queueing, sealing to the chosen provider, and relay of
// sealed chunks back as Server-Sent Events. One network thread runs it all.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "coordinator/auth/api_keys.h"
#include "coordinator/registry/provider_registry.h"
#include "coordinator/routing/router.h"
#include "coordinator/store/store.h"
#include "http/server.h"

namespace darkbloom::coordinator {

struct CoordinatorConfig {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 8080;
  std::string data_dir = ".";
  std::string admin_token;  // empty = admin API disabled
  TrustLevel min_trust = TrustLevel::none;
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
  // Opens the store (data_dir/coordinator.db) and prepares the routes; nothing listens yet.
  static Result<std::unique_ptr<Coordinator>> create(http::net::any_io_executor executor, CoordinatorConfig config);
  ~Coordinator();

  // Binds and starts serving; returns the bound port.
  Result<uint16_t> start();
  // Stops accepting, closes client connections and provider sessions.
  void stop();

  ProviderRegistry& registry() { return registry_; }

 private:
  Coordinator(http::net::any_io_executor executor, CoordinatorConfig config, std::unique_ptr<Store> store);
  http::Router routes();
  http::awaitable<void> handle_admin_keys(http::Exchange& exchange);
  http::awaitable<void> handle_models(http::Exchange& exchange);
  std::string models_json() const;

  http::net::any_io_executor executor_;
  CoordinatorConfig config_;
  std::unique_ptr<Store> store_;
  ApiKeys keys_;
  ProviderRegistry registry_;
  Router router_;
  std::unique_ptr<CompletionService> completions_;
  std::unique_ptr<ProviderGateway> gateway_;
  std::unique_ptr<http::Server> server_;
};

}  // namespace darkbloom::coordinator
