// A provider's `register`: its X25519 key, its attestation and the key's history, the operator's
// account its work is paid to, and the answer (`registered`, then its trust status).
#include <fmt/format.h>

#include "attest/attestation_document.h"
#include "base/encoding.h"
#include "base/log.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/gateway/provider_text.h"
#include "coordinator/store/store_worker.h"
#include "crypto/hash.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::coordinator {

using net::awaitable;

namespace {

// How often a key in use is marked seen again in the store.
constexpr auto kKeySeenRefresh = std::chrono::hours(24);

// Several heartbeats fit in the eviction window, never more often than 10 per second.
int heartbeat_interval_ms(std::chrono::milliseconds heartbeat_timeout) {
  return static_cast<int>(std::max<int64_t>(100, heartbeat_timeout.count() / 18));
}

// Built outside the coroutine: GCC 12 miscompiles brace-initialised temporaries inside them.
std::string registered_frame(const std::string& provider_id, std::chrono::milliseconds heartbeat_timeout,
                             std::vector<proto::RefusedModel> refused) {
  proto::Registered registered;
  registered.provider_id = provider_id;
  registered.refused_models = std::move(refused);
  registered.protocol_version = proto::kProtocolVersion;
  registered.heartbeat_interval_ms = heartbeat_interval_ms(heartbeat_timeout);
  return proto::encode(registered);
}

// Why a register whose every model was refused is closed.
std::string refused_reason(const std::vector<proto::RefusedModel>& refused) {
  if (refused.size() == 1) return refused.front().reason;
  return fmt::format("all {} models refused; first: {}", refused.size(), refused.front().reason);
}

std::string model_list(const proto::Register& info) {
  std::string models;
  for (const auto& model : info.models) models += (models.empty() ? "" : ", ") + printable(model.id, 80);
  return models;
}

}  // namespace

void ProviderGateway::on_register(ProviderSession& session, proto::Register hello) {
  auto key = crypto::public_key_from(hello.encryption_key);
  if (!key || !crypto::usable_public_key(*key)) {
    drop(session, "encryption key is not a usable X25519 public key");
    return;
  }
  if (hello.models.size() > config_.max_models_per_provider) {
    drop(session, fmt::format("{} models registered; this coordinator takes at most {} per provider",
                              hello.models.size(), config_.max_models_per_provider));
    return;
  }
  if (!hello.attestation && config_.min_trust > TrustLevel::none) {
    // It could never be routed to: it would only hold a place an attested provider could use.
    drop(session, fmt::format("this coordinator serves only attested providers (trust level {} or above); register "
                              "with an attestation",
                              trust_level_name(config_.min_trust)));
    return;
  }
  session.trust_ = TrustLevel::none;
  session.trust_state_.reason = "no attestation";
  // The rest needs the store (the key's history, the account token): off the network thread.
  session.registering_ = true;
  net::asio::co_spawn(executor_, complete_registration(registry_.find(session.id_), std::move(hello), *key),
                      net::asio::detached);
}

awaitable<void> ProviderGateway::complete_registration(std::shared_ptr<ProviderSession> shared, proto::Register hello,
                                                       crypto::PublicKey key) {
  ProviderSession& session = *shared;
  if (hello.attestation && !co_await verify_identity(session, hello)) co_return;
  if (!co_await bind_account(session, hello)) co_return;
  if (session.dropped_) co_return;  // while the store was asked
  // Judged against the catalogue as it is now, after the store calls (it may have changed).
  std::vector<proto::RefusedModel> refused = refuse_catalogue_mismatches(session, hello);
  if (hello.models.empty()) {
    drop(session, refused_reason(refused));
    co_return;
  }
  session.registering_ = false;
  session.info_ = std::move(hello);
  if (!session.trust_state_.public_key.empty() && config_.model_challenge_chunks > 0) {
    // Served once its challenges prove the file (the first one comes at once).
    for (const auto& model : session.info_.models) {
      if (provable(catalog_, model)) session.trust_state_.unproven.insert(model.id);
    }
  }
  session.features_ = proto::feature_bits(session.info_.features);
  session.encryption_key_ = key;
  session.registered_ = true;
  if (session.register_timer_) session.register_timer_->cancel();
  session.link_->send(registered_frame(session.id_, config_.heartbeat_timeout, std::move(refused)));
  send_trust_status(session);
  log::info("provider {} registered: {} (decode {:.1f} tok/s, concurrency {}, trust {})", session.id_,
            model_list(session.info_), session.info_.decode_tps, session.info_.max_concurrency,
            trust_level_name(session.trust_));
  if (!session.trust_state_.ek_certificate.empty()) start_hardware_proof(session);
  if (!session.trust_state_.public_key.empty()) {
    // Routable above `none` only once the first challenge passes, moments from now.
    net::asio::co_spawn(executor_, challenge_loop(registry_.find(session.id_)), net::asio::detached);
  }
  if (session.routable(config_.min_trust, clock_.now())) announce_capacity(session);
}

