// The JSON bodies of the coordinator's own endpoints (beyond the OpenAI completions):
// /v1/models with Darkbloom's metadata, /health, /v1/providers/attestation, the admin routes and
// a consumer's balance and usage. Plain structs in, JSON text out; each field name is written here
// once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace darkbloom::proto {

struct ModelSummary {
  std::string id;
  int provider_count = 0;
  int attested_providers = 0;
  std::string trust_level;  // the best among its providers
  std::string quantization;
  // From the admin catalogue, when the model is in it (metadata.merkle_root, metadata.size_bytes):
  // every provider listed serves exactly that file.
  std::string merkle_root;
  uint64_t size_bytes = 0;
};
std::string encode_model_list(const std::vector<ModelSummary>& models);
// One model object, as GET /v1/models/{id} answers.
std::string encode_model(const ModelSummary& model);

struct Health {
  size_t providers = 0;
  size_t routable = 0;
  size_t queued = 0;
};
std::string encode_health(const Health& health);

// One provider's identity and challenge record, public so that anyone can check a receipt.
struct ProviderAttestation {
  std::string provider_id;
  std::string trust_level;
  std::string reason;
  std::vector<std::string> models;
  std::vector<std::string> features;  // what it serves beyond plain text (proto::kFeature* names)
  bool attested = false;              // the fields below up to `signature` are present only when attested
  std::string public_key;
  std::string public_key_pem;
  std::string key_backend;
  std::string degraded_reason;  // omitted when empty
  std::string binary_hash;      // omitted when empty
  std::string attestation;      // the exact signed document bytes
  std::string signature;
  // The hardware level, when TPM evidence came: where it stands ("proven (...)" or "not proven:
  // why"), the EK certificate (DER) and the key's TPMT_PUBLIC, both base64, so anyone can check
  // the chain and the public area themselves. All omitted without evidence.
  std::string hardware;
  std::string ek_certificate;
  std::string key_public;
  uint64_t challenges_passed = 0;
  uint64_t challenges_failed = 0;
  int consecutive_failures = 0;
  std::string last_pass;  // RFC 3339; omitted when none passed
};
// One page of the listing: {"object": "list", "data": [...], "has_more": bool, "last_id"?}.
std::string encode_attestation_page(std::span<const ProviderAttestation> providers, bool has_more);

struct Release {
  std::string binary_hash;
  std::string version;
  std::string note;
  int64_t created_at = 0;
};
std::string encode_release_list(const std::vector<Release>& releases);

// An entry of the admin model catalogue (GET|POST /v1/admin/models).
struct CatalogEntry {
  std::string id;
  std::string merkle_root;
  uint64_t size_bytes = 0;
  int64_t created_at = 0;
};
std::string encode_catalog(const std::vector<CatalogEntry>& models);

struct CreatedKeyAnswer {
  std::string api_key;
  std::string account_id;
};
std::string encode_created_key(const CreatedKeyAnswer& key);

struct CreditAnswer {
  std::string account_id;
  int64_t credited_micro_usd = 0;
  int64_t balance_micro_usd = 0;
};
std::string encode_credit(const CreditAnswer& credit);

struct ModelPrice {
  std::string model;
  int64_t input_per_million = 0;
  int64_t output_per_million = 0;
};
struct PriceList {
  std::vector<ModelPrice> prices;
  int64_t default_input_per_million = 0;
  int64_t default_output_per_million = 0;
  int64_t minimum_charge = 0;
};
std::string encode_price_list(const PriceList& list);

std::string encode_referral(const std::string& account_id, const std::string& referrer_id);

std::string encode_balance(const std::string& account_id, int64_t balance_micro_usd);

struct UsageEntry {
  std::string request_id;
  int64_t cost_micro_usd = 0;
  int64_t created = 0;
};
std::string encode_usage(const std::string& account_id, const std::vector<UsageEntry>& entries);

// Micro-USD as a decimal USD string: 1234567 → "1.234567".
std::string usd(int64_t micro);

}  // namespace darkbloom::proto
