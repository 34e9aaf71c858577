// What the network offers, for anyone to see: the models routable providers serve, the
// coordinator's health, and each routable provider's identity and challenge record.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <span>

#include "base/encoding.h"
#include "coordinator/api/api_context.h"
#include "coordinator/api/http_replies.h"
#include "crypto/p256.h"
#include "proto/coordinator_api.h"

namespace darkbloom::coordinator {
namespace {

using net::awaitable;

// Models served by at least one provider trusted enough, with how many serve them and how.
std::vector<proto::ModelSummary> model_summaries(const ProviderRegistry& registry, TrustLevel min_trust,
                                                 const ModelCatalog& catalog) {
  std::map<std::string, proto::ModelSummary> models;
  std::map<std::string, TrustLevel> best_trust;
  for (const auto& session : registry.all()) {
    if (!session->active() || session->trust() < min_trust) continue;
    for (const auto& model : session->info().models) {
      if (!session->proven(model.id)) continue;  // its file not proven yet
      proto::ModelSummary& summary = models[model.id];
      summary.id = model.id;
      summary.provider_count += 1;
      if (session->trust() != TrustLevel::none) summary.attested_providers += 1;
      TrustLevel& best = best_trust.try_emplace(model.id, TrustLevel::none).first->second;
      best = std::max(best, session->trust());
      summary.trust_level = trust_level_name(best);
      summary.quantization = model.quantization;
      if (const auto entry = catalog.find(model.id); entry != catalog.end()) {
        summary.merkle_root = entry->second.merkle_root;
        summary.size_bytes = entry->second.size_bytes;
      }
    }
  }
  std::vector<proto::ModelSummary> out;
  for (auto& [id, summary] : models) out.push_back(std::move(summary));
  return out;
}

proto::ProviderAttestation attestation_of(const ProviderSession& session) {
  const TrustState& trust = session.trust_state();
  proto::ProviderAttestation entry;
  entry.provider_id = session.id();
  entry.trust_level = trust_level_name(session.trust());
  entry.reason = trust.reason;
  for (const auto& model : session.info().models) entry.models.push_back(model.id);
  for (const auto& feature : session.info().features) {
    if (proto::feature_bits({feature}) != 0) entry.features.push_back(feature);  // known names only
  }
  entry.attested = !trust.public_key.empty();
  if (entry.attested) {
    entry.public_key = trust.document.public_key;
    entry.public_key_pem = crypto::p256_public_key_pem(trust.public_key);
    entry.key_backend = trust.document.key_backend;
    entry.degraded_reason = trust.document.degraded_reason;
    entry.binary_hash = trust.document.binary_hash;
    entry.attestation = trust.document_bytes;  // the exact signed bytes
    entry.signature = trust.signature;
    entry.hardware = trust.hardware_reason;
    if (!trust.ek_certificate.empty()) {
      entry.ek_certificate = base64_encode(trust.ek_certificate);
      entry.key_public = base64_encode(trust.key_public);
    }
  }
  entry.challenges_passed = trust.passed;
  entry.challenges_failed = trust.failed;
  entry.consecutive_failures = trust.consecutive_failures;
  entry.last_pass = trust.last_pass_at;
  return entry;
}

awaitable<void> handle_models(http::Exchange& exchange, ApiContext& context) {
  // A named result: GCC 12 mishandles a co_await's temporary inside a condition.
  const std::optional<std::string> account =
      co_await authenticate_consumer(exchange, context.keys, context.store_worker);
  if (!account) co_return;
  co_await exchange.respond_json(
      200, proto::encode_model_list(model_summaries(context.registry, context.config.min_trust, context.catalog)));
}

// The model's summary, or nullopt when no routable provider serves it.
std::optional<proto::ModelSummary> find_model(const ApiContext& context, const std::string& id) {
  for (auto& summary : model_summaries(context.registry, context.config.min_trust, context.catalog)) {
    if (summary.id == id) return summary;
  }
  return std::nullopt;
}

awaitable<void> handle_model(http::Exchange& exchange, ApiContext& context) {
  const std::optional<std::string> account =
      co_await authenticate_consumer(exchange, context.keys, context.store_worker);
  if (!account) co_return;
  const std::string id = http::percent_decode(exchange.path().substr(std::string_view("/v1/models/").size()));
  const std::optional<proto::ModelSummary> model = find_model(context, id);
  if (!model) {
    const proto::ApiError not_found = proto::model_not_found(id);
    co_await exchange.respond_error(not_found);
    co_return;
  }
  const std::string body = proto::encode_model(*model);
  co_await exchange.respond_json(200, body);
}

awaitable<void> handle_health(http::Exchange& exchange, ApiContext& context) {
  const proto::Health health{context.registry.registered_count(),
                             context.registry.routable_count(context.config.min_trust), context.router.queued_total()};
  co_await exchange.respond_json(200, proto::encode_health(health));
}

// The public provider listing: routable providers only, sorted by id, rebuilt at most once per
// kListingMaxAge however often it is read (a page of it is encoded per GET).
class AttestationListing {
 public:
  static constexpr auto kMaxAge = std::chrono::seconds(1);

