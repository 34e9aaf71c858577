// One connected provider as the coordinator sees it: what it registered, its trust, its live
// state from heartbeats, and the request attempts it is working on. Everyone may read a session;
// only the ProviderGateway changes one (registration, dispatch, chunks, completion, abandon,
// challenges, drop). Everything runs on the coordinator's network thread, so there are no locks.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "attest/attestation_verifier.h"
#include "coordinator/billing/usage_bounds.h"
#include "coordinator/gateway/provider_link.h"
#include "coordinator/trust/model_proof.h"
#include "coordinator/trust/trust_level.h"
#include "crypto/sealed_box.h"
#include "net/async_queue.h"
#include "net/clock.h"
#include "net/token_bucket.h"
#include "proto/provider_messages.h"

namespace darkbloom::coordinator {

// What the provider side of one attempt reports, in order.
namespace provider_event {
struct Accepted {};
struct Text {
  std::string text;
  json::bj::value logprobs;                      // null, or the provider's logprobs object for this text
  int index = 0;                                 // the choice
  std::vector<proto::ToolCallDelta> tool_calls;  // pieces of the choice's calls, checked by the gateway
  proto::SealedPayload sealed;                   // a blind request's chunk, as sealed (the rest is empty)
};
struct Complete {
  int prompt_tokens = 0;  // billed: the provider's report, bounded (billing/usage_bounds.h)
  int completion_tokens = 0;
  std::string finish_reason;
  std::vector<std::string> finish_reasons;  // one per choice, in order (the request's n of them)
  // The provider's receipt, verified against the relayed text; empty when it sent none. It signs
  // the completion tokens the provider reported, which may exceed those billed.
  int receipt_completion_tokens = 0;
  std::string receipt_request_id;
  std::string response_hash;
  std::string receipt_signature;
  std::optional<proto::SealedPayload> sealed;  // a blind request's completion, for the consumer's proxy
};
struct Failed {
  int status_code = 500;
  std::string message;
  std::string code;   // "context_length_exceeded": the request itself cannot be served anywhere
  std::string param;  // a 400 about this request field: the request's own fault, not retried
};
struct Gone {  // the provider disconnected or was dropped
  std::string reason;
};
struct ClientGone {};  // the consumer went away (pushed by the API handler itself)
}  // namespace provider_event

using ProviderEvent = std::variant<provider_event::Accepted, provider_event::Text, provider_event::Complete,
                                   provider_event::Failed, provider_event::Gone, provider_event::ClientGone>;

// One try of a request on one provider, under its own request id. The API side creates it and
// reads its events; the gateway feeds them and keeps the sequence and byte counts.
struct Attempt {
  std::string request_id;
  std::string model;
  int max_tokens = 0;  // of all choices together
  int choices = 1;     // the request's n
  std::shared_ptr<net::AsyncQueue<ProviderEvent>> events;
  std::unique_ptr<crypto::Channel> channel;  // opens the provider's sealed chunks; none when blind
  bool blind = false;                        // sealed by the consumer's proxy: relayed unopened
  uint64_t next_seq = 0;                     // the sequence number the next sealed chunk must carry
  size_t bytes_received = 0;                 // text bytes so far, against kMaxAttemptBytes
  size_t logprobs_bytes = 0;                 // bytes of logprobs so far, against max_logprobs_bytes
  size_t max_logprobs_bytes = 0;             // what the request's logprobs may honestly take
  int64_t chunks_received = 0;               // empty ones too, against max_chunks()
  int64_t body_bytes = 0;                    // of the consumer's request: with `messages`, bounds
  int64_t messages = 0;                      // the prompt tokens billed (billing/usage_bounds.h)
  // The consumer asked to generate past end-of-sequence tokens, which render as no text: many
  // more tokens than bytes is then honest.
  bool ignore_eos = false;
  net::Clock::Time first_chunk_at{};
  std::vector<std::string> texts;  // each choice's answer so far, to check the receipt against; wiped at the end
  bool accepted = false;           // inference_accepted came (once, before any output)
  // What the answer may do with tools (proto::tool_call_rules), and each choice's calls so far
  // (checked as they come, and covered by the receipt).
  proto::ToolCallRules tools;
  std::vector<proto::ChoiceCalls> calls;