awaitable<bool> ProviderGateway::verify_identity(ProviderSession& session, const proto::Register& hello) {
  // A provider whose attestation does not verify is dropped: it claims an identity it cannot show.
  auto verified = attest::verify_attestation(*hello.attestation, hello.encryption_key, verification_policy());
  if (!verified) {
    drop(session, "attestation rejected: " + verified.error().message);
    co_return false;
  }
  const std::string public_key = verified->document.public_key;
  const std::string old_public_key = verified->rotation ? verified->rotation->old_public_key : std::string();
  // Without the key's history a retired key could pass: no store, no registration.
  auto read_history = [this, public_key, old_public_key]() -> Result<KeyHistory> {
    KeyHistory history;
    auto known = store_.find_provider_key(public_key);
    if (!known) return known.error();
    history.key = std::move(*known);
    if (!old_public_key.empty()) {
      auto old_key = store_.find_provider_key(old_public_key);
      if (!old_key) return old_key.error();
      history.old_key = std::move(*old_key);
    }
    return history;
  };
  auto history = co_await store_worker_.run(read_history);
  if (session.dropped_) co_return false;
  if (!history) {
    log::error("provider {}: cannot read key history: {}", session.id_, history.error().message);
    drop(session, "the coordinator cannot check this key now; try again later");
    co_return false;
  }
  if (history->key && !history->key->replaced_by.empty()) {
    drop(session, "attestation rejected: this identity key was rotated out");
    co_return false;
  }
  std::string replaces;
  if (verified->rotation) {
    const auto& old_key = history->old_key;
    if (old_key && !old_key->replaced_by.empty() && old_key->replaced_by != public_key) {
      drop(session, "attestation rejected: the old key was already rotated to another key");
      co_return false;
    }
    replaces = verified->rotation->old_public_key;
    log::info("provider {}: key rotation accepted ({} → {})", session.id_, replaces.substr(0, 12),
              public_key.substr(0, 12));
  }
  TrustState& trust = session.trust_state_;
  trust.public_key = std::move(verified->public_key);
  trust.document = std::move(verified->document);
  trust.document_bytes = hello.attestation->document;
  trust.ek_certificate = hello.attestation->ek_certificate;
  trust.key_public = hello.attestation->key_public;
  trust.signature = hello.attestation->signature;
  trust.replaces = replaces;  // recorded, and the old key retired, once this key passes a challenge
  // Valid attestation: self_signed. `hardware` needs the TPM to prove the key (hardware_proof.cc,
  // once registered); a claimed backend proves nothing.
  session.trust_ = TrustLevel::self_signed;
  trust.reason = "attestation verified (" + trust.document.key_backend +
                 (trust.document.degraded_reason.empty() ? "" : ", degraded: " + trust.document.degraded_reason) +
                 "); first challenge pending";
  co_return true;
}

std::vector<proto::RefusedModel> ProviderGateway::refuse_catalogue_mismatches(const ProviderSession& session,
                                                                              proto::Register& hello) const {
  // A catalogued model is served only from the catalogued file; the others stay registered.
  std::vector<proto::RefusedModel> refused;
  std::erase_if(hello.models, [this, &refused](const proto::ModelInfo& model) {
    auto reason = catalog_refusal(catalog_, model);
    if (reason) refused.push_back({model.id, "model refused: " + *reason});
    return reason.has_value();
  });
  for (const auto& model : refused)
    log::warn("provider {}: {}: {}", session.id_, printable(model.model, 80), model.reason);
  return refused;
}

