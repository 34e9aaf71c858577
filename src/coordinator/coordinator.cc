#include "coordinator/coordinator.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "base/encoding.h"
#include "base/json.h"
#include "base/log.h"
#include "coordinator/api/completion_service.h"
#include "coordinator/provider_gateway.h"
#include "crypto/hash.h"
#include "crypto/p256.h"

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
  auto store = config.database_url.empty()
                   ? open_sqlite_store((std::filesystem::path(config.data_dir) / "coordinator.db").string())
                   : open_postgres_store(config.database_url);
  if (!store) return store.error();
  auto releases = (*store)->list_releases();
  if (!releases) return releases.error();
  auto ledger = std::make_unique<Ledger>(**store, config.billing);
  if (auto started = ledger->start(); !started) return started.error().with_context("starting the ledger");
  auto coordinator =
      std::unique_ptr<Coordinator>(new Coordinator(executor, std::move(config), std::move(*store), std::move(ledger)));
  for (const auto& release : *releases) coordinator->releases_.insert(release.binary_hash);
  if (!coordinator->releases_.empty()) {
    log::info("release allow-list: {} approved provider binaries", coordinator->releases_.size());
  }
  return coordinator;
}

Coordinator::Coordinator(http::net::any_io_executor executor, CoordinatorConfig config, std::unique_ptr<Store> store,
                         std::unique_ptr<Ledger> ledger)
    : executor_(executor),
      config_(std::move(config)),
      store_(std::move(store)),
      ledger_(std::move(ledger)),
      keys_(*store_),
      router_(executor, registry_, RoutingOptions{config_.min_trust, config_.queue_depth, config_.queue_wait}) {
  gateway_ = std::make_unique<ProviderGateway>(executor, config_, registry_, router_, *store_, releases_);
  completions_ = std::make_unique<CompletionService>(executor, config_, keys_, router_, *gateway_, *ledger_);
  server_ = std::make_unique<http::Server>(executor, routes(), config_.limits);
}

Coordinator::~Coordinator() {
  stop();
}

Result<uint16_t> Coordinator::start() {
  auto port = server_->listen(config_.listen_host, config_.listen_port);
  if (!port) return port.error();
  gateway_->start();
  log::info("store: {}; billing as coordinator '{}'", store_->kind(), config_.billing.coordinator_id);
  *ledger_running_ = true;
  http::net::co_spawn(executor_, run_ledger(), http::net::detached);
  return port;
}

void Coordinator::stop() {
  if (server_) server_->stop();
  if (gateway_) gateway_->stop();
  if (*ledger_running_) {
    *ledger_running_ = false;
    // What is settled is written; allowances go back to their accounts.
    if (auto flushed = ledger_->release_idle(true); !flushed) {
      log::error("billing: writing the ledger at stop failed: {}", flushed.error().message);
    }
  }
}

awaitable<void> Coordinator::run_ledger() {
  auto running = ledger_running_;
  http::net::steady_timer timer(executor_);
  auto last_release = std::chrono::steady_clock::now();
  bool failing = false;  // an outage is logged when it starts and ends, not every 10 ms
  while (*running) {
    timer.expires_after(config_.ledger_flush_interval);
    co_await timer.async_wait(http::as_tuple_awaitable);
    if (!*running) co_return;
    auto flushed = ledger_->flush();
    if (!flushed && !failing) {
      log::error("billing: settlements are not being written ({}); retrying", flushed.error().message);
    } else if (flushed && failing) {
      log::info("billing: settlements are written again");
    }
    failing = !flushed;
    if (std::chrono::steady_clock::now() - last_release > std::chrono::seconds(5)) {
      last_release = std::chrono::steady_clock::now();
      if (auto released = ledger_->release_idle(); !released) log::error("billing: {}", released.error().message);
    }
  }
}

