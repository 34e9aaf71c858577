// The coordinator's side of /ws/provider, and the only code that changes a ProviderSession:
// accepts a provider's link, takes its register message (verifying its attestation and key
// history), feeds heartbeats and sealed inference frames to the right attempts, challenges each
// attested provider at once and then periodically, dispatches and abandons attempts, evicts
// providers that fell silent, and drops one that breaks the protocol (malformed frames,
// plaintext or foreign chunks, forged receipts) without disturbing the others.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "attest/hardware_policy.h"
#include "base/metrics.h"
#include "base/random.h"
#include "coordinator/auth/api_keys.h"
#include "coordinator/config.h"
#include "coordinator/gateway/provider_session.h"
#include "coordinator/registry/provider_registry.h"
#include "coordinator/routing/router.h"
#include "coordinator/store/store.h"
#include "coordinator/store/store_worker.h"
#include "coordinator/trust/model_proof.h"
#include "net/clock.h"
#include "net/shared_flag.h"

namespace darkbloom::coordinator {

class ProviderGateway {
 public:
  struct Dependencies {
    net::Executor executor;
    const CoordinatorConfig& config;
    net::Clock& clock;
    RandomSource& random;
    ProviderRegistry& registry;
    Router& router;
    Store& store;
    StoreWorker& store_worker;  // every store call goes through it
    ApiKeys& keys;
    const std::set<std::string>& releases;  // the approved binary hashes
    const ModelCatalog& catalog;            // models by Merkle root (admin catalogue)
    // --tpm-ek-ca and --tpm-release-key; nullopt: no provider can be `hardware`.
    const std::optional<attest::HardwarePolicy>& hardware;
  };
  explicit ProviderGateway(Dependencies dependencies);

  // GET /ws/provider: upgrades and serves the provider until it leaves or is dropped.
  net::awaitable<void> handle(http::Exchange& exchange);
  // Starts the periodic eviction of silent providers.
  void start();
  // Drops every provider; loops end.
  void stop();
  // For /metrics: challenge answers that passed, and challenges failed (rejected, regressed or
  // unanswered).
  const metrics::Counter& challenges_passed() const { return challenges_passed_; }
  const metrics::Counter& challenges_failed() const { return challenges_failed_; }

  // Why a new provider connection from `remote` ("HOST:PORT") is not taken now: too many sessions,
  // too many that serve nothing yet, or too many from its address. nullopt: take it.
  std::optional<proto::ApiError> admission_refusal(std::string_view remote) const;
  // A provider connected over `link` (the WebSocket path calls these; unit tests too). It must
  // register within config.register_timeout or it is dropped.
  std::shared_ptr<ProviderSession> connect(std::shared_ptr<ProviderLink> link);
  // One text frame from the provider; drops it when the frame breaks the protocol.
  void receive(ProviderSession& session, std::string_view frame);
  void drop(ProviderSession& session, const std::string& reason);

  // Counts an attempt as in flight on the provider (taking one of its slots) before its frame is
  // sealed; abandon_attempt() gives the slot back when it is never sent.
  void reserve_attempt(ProviderSession& session, std::shared_ptr<Attempt> attempt);
  // Sends a reserved attempt's inference_request frame. False (nothing sent, the slot given back)
  // when the attempt is no longer in flight there (the provider dropped meanwhile), the provider
  // is no longer routable (distrusted, or its trust lapsed, while the body was sealed) or the
  // frame is larger than it reads.
  bool send_attempt(ProviderSession& session, const Attempt& attempt, std::string frame);
  // Stops an attempt on its provider: forgets it (late frames are dropped) and sends cancel.
  void abandon_attempt(ProviderSession& session, const std::string& request_id, bool send_cancel);
  // Tells the provider what its answer to `request_id` earned its payout account.
  void tell_earned(const ProviderSession& session, const std::string& request_id, int64_t payout);
  // Drops every provider silent for longer than the heartbeat timeout.
  void evict_silent();
  // The catalogue's entry for a model was set: connected providers whose announced root or size
  // differs lose that model at once (closed when it was their last); the others announced, and
  // proved, the file the entry names.
  void catalog_changed(const CatalogModel& entry);

  // The tool-call pieces of a chunk, checked against the request and added to its calls (and to
  // the bytes that bound its usage): why the provider cannot be believed, or nothing.
  static std::optional<std::string> check_tool_calls(Attempt& attempt, const proto::ChunkContent& content);

 private:
  net::awaitable<void> serve(std::shared_ptr<http::WebSocket> socket, std::shared_ptr<ProviderSession> session);
  net::awaitable<void> register_deadline(std::weak_ptr<ProviderSession> session, std::shared_ptr<net::Timer> timer);
  void on_message(ProviderSession& session, proto::ProviderMessage message);
  void on_inference_message(ProviderSession& session, proto::ProviderMessage& message);

