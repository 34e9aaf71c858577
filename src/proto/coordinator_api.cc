#include "proto/coordinator_api.h"

#include <fmt/format.h>

#include <cstdlib>

#include "base/json.h"

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

std::string list_of(bj::array data) {
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  return bj::serialize(list);
}

bj::object attestation_entry(const ProviderAttestation& provider) {
  bj::object entry;
  entry["provider_id"] = provider.provider_id;
  entry["trust_level"] = provider.trust_level;
  entry["reason"] = provider.reason;
  bj::array models;
  for (const auto& model : provider.models) models.push_back(bj::value(model));
  entry["models"] = std::move(models);
  bj::array features;
  for (const auto& feature : provider.features) features.push_back(bj::value(feature));
  entry["features"] = std::move(features);
  if (provider.attested) {
    entry["public_key"] = provider.public_key;
    entry["public_key_pem"] = provider.public_key_pem;
    entry["key_backend"] = provider.key_backend;
    if (!provider.degraded_reason.empty()) entry["degraded_reason"] = provider.degraded_reason;
    if (!provider.binary_hash.empty()) entry["binary_hash"] = provider.binary_hash;
    entry["attestation"] = provider.attestation;
    entry["signature"] = provider.signature;
    if (!provider.hardware.empty()) {
      entry["hardware"] = bj::object{{"status", provider.hardware},
                                     {"ek_certificate", provider.ek_certificate},
                                     {"key_public", provider.key_public}};
    }
  }
  bj::object challenges;
  challenges["passed"] = provider.challenges_passed;
  challenges["failed"] = provider.challenges_failed;
  challenges["consecutive_failures"] = provider.consecutive_failures;
  if (!provider.last_pass.empty()) challenges["last_pass"] = provider.last_pass;
  entry["challenges"] = std::move(challenges);
  return entry;
}

}  // namespace

namespace {

bj::object model_object(const ModelSummary& summary) {
  bj::object metadata;
  metadata["provider_count"] = summary.provider_count;
  metadata["attested_providers"] = summary.attested_providers;
  metadata["trust_level"] = summary.trust_level;
  metadata["quantization"] = summary.quantization;
  if (!summary.merkle_root.empty()) {
    metadata["merkle_root"] = summary.merkle_root;
    metadata["size_bytes"] = summary.size_bytes;
  }
  bj::object model;
  model["id"] = summary.id;
  model["object"] = "model";
  model["created"] = 0;
  model["owned_by"] = "darkbloom";
  model["metadata"] = std::move(metadata);
  return model;
}

}  // namespace

std::string encode_model_list(const std::vector<ModelSummary>& models) {
  bj::array data;
  for (const auto& summary : models) data.push_back(model_object(summary));
  return list_of(std::move(data));
}

std::string encode_model(const ModelSummary& model) {
  return json::dump(model_object(model));
}

std::string encode_health(const Health& health) {
  return fmt::format(R"({{"status":"ok","providers":{},"routable":{},"queued":{}}})", health.providers, health.routable,
                     health.queued);
}

std::string encode_attestation_page(std::span<const ProviderAttestation> providers, bool has_more) {
  bj::array data;
  for (const auto& provider : providers) data.push_back(attestation_entry(provider));
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  list["has_more"] = has_more;
  if (!providers.empty()) list["last_id"] = providers.back().provider_id;
  return bj::serialize(list);
}

std::string encode_release_list(const std::vector<Release>& releases) {
  bj::array data;
  for (const auto& release : releases) {
    bj::object entry;
    entry["binary_hash"] = release.binary_hash;
    entry["version"] = release.version;
    entry["note"] = release.note;
    entry["created_at"] = release.created_at;
    data.push_back(std::move(entry));
  }
  return list_of(std::move(data));
}

std::string encode_catalog(const std::vector<CatalogEntry>& models) {
  bj::array data;
  for (const auto& model : models) {
    bj::object entry;
    entry["id"] = model.id;
    entry["merkle_root"] = model.merkle_root;
    entry["size_bytes"] = model.size_bytes;
    entry["created_at"] = model.created_at;
    data.push_back(std::move(entry));
  }
  return list_of(std::move(data));
}

std::string encode_created_key(const CreatedKeyAnswer& key) {
  bj::object answer;
  answer["api_key"] = key.api_key;
  answer["account_id"] = key.account_id;
  return bj::serialize(answer);
}

std::string encode_credit(const CreditAnswer& credit) {
  bj::object answer;
  answer["account_id"] = credit.account_id;
  answer["credited_micro_usd"] = credit.credited_micro_usd;
  answer["balance_micro_usd"] = credit.balance_micro_usd;
  return bj::serialize(answer);
}

std::string encode_price_list(const PriceList& list) {
  bj::array data;
  for (const ModelPrice& price : list.prices) {
    bj::object entry;
    entry["model"] = price.model;
    entry["input_per_million"] = price.input_per_million;
    entry["output_per_million"] = price.output_per_million;
    data.push_back(std::move(entry));
  }
  bj::object answer;
  answer["object"] = "list";
  answer["data"] = std::move(data);
  bj::object defaults;
  defaults["input_per_million"] = list.default_input_per_million;
  defaults["output_per_million"] = list.default_output_per_million;
  defaults["minimum_charge"] = list.minimum_charge;
  answer["built_in_default"] = std::move(defaults);
  return bj::serialize(answer);
}

std::string encode_referral(const std::string& account_id, const std::string& referrer_id) {
  bj::object answer;
  answer["account_id"] = account_id;
  answer["referrer_id"] = referrer_id;
  return bj::serialize(answer);
}

std::string encode_balance(const std::string& account_id, int64_t balance_micro_usd) {
  bj::object answer;
  answer["object"] = "balance";
  answer["account_id"] = account_id;
  answer["balance_micro_usd"] = balance_micro_usd;
  answer["balance_usd"] = usd(balance_micro_usd);
  return bj::serialize(answer);
}

std::string encode_usage(const std::string& account_id, const std::vector<UsageEntry>& entries) {
  bj::array data;
  for (const UsageEntry& usage : entries) {
    bj::object entry;
    entry["request_id"] = usage.request_id;
    entry["cost_micro_usd"] = usage.cost_micro_usd;
    entry["created"] = usage.created;
    data.push_back(std::move(entry));
  }
  bj::object answer;
  answer["object"] = "list";
  answer["account_id"] = account_id;
  answer["data"] = std::move(data);
  return bj::serialize(answer);
}

std::string usd(int64_t micro) {
  return fmt::format("{}{}.{:06d}", micro < 0 ? "-" : "", std::abs(micro) / 1'000'000, std::abs(micro) % 1'000'000);
}

}  // namespace darkbloom::proto