http::Router Coordinator::routes() {
  http::Router router;
  router.add(http::bhttp::verb::get, "/health", [this](http::Exchange& exchange) -> awaitable<void> {
    size_t routable = 0;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& session : registry_.all()) {
      routable += session->registered && !session->dropped && session->routable(config_.min_trust, now) ? 1 : 0;
    }
    co_await exchange.respond_json(200, fmt::format(R"({{"status":"ok","providers":{},"routable":{},"queued":{}}})",
                                                    registry_.registered_count(), routable, router_.queued_total()));
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
  router.add(http::bhttp::verb::post, "/v1/admin/credit",
             [this](http::Exchange& exchange) { return handle_admin_credit(exchange); });
  router.add(http::bhttp::verb::put, "/v1/admin/pricing",
             [this](http::Exchange& exchange) { return handle_admin_pricing(exchange); });
  router.add(http::bhttp::verb::get, "/v1/admin/pricing",
             [this](http::Exchange& exchange) { return handle_admin_pricing(exchange); });
  router.add(http::bhttp::verb::post, "/v1/admin/referrals",
             [this](http::Exchange& exchange) { return handle_admin_referrals(exchange); });
  router.add(http::bhttp::verb::get, "/v1/balance",
             [this](http::Exchange& exchange) { return handle_balance(exchange); });
  router.add(http::bhttp::verb::get, "/v1/usage", [this](http::Exchange& exchange) { return handle_usage(exchange); });
  router.add(http::bhttp::verb::post, "/v1/admin/releases",
             [this](http::Exchange& exchange) { return handle_admin_releases(exchange); });
  router.add(http::bhttp::verb::get, "/v1/admin/releases",
             [this](http::Exchange& exchange) { return handle_admin_releases(exchange); });
  router.add(http::bhttp::verb::get, "/v1/providers/attestation",
             [this](http::Exchange& exchange) { return handle_attestations(exchange); });
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
  // A named result: GCC 12 mishandles a co_await's temporary inside a condition.
  const std::optional<std::string> account = co_await consumer_account(exchange);
  if (!account) co_return;
  co_await exchange.respond_json(200, models_json());
}

awaitable<std::optional<std::string>> Coordinator::consumer_account(http::Exchange& exchange) {
  auto account = keys_.authenticate(exchange.header("Authorization"));
  if (!account) {
    log::error("key lookup failed: {}", account.error().message);
    co_await exchange.respond_error(proto::server_error("Key lookup failed"));
    co_return std::nullopt;
  }
  if (!*account) {
    co_await exchange.respond_error(proto::authentication_error("Missing or unknown API key"));
    co_return std::nullopt;
  }
  co_return std::move(*account);
}

awaitable<bool> Coordinator::check_admin(http::Exchange& exchange) {
  if (config_.admin_token.empty()) {
    co_await exchange.respond_error(
        proto::authentication_error("The admin API is disabled: set an admin token (DARKBLOOM_ADMIN_TOKEN)"));
    co_return false;
  }
  if (!admin_authorized(exchange.header("Authorization"), config_.admin_token)) {
    co_await exchange.respond_error(proto::authentication_error("Missing or wrong admin token"));
    co_return false;
  }
  co_return true;
}

awaitable<void> Coordinator::handle_admin_keys(http::Exchange& exchange) {
  if (!co_await check_admin(exchange)) co_return;
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

namespace darkbloom::coordinator {
namespace {

std::string releases_json(const std::vector<ReleaseRecord>& releases) {
  bj::array data;
  for (const auto& release : releases) {
    bj::object entry;
    entry["binary_hash"] = release.binary_hash;
    entry["version"] = release.version;
    entry["note"] = release.note;
    entry["created_at"] = release.created_at;
    data.push_back(std::move(entry));
  }
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  return bj::serialize(list);
}

bool is_sha256_hex(std::string_view text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bj::object attestation_entry(const ProviderSession& session) {
  const TrustState& trust = session.trust_state;
  bj::object entry;
  entry["provider_id"] = session.id;
  entry["trust_level"] = trust_level_name(session.trust);
  entry["reason"] = trust.reason;
  bj::array models;
  for (const auto& model : session.info.models) models.push_back(bj::value(model.id));
  entry["models"] = std::move(models);
  if (!trust.public_key.empty()) {
    entry["public_key"] = trust.document.public_key;
    entry["public_key_pem"] = crypto::p256_public_key_pem(trust.public_key);
    entry["key_backend"] = trust.document.key_backend;
    if (!trust.document.degraded_reason.empty()) entry["degraded_reason"] = trust.document.degraded_reason;
    if (!trust.document.binary_hash.empty()) entry["binary_hash"] = trust.document.binary_hash;
    entry["attestation"] = trust.document_bytes;  // the exact signed bytes
    entry["signature"] = trust.signature;
  }
  bj::object challenges;
  challenges["passed"] = trust.passed;
  challenges["failed"] = trust.failed;
  challenges["consecutive_failures"] = trust.consecutive_failures;
  if (!trust.last_pass_at.empty()) challenges["last_pass"] = trust.last_pass_at;
  entry["challenges"] = std::move(challenges);
  return entry;
}

}  // namespace

awaitable<void> Coordinator::handle_admin_releases(http::Exchange& exchange) {
  if (!co_await check_admin(exchange)) co_return;
  if (exchange.request().method() == http::bhttp::verb::post) {
    auto body = json::parse(exchange.request().body(), "request body");
    if (!body || !body->is_object()) {
      co_await exchange.respond_error(proto::invalid_request("The request body must be a JSON object"));
      co_return;
    }
    json::ObjectReader reader(body->as_object(), "");
    ReleaseRecord release;
    release.binary_hash = reader.string("binary_hash", 64);
    release.version = reader.optional_string("version", 64).value_or("");
    release.note = reader.optional_string("note", 1024).value_or("");
    if (!reader.ok()) {
      co_await exchange.respond_error(proto::invalid_request(reader.error().message, reader.failed_field()));
      co_return;
    }
    if (!is_sha256_hex(release.binary_hash)) {
      co_await exchange.respond_error(
          proto::invalid_request("binary_hash must be 64 lowercase hex digits (SHA-256)", "binary_hash"));
      co_return;
    }
    release.created_at =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (auto added = store_->add_release(release); !added) {
      log::error("adding a release failed: {}", added.error().message);
      co_await exchange.respond_error(proto::server_error("Adding the release failed"));
      co_return;
    }
    if (releases_.empty()) {
      log::warn("release allow-list now active: providers running other binaries lose trust at their next challenge");
    }
    releases_.insert(release.binary_hash);
    log::info("release approved: {} {}", release.binary_hash, release.version);
  }
  auto releases = store_->list_releases();
  if (!releases) {
    co_await exchange.respond_error(proto::server_error("Reading the releases failed"));
    co_return;
  }
  co_await exchange.respond_json(200, releases_json(*releases));
}

awaitable<void> Coordinator::handle_attestations(http::Exchange& exchange) {
  // Public on purpose: anyone holding a receipt can fetch the key to check it against.
  bj::array data;
  for (const auto& session : registry_.all()) {
    if (session->registered && !session->dropped) data.push_back(attestation_entry(*session));
  }
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  co_await exchange.respond_json(200, bj::serialize(list));
}

}  // namespace darkbloom::coordinator
