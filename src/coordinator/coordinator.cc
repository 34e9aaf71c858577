#include "coordinator/coordinator.h"

#include <fmt/format.h>

#include <filesystem>

#include "base/encoding.h"
#include "base/json.h"
#include "base/log.h"
#include "coordinator/api/completion_service.h"
#include "coordinator/provider_gateway.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

namespace bj = json::bj;
using http::awaitable;

bool admin_authorized(std::string_view header, const std::string& admin_token) {
  const std::string_view token = bearer_token(header);
  return !admin_token.empty() &&
         crypto::equal_constant_time(crypto::sha256(as_bytes(token)), crypto::sha256(as_bytes(admin_token)));
}

}  // namespace

Result<std::unique_ptr<Coordinator>> Coordinator::create(http::net::any_io_executor executor,
                                                         CoordinatorConfig config) {
  std::error_code error;
  std::filesystem::create_directories(config.data_dir, error);
  if (error)
    return make_error(Errc::io_error,
                      fmt::format("cannot create data directory {}: {}", config.data_dir, error.message()));
  auto store = open_sqlite_store((std::filesystem::path(config.data_dir) / "coordinator.db").string());
  if (!store) return store.error();
  return std::unique_ptr<Coordinator>(new Coordinator(executor, std::move(config), std::move(*store)));
}

Coordinator::Coordinator(http::net::any_io_executor executor, CoordinatorConfig config, std::unique_ptr<Store> store)
    : executor_(executor),
      config_(std::move(config)),
      store_(std::move(store)),
      keys_(*store_),
      router_(executor, registry_, RoutingOptions{config_.min_trust, config_.queue_depth, config_.queue_wait}) {
  gateway_ = std::make_unique<ProviderGateway>(executor, config_, registry_, router_);
  completions_ = std::make_unique<CompletionService>(executor, config_, keys_, router_, *gateway_);
  server_ = std::make_unique<http::Server>(executor, routes(), config_.limits);
}

Coordinator::~Coordinator() {
  stop();
}

Result<uint16_t> Coordinator::start() {
  auto port = server_->listen(config_.listen_host, config_.listen_port);
  if (!port) return port.error();
  gateway_->start();
  return port;
}

void Coordinator::stop() {
  if (server_) server_->stop();
  if (gateway_) gateway_->stop();
}

http::Router Coordinator::routes() {
  http::Router router;
  router.add(http::bhttp::verb::get, "/health", [this](http::Exchange& exchange) -> awaitable<void> {
    co_await exchange.respond_json(200, fmt::format(R"({{"status":"ok","providers":{},"queued":{}}})",
                                                    registry_.registered_count(), router_.queued_total()));
  });
  router.add(http::bhttp::verb::post, "/v1/chat/completions", [this](http::Exchange& exchange) {
    return completions_->handle(exchange, proto::Endpoint::chat_completions);
  });
  router.add(http::bhttp::verb::post, "/v1/completions",
             [this](http::Exchange& exchange) { return completions_->handle(exchange, proto::Endpoint::completions); });
  router.add(http::bhttp::verb::get, "/v1/models",
             [this](http::Exchange& exchange) { return handle_models(exchange); });
  router.add(http::bhttp::verb::post, "/v1/admin/keys",
             [this](http::Exchange& exchange) { return handle_admin_keys(exchange); });
  router.add(http::bhttp::verb::get, "/ws/provider",
             [this](http::Exchange& exchange) { return gateway_->handle(exchange); });
  return router;
}

std::string Coordinator::models_json() const {
  // Models served by at least one routable provider, with how many serve them and how.
  struct Summary {
    int providers = 0;
    int attested = 0;
    TrustLevel best_trust = TrustLevel::none;
    std::string quantization;
  };
  std::map<std::string, Summary> models;
  for (const auto& session : registry_.all()) {
    if (!session->registered || session->dropped || session->trust < config_.min_trust) continue;
    for (const auto& model : session->info.models) {
      Summary& summary = models[model.id];
      summary.providers += 1;
      if (session->trust != TrustLevel::none) summary.attested += 1;
      summary.best_trust = std::max(summary.best_trust, session->trust);
      summary.quantization = model.quantization;
    }
  }
  bj::array data;
  for (const auto& [id, summary] : models) {
    bj::object metadata;
    metadata["provider_count"] = summary.providers;
    metadata["attested_providers"] = summary.attested;
    metadata["trust_level"] = trust_level_name(summary.best_trust);
    metadata["quantization"] = summary.quantization;
    bj::object model;
    model["id"] = id;
    model["object"] = "model";
    model["created"] = 0;
    model["owned_by"] = "darkbloom";
    model["metadata"] = std::move(metadata);
    data.push_back(std::move(model));
  }
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  return bj::serialize(list);
}

awaitable<void> Coordinator::handle_models(http::Exchange& exchange) {
  auto account = keys_.authenticate(exchange.header("Authorization"));
  if (!account || !*account) {
    co_await exchange.respond_error(proto::authentication_error("Missing or unknown API key"));
    co_return;
  }
  co_await exchange.respond_json(200, models_json());
}

awaitable<void> Coordinator::handle_admin_keys(http::Exchange& exchange) {
  if (config_.admin_token.empty()) {
    co_await exchange.respond_error(
        proto::authentication_error("The admin API is disabled: set an admin token (DARKBLOOM_ADMIN_TOKEN)"));
    co_return;
  }
  if (!admin_authorized(exchange.header("Authorization"), config_.admin_token)) {
    co_await exchange.respond_error(proto::authentication_error("Missing or wrong admin token"));
    co_return;
  }
  std::string name = "account";
  if (!exchange.request().body().empty()) {
    auto body = json::parse(exchange.request().body(), "request body");
    if (!body || !body->is_object()) {
      co_await exchange.respond_error(proto::invalid_request("The request body must be a JSON object"));
      co_return;
    }
    json::ObjectReader reader(body->as_object(), "");
    if (auto given = reader.optional_string("name", 128)) name = *given;
    if (!reader.ok()) {
      co_await exchange.respond_error(proto::invalid_request(reader.error().message, reader.failed_field()));
      co_return;
    }
  }
  auto created = keys_.create_account_key(name);
  if (!created) {
    log::error("creating a key failed: {}", created.error().message);
    co_await exchange.respond_error(proto::server_error("Creating the key failed"));
    co_return;
  }
  bj::object answer;
  answer["api_key"] = created->api_key;
  answer["account_id"] = created->account_id;
  co_await exchange.respond_json(200, bj::serialize(answer));
}

}  // namespace darkbloom::coordinator