void ProviderGateway::retire_rotated_key(const ProviderSession& session, const std::string& old_public_key) {
  // The old key is retired everywhere at once, not only at its next registration.
  for (auto& other : registry_.all()) {
    if (other.get() != &session && other->trust_state_.document.public_key == old_public_key) {
      distrust(*other, "its identity key was rotated out");
    }
  }
}

bool ProviderGateway::key_needs_recording(const ProviderSession& session) const {
  // Only keys that proved themselves are written down, so a flood of fresh keys that never answer
  // a challenge leaves no rows behind; a key in use is marked seen again once a day, so expiry
  // only forgets unused ones.
  const TrustState& trust = session.trust_state_;
  return !trust.key_recording && (!trust.key_recorded_at || clock_.now() - *trust.key_recorded_at >= kKeySeenRefresh);
}

awaitable<void> ProviderGateway::record_key(std::shared_ptr<ProviderSession> shared) {
  ProviderSession& session = *shared;
  TrustState& trust = session.trust_state_;
  // The first record decides: a key whose rotation the store refuses is never routed to. Later
  // ones only mark the key seen.
  const bool first = !trust.key_recorded_at;
  trust.key_recording = true;
  auto write = [this, key = trust.document.public_key, backend = trust.document.key_backend,
                replaces = trust.replaces] { return store_.record_provider_key(key, backend, replaces); };
  const Status recorded = co_await store_worker_.run(write);
  trust.key_recording = false;
  if (recorded) {
    // Written: the old key is retired in the store, so everywhere, even if this session left.
    if (!trust.replaces.empty()) retire_rotated_key(session, trust.replaces);
    trust.replaces.clear();
    trust.key_recorded_at = clock_.now();
    if (!session.dropped_ && first) mark_challenge_passed(session);
    co_return;
  }
  if (session.dropped_) co_return;
  if (recorded.error().code == Errc::already_exists) {
    drop(session, "attestation rejected: " + recorded.error().message);
  } else if (first) {
    log::error("provider {}: cannot record its key: {}", session.id_, recorded.error().message);
    drop(session, "the coordinator cannot record this key now; try again later");
  } else {
    log::warn("provider {}: cannot mark its key seen ({}); trying again at its next challenge", session.id_,
              recorded.error().message);
  }
}

awaitable<bool> ProviderGateway::bind_account(ProviderSession& session, proto::Register& hello) {
  // With an attestation, the account is the one its signed document names: a token swapped,
  // added or removed on the way (a man in the middle taking the payouts) does not match it.
  if (hello.attestation) {
    const attest::AttestationDocument& document = session.trust_state_.document;
    if (document.account_binding.empty() != hello.account_token.empty()) {
      drop(session, hello.account_token.empty()
                        ? "the attestation binds a payout account but register carries no account token"
                        : "register carries an account token the attestation does not bind (account_binding)");
      co_return false;
    }
    if (!hello.account_token.empty()) {
      const std::string expected = attest::account_binding(document.public_key, hello.account_token);
      if (expected.size() != document.account_binding.size() ||
          !crypto::equal_constant_time(as_bytes(expected), as_bytes(document.account_binding))) {
        drop(session, "the account token does not match the attestation's account_binding");
        co_return false;
      }
    }
  }
  if (hello.account_token.empty()) co_return true;
  if (!hello.attestation) {
    // Nothing signed names the payee: anyone on the path could have put this token here.
    drop(session, "an account token needs a signed attestation that binds it (account_binding)");
    co_return false;
  }
  std::string token = std::move(hello.account_token);
  hello.account_token.clear();
  auto account = co_await keys_.authenticate_key(std::move(token), store_worker_);  // which wipes it
  if (session.dropped_) co_return false;
  if (!account) {
    log::error("provider {}: cannot check its account token: {}", session.id_, account.error().message);
    drop(session, "the coordinator cannot check the account token now; try again later");
    co_return false;
  }
  if (!*account) {
    drop(session, "unknown account token: payouts need an API key of the operator's account");
    co_return false;
  }
  session.account_id_ = **account;
  co_return true;
}

}  // namespace darkbloom::coordinator
