// Challenges keep an attested provider's trust fresh: one right after registration, then one
// every interval. An answer must be signed by the registered key over the issued nonce, with an
// unchanged binary and posture, and must prove the chunks of a model file it names
// (trust/model_proof.h); a forged answer, a wrong chunk or a regression distrusts at once, and
// three failed or unanswered challenges in a row do too.
#include <fmt/format.h>

#include "base/log.h"
#include "coordinator/gateway/provider_gateway.h"
#include "coordinator/gateway/provider_text.h"

namespace darkbloom::coordinator {
namespace {

// Failed or unanswered challenges in a row that make a provider untrusted (ARCHITECTURE.md).
constexpr int kChallengeStrikes = 3;

// Built outside the coroutine: GCC 12 miscompiles brace-initialised temporaries inside them.
std::string challenge_frame(const attest::IssuedChallenge& challenge, const std::optional<ModelChallenge>& model) {
  proto::AttestationChallenge message;
  message.nonce = challenge.nonce;
  message.timestamp = challenge.timestamp;
  if (model) message.model_chunks = chunk_requests(*model);
  return proto::encode(message);
}

}  // namespace

std::optional<ModelChallenge> ProviderGateway::next_model_challenge(ProviderSession& session) {
  // Unproven models first; then the proven ones in turn, skipping those with no root to check
  // against. The turn moves on only when a model passes, so an unanswered challenge asks for the
  // same model again rather than skipping it.
  TrustState& trust = session.trust_state_;
  const auto& models = session.info_.models;
  const size_t chunks = std::min(config_.model_challenge_chunks, proto::kMaxChallengeChunks);
  // Within what the provider proves: a challenge it could not answer in full would only fail.
  const auto now = clock_.now();
  const auto affordable = [&](std::optional<ModelChallenge> challenge) -> std::optional<ModelChallenge> {
    if (!challenge || trust.proof_budget.level(now) < static_cast<double>(challenge->indices.size())) {
      return std::nullopt;
    }
    for (size_t i = 0; i < challenge->indices.size(); ++i) trust.proof_budget.take(now);
    return challenge;
  };
  for (const auto& model : models) {
    if (trust.unproven.count(model.id) != 0) return affordable(model_challenge(catalog_, model, chunks, random_));
  }
  // Proven ones again once the interval is over (providers prove only so many chunks a minute).
  if (trust.model_proven_at && clock_.now() - *trust.model_proven_at < config_.model_challenge_interval) {
    return std::nullopt;
  }
  for (size_t tried = 0; tried < models.size(); ++tried) {
    const size_t i = (trust.next_model + tried) % models.size();
    auto challenge = model_challenge(catalog_, models[i], chunks, random_);
    if (challenge) {
      trust.next_model = i;
      return affordable(std::move(challenge));
    }
  }
  return std::nullopt;
}

void ProviderGateway::model_proven(ProviderSession& session, const std::string& model) {
  TrustState& trust = session.trust_state_;
  const auto& models = session.info_.models;
  trust.model_proven_at = clock_.now();
  if (trust.unproven.erase(model) != 0) {
    // Served from now on: waiters for it may find capacity.
    if (session.routable(config_.min_trust, clock_.now()))
      router_.capacity_changed(model, session.info_.max_concurrency);
    return;
  }
  if (!models.empty() && models[trust.next_model % models.size()].id == model) {
    trust.next_model = (trust.next_model + 1) % models.size();
  }
}

void ProviderGateway::catalog_changed(const CatalogModel& entry) {
  // A provider whose announced root and size match the new entry keeps the model: what it proved
  // (its announced root, which registration held to the catalogue's) is what the entry names.
  bool woken = false;
  for (const auto& shared : registry_.all()) {
    ProviderSession& session = *shared;
    auto& models = session.info_.models;
    const auto model = std::find_if(models.begin(), models.end(), [&](const auto& m) { return m.id == entry.id; });
    if (session.dropped_ || model == models.end()) continue;
    auto refused = catalog_refusal(catalog_, *model);
    if (!refused) continue;
    log::warn("provider {}: model refused after a catalogue change: {}", session.id_, *refused);
    TrustState& trust = session.trust_state_;
    trust.unproven.erase(entry.id);
    const auto index = static_cast<size_t>(model - models.begin());
    models.erase(model);                               // ids are unique within a register (proto)
    if (index < trust.next_model) --trust.next_model;  // the turn stays with the same model
    if (!woken) {
      router_.wake_all(entry.id);  // waiters re-check: perhaps nobody serves it now
      woken = true;
    }
    if (models.empty()) drop(session, "model refused after a catalogue change: " + *refused);
  }
}

using net::awaitable;

attest::VerificationPolicy ProviderGateway::verification_policy() const {
  attest::VerificationPolicy policy;
  policy.allowed_binaries = releases_;
  policy.max_clock_skew = config_.attestation_max_skew;
  policy.now = clock_.wall_now();
  return policy;
}

awaitable<void> ProviderGateway::challenge_loop(std::shared_ptr<ProviderSession> session) {
  auto running = running_;
  auto timer = std::make_shared<net::Timer>(clock_, executor_);
  TrustState& trust = session->trust_state_;
  trust.challenge_timer = timer;
  while (running && !session->dropped_ && session->trust_ != TrustLevel::none) {
    const auto issued_at = clock_.now();
    const attest::IssuedChallenge challenge = attest::new_challenge(clock_.wall_now(), random_);
    trust.open = challenge;
    trust.open_model = next_model_challenge(*session);
    const bool proves_model = trust.open_model.has_value();
    session->link_->send(challenge_frame(challenge, trust.open_model));
    // Woken early by the answer; the next challenge still waits for the interval.
    timer->expires_at(issued_at + config_.challenge_timeout);
    co_await timer->wait();
    if (!running || session->dropped_) break;
    if (trust.open.nonce == challenge.nonce) {
      trust.open = {};
      trust.open_model.reset();
      challenges_failed_.add();
      challenge_failed(*session, fmt::format("no answer within {:.1f} s",
                                             std::chrono::duration<double>(config_.challenge_timeout).count()));
    }
    // Models left to prove after a pass: the next challenge at once, so a provider with several
    // models serves them all moments after registering.
    if (proves_model && !trust.unproven.empty() && trust.consecutive_failures == 0 && trust.open.nonce.empty()) {
      continue;
    }
    // The rest of the interval; a cancel here means the session was dropped or distrusted.
    timer->expires_at(issued_at + config_.challenge_interval);
    co_await timer->wait();
  }
  trust.challenge_timer.reset();
}

void ProviderGateway::on_challenge_answer(ProviderSession& session, const proto::AttestationResponse& answer) {
  TrustState& trust = session.trust_state_;
  if (trust.public_key.empty()) {
    drop(session, "a challenge answer from a provider that did not attest");
    return;
  }
  if (session.trust_ == TrustLevel::none) return;  // distrusted for this session; answers change nothing
  // Single use: whatever this answer is worth, the open nonce is spent.
  const attest::IssuedChallenge issued = trust.open;
  const std::optional<ModelChallenge> model = std::move(trust.open_model);
  trust.open = {};
  trust.open_model.reset();
  if (!issued.nonce.empty() && trust.challenge_timer) trust.challenge_timer->cancel();
  auto result =
      attest::verify_challenge_answer(answer, issued, trust.public_key, trust.document, verification_policy());
  // Counted once per challenge issued: an answer to none (late, or never asked for) counts nothing.
  if (!issued.nonce.empty() && (!result || !result->regressions.empty())) challenges_failed_.add();
  if (!result) {
    // A forged signature or a changed binary is not a flaky network: distrust at once.
    if (result.error().code == Errc::permission_denied) {
      distrust(session, "challenge answer rejected: " + result.error().message);
    } else {
      challenge_failed(session, result.error().message);
    }
    return;
  }
  if (!result->regressions.empty()) {
    distrust(session, "posture regressed since registration: " + result->regressions);
    return;
  }
  if (model) {
    if (answer.model_proofs.empty()) {
      // Withheld (its budget spent, say, by reconnecting often): a strike, and the model stays
      // unproven; three in a row make it `none`.
      challenges_failed_.add();
      challenge_failed(session, fmt::format("no proof of model '{}'", printable(model->model, 80)));
      return;
    }
    // Not a flaky network either: the bytes came, and they are not the model's. Dropped too, so
    // that a coordinator in open mode (where `none` is still served) stops serving it as well.
    if (const Status proved = verify_model_proofs(*model, answer.model_proofs); !proved) {
      challenges_failed_.add();
      const std::string reason = "model challenge failed: " + proved.error().message;
      distrust(session, reason);
      drop(session, reason);
      return;
    }
    model_proven(session, model->model);
  }
  challenge_passed(session);
}

void ProviderGateway::challenge_passed(ProviderSession& session) {
  challenges_passed_.add();
  TrustState& trust = session.trust_state_;
  if (trust.key_recording && !trust.key_recorded_at) return;  // the first record decides
  if (key_needs_recording(session)) {
    const bool first = !trust.key_recorded_at;
    trust.key_recording = true;
    net::asio::co_spawn(executor_, record_key(registry_.find(session.id_)), net::asio::detached);
    if (first) return;  // trusted once the key is recorded (record_key marks the pass)
  }
  mark_challenge_passed(session);
}

void ProviderGateway::mark_challenge_passed(ProviderSession& session) {
  TrustState& trust = session.trust_state_;
  const bool was_routable = session.routable(config_.min_trust, clock_.now());
  trust.consecutive_failures = 0;
  trust.passed += 1;
  trust.last_pass_at = attest::rfc3339(clock_.wall_now());
  trust.fresh_until = clock_.now() + config_.challenge_interval + config_.challenge_grace;
  trust.reason = "challenge passed";
  send_trust_status(session);
  if (!was_routable && session.routable(config_.min_trust, clock_.now())) announce_capacity(session);
}

void ProviderGateway::challenge_failed(ProviderSession& session, const std::string& reason) {
  TrustState& trust = session.trust_state_;
  trust.failed += 1;
  trust.consecutive_failures += 1;
  log::warn("provider {}: challenge failed ({} in a row): {}", session.id_, trust.consecutive_failures,
            printable(reason));
  if (trust.consecutive_failures >= kChallengeStrikes) {
    distrust(session, "three challenges in a row failed; last: " + reason);
    return;
  }
  trust.reason = "challenge failed: " + reason;
  send_trust_status(session);
}

void ProviderGateway::distrust(ProviderSession& session, const std::string& reason) {
  TrustState& trust = session.trust_state_;
  if (session.trust_ == TrustLevel::none && trust.fresh_until == net::Clock::Time{}) return;
  log::warn("provider {} untrusted: {}", session.id_, printable(reason));
  session.trust_ = TrustLevel::none;
  trust.fresh_until = {};
  trust.open = {};
  trust.open_model.reset();
  trust.reason = reason;
  if (trust.challenge_timer) trust.challenge_timer->cancel();
  send_trust_status(session);
}

void ProviderGateway::send_trust_status(ProviderSession& session) {
  if (session.link_->is_open()) {
    const TrustState& trust = session.trust_state_;
    const std::string reason =
        trust.hardware_reason.empty() ? trust.reason : trust.reason + "; hardware: " + trust.hardware_reason;
    session.link_->send(proto::encode(proto::TrustStatus{trust_level_name(session.trust_), reason}));
  }
}

void ProviderGateway::announce_capacity(const ProviderSession& session) {
  for (const auto& model : session.info_.models) router_.capacity_changed(model.id, session.info_.max_concurrency);
}

}  // namespace darkbloom::coordinator