  const std::vector<proto::ProviderAttestation>& entries(const ApiContext& context) {
    const auto now = context.clock.now();
    if (built_ && now - built_at_ < kMaxAge) return entries_;
    entries_.clear();
    for (const auto& session : context.registry.all()) {
      if (session->active() && session->routable(context.config.min_trust, now)) {
        entries_.push_back(attestation_of(*session));
      }
    }
    std::sort(entries_.begin(), entries_.end(),
              [](const auto& a, const auto& b) { return a.provider_id < b.provider_id; });
    built_ = true;
    built_at_ = now;
    return entries_;
  }

 private:
  std::vector<proto::ProviderAttestation> entries_;
  bool built_ = false;
  net::Clock::Time built_at_{};
};

constexpr int kDefaultListingPage = 100;
constexpr int kMaxListingPage = 200;

awaitable<void> handle_attestations(http::Exchange& exchange, ApiContext& context, AttestationListing& listing) {
  // Public on purpose: anyone holding a receipt can fetch the key to check it against.
  const std::optional<int> limit = limit_param(exchange.query(), kDefaultListingPage, kMaxListingPage);
  if (!limit) {
    co_await exchange.respond_error(
        proto::invalid_request(fmt::format("limit must be a number from 1 to {}", kMaxListingPage), "limit"));
    co_return;
  }
  const std::string after(query_value(exchange.query(), "after").value_or(""));
  const auto& entries = listing.entries(context);
  const auto first = std::upper_bound(entries.begin(), entries.end(), after,
                                      [](const std::string& id, const auto& entry) { return id < entry.provider_id; });
  const size_t available = static_cast<size_t>(entries.end() - first);
  const size_t count = std::min(available, static_cast<size_t>(*limit));
  const std::span<const proto::ProviderAttestation> shown(entries.data() + (first - entries.begin()), count);
  const std::string page = proto::encode_attestation_page(shown, available > count);
  co_await exchange.respond_json(200, page);
}

}  // namespace

void add_catalog_routes(http::Router& routes, ApiContext& context) {
  using http::bhttp::verb;
  routes.add(verb::get, "/v1/models", [&context](http::Exchange& e) { return handle_models(e, context); });
  routes.add_prefix(verb::get, "/v1/models/", [&context](http::Exchange& e) { return handle_model(e, context); });
  routes.add(verb::get, "/health", [&context](http::Exchange& e) { return handle_health(e, context); });
  auto listing = std::make_shared<AttestationListing>();
  routes.add(verb::get, "/v1/providers/attestation",
             [&context, listing](http::Exchange& e) { return handle_attestations(e, context, *listing); });
}

}  // namespace darkbloom::coordinator
