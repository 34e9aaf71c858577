// The providers connected to this coordinator: what each registered, its live state from
// heartbeats, and the request attempts it is working on. Everything here runs on the
// coordinator's single network thread, so there are no locks.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "coordinator/trust/attestation_verifier.h"
#include "crypto/sealed_box.h"
#include "http/async_queue.h"
#include "http/websocket.h"
#include "proto/provider_messages.h"

namespace darkbloom::coordinator {

enum class TrustLevel { none = 0, self_signed = 1, hardware = 2 };
const char* trust_level_name(TrustLevel level);
std::optional<TrustLevel> parse_trust_level(std::string_view text);

// What the provider side of one attempt reports, in order.
namespace provider_event {
struct Accepted {};
struct Text {
  std::string text;
};
struct Complete {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::string finish_reason;
  // The provider's receipt, verified against the relayed text; empty when it sent none.
  std::string receipt_request_id;
  std::string response_hash;
  std::string receipt_signature;
};
struct Failed {
  int status_code = 500;
  std::string message;
  std::string code;  // "context_length_exceeded": the request itself cannot be served anywhere
};
struct Gone {  // the provider disconnected or was dropped
  std::string reason;
};
struct ClientGone {};  // the consumer went away (pushed by the API handler itself)
}  // namespace provider_event

using ProviderEvent = std::variant<provider_event::Accepted, provider_event::Text, provider_event::Complete,
                                   provider_event::Failed, provider_event::Gone, provider_event::ClientGone>;

// One try of a request on one provider, under its own request id.
struct Attempt {
  std::string request_id;
  std::string model;
  int max_tokens = 0;
  std::shared_ptr<http::AsyncQueue<ProviderEvent>> events;
  std::unique_ptr<crypto::Channel> channel;  // opens the provider's sealed chunks
  uint64_t next_seq = 0;                     // the sequence number the next sealed chunk must carry
  size_t bytes_received = 0;                 // plaintext bytes so far, against kMaxAttemptBytes
  std::chrono::steady_clock::time_point first_chunk_at{};
  std::string text;  // the answer so far, to check the receipt against; wiped when it finishes
};

// More output than any honest answer (max_tokens of ~12 bytes each) is a provider flooding the
// coordinator's memory; it is dropped.
inline constexpr size_t kMaxAttemptBytes = 64u << 20;

// What the coordinator knows of a provider's identity and how its challenges went.
struct TrustState {
  std::vector<uint8_t> public_key;       // P-256 X ‖ Y; empty without a verified attestation
  attest::AttestationDocument document;  // as verified at registration
  std::string document_bytes;            // exactly as received and signed
  std::string signature;
  IssuedChallenge open;  // the challenge awaiting an answer; nonce empty when none
  // The challenge loop's timer: an answer wakes the loop early, a drop or distrust ends it.
  std::shared_ptr<http::net::steady_timer> challenge_timer;
  int consecutive_failures = 0;
  uint64_t passed = 0;
  uint64_t failed = 0;
  std::string last_pass_at;                             // RFC 3339, for the attestation endpoint
  std::chrono::steady_clock::time_point fresh_until{};  // routable above `none` until then
  std::string reason;                                   // why the level is what it is
};

struct ProviderSession {
  std::string id;
  std::shared_ptr<http::WebSocket> socket;
  bool registered = false;
  proto::Register info;
  std::string account_id;  // the operator's account, paid for this provider's work; empty = none
  crypto::PublicKey encryption_key{};
  TrustLevel trust = TrustLevel::none;
  TrustState trust_state;
  std::chrono::steady_clock::time_point connected_at;
  std::chrono::steady_clock::time_point last_seen;
  proto::Heartbeat heartbeat;
  std::map<std::string, std::shared_ptr<Attempt>> in_flight;
  bool dropped = false;
  double observed_decode_tps = 0;  // measured on this provider's own answers; 0 until one finished

  bool serves(const std::string& model) const;
  // Tokens the provider still has to produce for requests in flight (their max_tokens).
  int64_t queued_tokens() const;
  bool has_capacity() const { return static_cast<int>(in_flight.size()) < info.max_concurrency; }
  // Trusted enough for requests now: at or above `min_trust`, and above `none` only with a
  // recently passed challenge.
  bool routable(TrustLevel min_trust, std::chrono::steady_clock::time_point now) const {
    return trust >= min_trust && (min_trust == TrustLevel::none || now < trust_state.fresh_until);
  }
};

class ProviderRegistry {
 public:
  std::shared_ptr<ProviderSession> add(std::shared_ptr<http::WebSocket> socket);
  void remove(const std::string& id);
  std::shared_ptr<ProviderSession> find(const std::string& id) const;

  // Registered providers serving `model` that are routable at `min_trust` now.
  std::vector<std::shared_ptr<ProviderSession>> serving(const std::string& model, TrustLevel min_trust) const;
  // Registered providers serving `model` at or above `min_trust`, routable now or once their
  // next challenge passes (worth waiting for).
  std::vector<std::shared_ptr<ProviderSession>> trusted(const std::string& model, TrustLevel min_trust) const;
  // True when any registered provider, trusted or not, serves `model`.
  bool any_serving(const std::string& model) const;
  std::vector<std::shared_ptr<ProviderSession>> all() const;
  size_t size() const { return sessions_.size(); }
  size_t registered_count() const;

 private:
  std::unordered_map<std::string, std::shared_ptr<ProviderSession>> sessions_;
};

}  // namespace darkbloom::coordinator