  // registration.cc
  void on_register(ProviderSession& session, proto::Register hello);
  // What needs the store: the attestation's key history and the account token; then `registered`
  // (naming the models the catalogue refused).
  net::awaitable<void> complete_registration(std::shared_ptr<ProviderSession> session, proto::Register hello,
                                             crypto::PublicKey key);
  // Takes the models whose root or size is not the catalogue's out of `hello`; returns them.
  std::vector<proto::RefusedModel> refuse_catalogue_mismatches(const ProviderSession& session,
                                                               proto::Register& hello) const;
  // What the store knows of a registering key and of the key it says it rotated from.
  struct KeyHistory {
    std::optional<ProviderKeyRecord> key;
    std::optional<ProviderKeyRecord> old_key;
  };
  // Verifies the attestation and the key's history; false after a drop.
  net::awaitable<bool> verify_identity(ProviderSession& session, const proto::Register& hello);
  // The operator's account a provider's work is paid to; false after a drop.
  net::awaitable<bool> bind_account(ProviderSession& session, proto::Register& hello);
  // A key is recorded when it first passes a challenge (and marked seen once a day after that),
  // retiring the key it rotated from; the first record must succeed before the pass counts.
  bool key_needs_recording(const ProviderSession& session) const;
  net::awaitable<void> record_key(std::shared_ptr<ProviderSession> session);
  void retire_rotated_key(const ProviderSession& session, const std::string& old_public_key);

  // inference_frames.cc
  void on_chunk(ProviderSession& session, Attempt& attempt, const proto::InferenceChunk& chunk);
  void on_complete(ProviderSession& session, Attempt& attempt, const proto::InferenceComplete& complete);
  // A provider reported usage no honest one does (`lie` says what): distrusted, or dropped.
  void over_reported(ProviderSession& session, const std::string& lie);
  // A blind attempt's frames: relayed unopened, the usage checked against its signature.
  void on_blind_chunk(ProviderSession& session, Attempt& attempt, proto::InferenceChunk& chunk);
  void on_blind_complete(ProviderSession& session, Attempt& attempt, proto::InferenceComplete& complete);

  // Folds a finished answer's speed (on its billed tokens) into the provider's observed rate.
  void observe_decode_rate(ProviderSession& session, const Attempt& attempt, int64_t tokens);
  // The receipt of a finished answer, checked against what was relayed; distrusts a forger.
  void check_receipt(ProviderSession& session, const Attempt& attempt, const proto::CompletionContent& content,
                     provider_event::Complete& done);
  void finish_attempt(ProviderSession& session, const std::string& request_id, ProviderEvent event);

  // challenges.cc
  net::awaitable<void> challenge_loop(std::shared_ptr<ProviderSession> session);
  void on_challenge_answer(ProviderSession& session, const proto::AttestationResponse& answer);
  // hardware_proof.cc: checks a registered provider's TPM evidence and sends it a credential to
  // activate; its answer makes it `hardware`, or says why not.
  void start_hardware_proof(ProviderSession& session);
  void on_credential_response(ProviderSession& session, const proto::CredentialResponse& answer);
  // Chunks of the next of the session's models that has a root to check against; nullopt when
  // none has (or model challenges are off).
  std::optional<ModelChallenge> next_model_challenge(ProviderSession& session);
  // A model's chunks passed: served if it was waiting for that, and the turn moves on.
  void model_proven(ProviderSession& session, const std::string& model);
  void challenge_passed(ProviderSession& session);
  // The pass itself: fresh, routable, told so.
  void mark_challenge_passed(ProviderSession& session);
  // A failed or unanswered challenge: the third in a row distrusts the provider.
  void challenge_failed(ProviderSession& session, const std::string& reason);
  // Down to `none` at once, for this whole session (it must reconnect to be trusted again).
  void distrust(ProviderSession& session, const std::string& reason);
  void send_trust_status(ProviderSession& session);
  attest::VerificationPolicy verification_policy() const;
  // Waiters for its models may now find capacity (it became routable).
  void announce_capacity(const ProviderSession& session);

  net::awaitable<void> eviction_loop();
  // Forgets provider keys unused for config.provider_key_expiry, at most once an hour.
  net::awaitable<void> expire_keys();

  net::Executor executor_;
  const CoordinatorConfig& config_;
  net::Clock& clock_;
  RandomSource& random_;
  ProviderRegistry& registry_;
  Router& router_;
  Store& store_;
  StoreWorker& store_worker_;
  ApiKeys& keys_;
  const std::set<std::string>& releases_;
  const ModelCatalog& catalog_;
  const std::optional<attest::HardwarePolicy>& hardware_;
  net::SharedFlag running_{true};
  std::optional<net::Clock::Time> keys_expired_at_;

  // WebSocket upgrades accepted by the caps but not yet sessions, per address.
  class PendingUpgrades {
   public:
    size_t total() const { return total_; }
    size_t from(std::string_view address) const {
      const auto it = by_address_.find(std::string(address));
      return it == by_address_.end() ? 0 : it->second;
    }
    void add(const std::string& address) {
      ++total_;
      ++by_address_[address];
    }
    void remove(const std::string& address) {
      --total_;
      if (--by_address_[address] == 0) by_address_.erase(address);
    }

   private:
    size_t total_ = 0;
    std::unordered_map<std::string, size_t> by_address_;
  };
  struct PendingUpgrade {
    PendingUpgrade(PendingUpgrades& upgrades, std::string address) : upgrades(upgrades), address(std::move(address)) {
      upgrades.add(this->address);
    }
    ~PendingUpgrade() { upgrades.remove(address); }
    PendingUpgrade(const PendingUpgrade&) = delete;
    PendingUpgrade& operator=(const PendingUpgrade&) = delete;
    PendingUpgrades& upgrades;
    std::string address;
  };
  PendingUpgrades pending_upgrades_;
  metrics::Counter challenges_passed_;
  metrics::Counter challenges_failed_;
};

}  // namespace darkbloom::coordinator
