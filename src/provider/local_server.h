// `darkbloom serve`: the engine alone behind the OpenAI API on a local port, with no coordinator
// and no sealing. POST /v1/chat/completions, POST /v1/completions (streaming and not),
// GET /v1/models, GET /health.
#pragma once

#include <string>

#include "engine/engine.h"
#include "http/server.h"

namespace darkbloom::provider {

class LocalServer {
 public:
  LocalServer(http::net::any_io_executor executor, engine::Engine& engine, std::string model_id,
              http::ServerLimits limits = {});

  Result<uint16_t> listen(const std::string& host, uint16_t port) { return server_.listen(host, port); }
  void stop() { server_.stop(); }

 private:
  http::Router routes();
  http::awaitable<void> handle_completion(http::Exchange& exchange, proto::Endpoint endpoint);
  http::awaitable<void> handle_models(http::Exchange& exchange);
  std::string models_json() const;

  http::net::any_io_executor executor_;
  engine::Engine& engine_;
  std::string model_id_;
  int64_t created_;
  http::Server server_;
};

}  // namespace darkbloom::provider
