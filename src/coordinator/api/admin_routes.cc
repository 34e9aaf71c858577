// The operator's routes, behind the admin token: new accounts with their first API key, the
// release allow-list of provider binaries and the model catalogue (models by Merkle root).
#include <algorithm>

#include "base/log.h"
#include "base/time.h"
#include "coordinator/api/api_context.h"
#include "coordinator/api/http_replies.h"
#include "proto/coordinator_api.h"
#include "proto/provider_messages.h"

namespace darkbloom::coordinator {
namespace {

using net::awaitable;

constexpr size_t kMaxAccountName = 128;
constexpr size_t kMaxVersion = 64;
constexpr size_t kMaxReleaseNote = 1024;

bool is_sha256_hex(std::string_view text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string read_account_name(json::ObjectReader& reader) {
  return reader.optional_string("name", kMaxAccountName).value_or("account");
}

ReleaseRecord read_release(json::ObjectReader& reader) {
  ReleaseRecord release;
  release.binary_hash = reader.string("binary_hash", 64);
  release.version = reader.optional_string("version", kMaxVersion).value_or("");
  release.note = reader.optional_string("note", kMaxReleaseNote).value_or("");
  return release;
}

CatalogModel read_catalog_model(json::ObjectReader& reader) {
  CatalogModel model;
  model.id = reader.string("id", proto::kMaxModelIdBytes);
  model.merkle_root = reader.string("merkle_root", 64);
  // The bound a provider's register takes; never 0 (the empty file's root is known to everyone).
  model.size_bytes = static_cast<uint64_t>(reader.integer("size_bytes", 1, int64_t{1} << 50));
  return model;
}

// Built outside the coroutine: GCC 12 mishandles brace-initialised temporaries inside them.
std::vector<proto::CatalogEntry> catalog_entries(const std::vector<CatalogModel>& models) {
  std::vector<proto::CatalogEntry> entries;
  for (const auto& m : models) entries.push_back({m.id, m.merkle_root, m.size_bytes, m.created_at});
  return entries;
}

std::vector<proto::Release> release_list(const std::vector<ReleaseRecord>& records) {
  std::vector<proto::Release> releases;
  for (const auto& r : records) releases.push_back({r.binary_hash, r.version, r.note, r.created_at});
  return releases;
}

// {"name"?}: a new account and its first key, shown this once.
awaitable<void> handle_admin_keys(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  std::string name = "account";
  if (!exchange.request().body().empty()) {
    proto::ApiError error;
    auto given = read_body(exchange, read_account_name, &error);
    if (!given) {
      co_await exchange.respond_error(error);
      co_return;
    }
    name = std::move(*given);
  }
  auto make_key = [&context, &name] { return context.keys.make_account_key(name); };
  auto created = co_await context.store_worker.run(make_key);
  if (!created) {
    if (created.error().code == Errc::unavailable) {
      co_await respond_store_failure(exchange, created.error());
      co_return;
    }
    log::error("creating a key failed: {}", created.error().message);
    co_await exchange.respond_error(proto::server_error("Creating the key failed"));
    co_return;
  }
  context.keys.remember(*created);
  // Encoded before the co_await: GCC 12 destroys a braced temporary inside a co_await
  // expression twice (a double free).
  const std::string answer = proto::encode_created_key({created->api_key, created->account_id});
  co_await exchange.respond_json(200, answer);
}

// Adds a release; the answer is the whole list either way. nullopt after answering an error.
awaitable<bool> add_release(http::Exchange& exchange, ApiContext& context) {
  proto::ApiError error;
  auto release = read_body(exchange, read_release, &error);
  if (release && !is_sha256_hex(release->binary_hash)) {
    error = proto::invalid_request("binary_hash must be 64 lowercase hex digits (SHA-256)", "binary_hash");
    release.reset();
  }
  if (!release) {
    co_await exchange.respond_error(error);
    co_return false;
  }
  release->created_at = unix_seconds(context.clock.wall_now());
  auto store_release = [&context, &release] { return context.store.add_release(*release); };
  if (const Status added = co_await context.store_worker.run(store_release); !added) {
    log::error("adding a release failed: {}", added.error().message);
    co_await respond_store_failure(exchange, added.error());
    co_return false;
  }
  if (context.releases.empty()) {
    log::warn("release allow-list now active: providers running other binaries lose trust at their next challenge");
  }
  context.releases.insert(release->binary_hash);
  log::info("release approved: {} {}", release->binary_hash, release->version);
  co_return true;
}

// POST {"binary_hash", "version"?, "note"?} approves a binary; GET lists the approved ones.
awaitable<void> handle_admin_releases(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  if (exchange.request().method() == http::bhttp::verb::post) {
    const bool added = co_await add_release(exchange, context);
    if (!added) co_return;
  }
  auto read_releases = [&context] { return context.store.list_releases(); };
  auto releases = co_await context.store_worker.run(read_releases);
  if (!releases) {
    co_await respond_store_failure(exchange, releases.error());
    co_return;
  }
  co_await exchange.respond_json(200, proto::encode_release_list(release_list(*releases)));
}

// Adds or replaces a catalogue entry. False after answering an error.
awaitable<bool> set_catalog_model(http::Exchange& exchange, ApiContext& context) {
  proto::ApiError error;
  auto model = read_body(exchange, read_catalog_model, &error);
  if (model && model->id.empty()) {
    error = proto::invalid_request("id must not be empty", "id");
    model.reset();
  } else if (model && !is_sha256_hex(model->merkle_root)) {
    error = proto::invalid_request(
        "merkle_root must be 64 lowercase hex digits (the root `darkbloom models hash` prints)", "merkle_root");
    model.reset();
  }
  if (!model) {
    co_await exchange.respond_error(error);
    co_return false;
  }
  model->created_at = unix_seconds(context.clock.wall_now());
  auto store_model = [&context, &model] { return context.store.set_catalog_model(*model); };
  if (const Status stored = co_await context.store_worker.run(store_model); !stored) {
    log::error("setting a catalogue model failed: {}", stored.error().message);
    co_await respond_store_failure(exchange, stored.error());
    co_return false;
  }
  // New registrations are held to it from now, and connected providers at once (catalog_changed).
  log::info("model catalogued: {} (merkle root {}, {} bytes)", model->id, model->merkle_root, model->size_bytes);
  context.catalog.insert_or_assign(model->id, *model);
  if (context.catalog_changed) context.catalog_changed(*model);
  co_return true;
}

// POST {"id", "merkle_root", "size_bytes"} catalogues a model (replacing its entry); GET lists them.
awaitable<void> handle_admin_models(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  if (exchange.request().method() == http::bhttp::verb::post) {
    const bool set = co_await set_catalog_model(exchange, context);
    if (!set) co_return;
  }
  auto read_models = [&context] { return context.store.catalog_models(); };
  auto models = co_await context.store_worker.run(read_models);
  if (!models) {
    co_await respond_store_failure(exchange, models.error());
    co_return;
  }
  co_await exchange.respond_json(200, proto::encode_catalog(catalog_entries(*models)));
}

}  // namespace

void add_admin_routes(http::Router& routes, ApiContext& context) {
  using http::bhttp::verb;
  auto keys = [&context](http::Exchange& e) { return handle_admin_keys(e, context); };
  auto releases = [&context](http::Exchange& e) { return handle_admin_releases(e, context); };
  routes.add(verb::post, "/v1/admin/keys", keys);
  routes.add(verb::post, "/v1/admin/releases", releases);
  routes.add(verb::get, "/v1/admin/releases", releases);
  auto models = [&context](http::Exchange& e) { return handle_admin_models(e, context); };
  routes.add(verb::post, "/v1/admin/models", models);
  routes.add(verb::get, "/v1/admin/models", models);
}

}  // namespace darkbloom::coordinator