  // An honest provider sends at most one chunk per token and one for the held-back tail.
  int64_t max_chunks() const { return int64_t{max_tokens} + kHonestSlackTokens + 1; }
};

inline constexpr size_t kToolCallMarkupBytes = proto::kToolCallMarkupBytes;
// A blind request's prompt parts (messages, tool calls, tools) cannot be counted: the billing
// bound assumes one per this many bytes of sealed body, the smallest a message takes in JSON
// ({"role":"user","content":""} is 29).
inline constexpr int64_t kMinBlindPartBytes = 16;
// The JSON around a chunk's text that every sealed chunk holds, {"seq":N,"text":""}, without N's digits.
inline constexpr size_t kChunkWrapperBytes = 18;

// More output than any honest answer (max_tokens of ~12 bytes each) is a provider flooding the
// coordinator's memory; it is dropped.
inline constexpr size_t kMaxAttemptBytes = 64u << 20;
inline constexpr int64_t kMaxLogprobEntries = proto::kMaxLogprobEntries;
inline constexpr size_t kMaxLogprobEntryBytes = proto::kMaxLogprobEntryBytes;
inline constexpr size_t kMaxAttemptLogprobsBytes = proto::kMaxAnswerLogprobsBytes;

// What the coordinator knows of a provider's identity and how its challenges went.
struct TrustState {
  std::vector<uint8_t> public_key;       // P-256 X ‖ Y; empty without a verified attestation
  attest::AttestationDocument document;  // as verified at registration
  std::string document_bytes;            // exactly as received and signed
  std::string signature;
  std::string replaces;  // the key this one rotated from, per its rotation statement; "" if none
  // Last written to provider_keys (first passed challenge, then daily), and whether a write is
  // under way.
  std::optional<net::Clock::Time> key_recorded_at;
  bool key_recording = false;
  attest::IssuedChallenge open;              // the challenge awaiting an answer; nonce empty when none
  std::optional<ModelChallenge> open_model;  // the model chunks it asked for, if any
  // Models with a root to prove whose chunks this session has not proven yet: not served until
  // they are (asked first, one challenge after another).
  std::set<std::string> unproven;
  size_t next_model = 0;  // proven models are challenged in turn; a model is asked until it passes
  std::optional<net::Clock::Time> model_proven_at;  // the last model proof that passed
  // The provider's own proof budget as this session has spent it (proto::kProofChunkBurst, then
  // kProofChunksPerSecond): chunks are asked only when it covers them, so an honest provider is
  // never asked for more than it proves, however many models it has.
  net::TokenBucket proof_budget{proto::kProofChunkBurst, proto::kProofChunksPerSecond};
  // The challenge loop's timer: an answer wakes the loop early, a drop or distrust ends it.
  std::shared_ptr<net::Timer> challenge_timer;
  int consecutive_failures = 0;
  uint64_t passed = 0;
  uint64_t failed = 0;
  std::string last_pass_at;        // RFC 3339, for the attestation endpoint
  net::Clock::Time fresh_until{};  // routable above `none` until then
  std::string reason;              // why the level is what it is
  // The hardware level (gateway/hardware_proof.cc): the TPM evidence sent at registration, the
  // credential the open activation must return (empty when none is open), and where it stands.
  std::vector<uint8_t> ek_certificate;
  std::vector<uint8_t> key_public;
  std::vector<uint8_t> expected_credential;
  std::string hardware_reason;  // empty: no TPM evidence was sent
};

class ProviderSession {
 public:
  ProviderSession(std::string id, std::shared_ptr<ProviderLink> link, net::Clock::Time connected_at)
      : id_(std::move(id)), link_(std::move(link)), connected_at_(connected_at), last_seen_(connected_at) {}

