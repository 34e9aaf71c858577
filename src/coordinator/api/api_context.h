// What the coordinator's HTTP handlers work with, handed to each group of routes by
// coordinator.cc. The handlers own nothing; the Coordinator owns all of it.
#pragma once

#include <functional>
#include <set>
#include <string>

#include "base/random.h"
#include "coordinator/api/api_metrics.h"
#include "coordinator/auth/api_keys.h"
#include "coordinator/auth/failed_attempts.h"
#include "coordinator/auth/rate_limiter.h"
#include "coordinator/billing/ledger.h"
#include "coordinator/config.h"
#include "coordinator/registry/provider_registry.h"
#include "coordinator/routing/router.h"
#include "coordinator/store/store.h"
#include "coordinator/store/store_worker.h"
#include "coordinator/trust/model_proof.h"
#include "http/server.h"
#include "net/clock.h"
#include "net/offload.h"

namespace darkbloom::coordinator {

struct ApiContext {
  const CoordinatorConfig& config;
  net::Clock& clock;
  RandomSource& random;
  Store& store;
  StoreWorker& store_worker;  // every store call from a handler goes through it
  net::Offload& offload;      // parsing and sealing of large bodies (kOffloadBodyBytes and up)
  Ledger& ledger;
  ApiKeys& keys;
  RateLimiter& limiter;
  FailedAttempts& admin_failures;  // failed admin-token attempts per address
  ProviderRegistry& registry;
  Router& router;
  std::set<std::string>& releases;  // approved binary hashes, as loaded from the store
  ModelCatalog& catalog;            // the model catalogue, as loaded from the store
  ApiMetrics& metrics;
  // Told of each catalogue change (the gateway re-judges connected providers); may be empty.
  std::function<void(const CatalogModel&)> catalog_changed = {};
};

// GET /v1/models, /health, /v1/providers/attestation.
void add_catalog_routes(http::Router& routes, ApiContext& context);
// POST /v1/admin/keys, GET|POST /v1/admin/releases, GET|POST /v1/admin/models.
void add_admin_routes(http::Router& routes, ApiContext& context);
// POST /v1/admin/credit, GET|PUT /v1/admin/pricing, POST /v1/admin/referrals, PUT /v1/admin/limits,
// GET /v1/balance, GET /v1/usage.
void add_billing_routes(http::Router& routes, ApiContext& context);

}  // namespace darkbloom::coordinator