  const std::string& id() const { return id_; }
  bool is_open() const { return link_->is_open(); }
  std::string remote() const { return link_->remote(); }
  // Registered and not dropped: the only sessions that count.
  bool active() const { return registered_ && !dropped_; }
  bool registered() const { return registered_; }
  bool dropped() const { return dropped_; }
  const proto::Register& info() const { return info_; }
  const std::string& account_id() const { return account_id_; }  // paid for its work; empty = none
  const crypto::PublicKey& encryption_key() const { return encryption_key_; }
  TrustLevel trust() const { return trust_; }
  const TrustState& trust_state() const { return trust_state_; }
  net::Clock::Time connected_at() const { return connected_at_; }
  net::Clock::Time last_seen() const { return last_seen_; }
  const proto::Heartbeat& heartbeat() const { return heartbeat_; }
  size_t in_flight() const { return in_flight_.size(); }
  // The largest frame it reads (announced in register); nothing larger is sent to it.
  size_t max_frame_bytes() const { return info_.max_frame_bytes; }
  // proto::kFeatureBit* of what it announced at registration.
  uint32_t features() const { return features_; }
  bool has_attempt(const std::string& request_id) const { return in_flight_.count(request_id) != 0; }
  // Frames for attempts not in flight: a bucket of kLateFrameBurst, refilled at kLateFramesPerSecond.
  static constexpr double kLateFrameBurst = 10'000;
  static constexpr double kLateFramesPerSecond = 1'000;
  // Takes one late frame from the budget; false when it is spent.
  bool take_late_frame(net::Clock::Time now);
  // Measured on this provider's own answers; 0 until one finished.
  double observed_decode_tps() const { return observed_decode_tps_; }

  bool serves(const std::string& model) const;  // registered with it
  // Not waiting to prove it holds the model's file (a challenged provider gets no request for a
  // model before that: requests for it wait in the queue meanwhile).
  bool proven(const std::string& model) const { return trust_state_.unproven.count(model) == 0; }
  static constexpr double kLogBurst = 20;
  static constexpr std::chrono::seconds kLogRefill{3};
  // Whether a log line caused by this provider's messages may be written now (at most kLogBurst
  // at once, then one per kLogRefill); returns how many were suppressed before it through `*suppressed`.
  bool may_log(net::Clock::Time now, uint64_t* suppressed);
  // Tokens the provider still has to produce for requests in flight (their max_tokens).
  int64_t queued_tokens() const;
  // Room for a request of `sequences` choices (n): each takes one of the provider's concurrent
  // sequences. An idle provider takes any request, however many choices it has.
  bool has_capacity(int sequences = 1) const {
    return in_flight_.empty() || sequences_in_flight() + sequences <= info_.max_concurrency;
  }
  int sequences_in_flight() const;
  // Trusted enough for requests now: at or above `min_trust`, and above `none` only with a
  // recently passed challenge; and not draining before a stop.
  bool routable(TrustLevel min_trust, net::Clock::Time now) const {
    return trust_ >= min_trust && (min_trust == TrustLevel::none || now < trust_state_.fresh_until) && !draining_;
  }
  // Stopping: finishing its requests, taking no new ones. Not idle, not to be evicted as
  // untrusted, for at most kMaxDrain.
  bool draining() const { return draining_; }
  static constexpr std::chrono::hours kMaxDrain{1};

 private:
  friend class ProviderGateway;

  std::string id_;
  std::shared_ptr<ProviderLink> link_;
  bool registering_ = false;  // register received, its store lookups under way
  bool registered_ = false;
  bool dropped_ = false;
  proto::Register info_;
  uint32_t features_ = 0;  // info_.features as bits, read on every routing decision
  std::string account_id_;
  crypto::PublicKey encryption_key_{};
  TrustLevel trust_ = TrustLevel::none;
  TrustState trust_state_;
  net::Clock::Time connected_at_;
  net::Clock::Time last_seen_;
  bool draining_ = false;
  net::Clock::Time draining_since_{};
  net::Clock::Time last_routable_ = connected_at_;  // seen routable at min_trust, as of the last eviction pass
  std::shared_ptr<net::Timer> register_timer_;      // until it registers or is dropped
  proto::Heartbeat heartbeat_;
  std::map<std::string, std::shared_ptr<Attempt>> in_flight_;
  net::TokenBucket late_frames_{kLateFrameBurst, kLateFramesPerSecond};
  // Log lines the provider's own messages may cause: a bucket of kLogBurst, one back every
  // kLogRefill; what is suppressed is counted and reported with the next line.
  net::TokenBucket log_budget_{kLogBurst, 1.0 / std::chrono::duration<double>(kLogRefill).count()};
  uint64_t log_suppressed_ = 0;
  double observed_decode_tps_ = 0;
};

}  // namespace darkbloom::coordinator
