// One consumer request on its way through the coordinator: what the client asked (parsed, and
// sealed to each provider in turn), what was reserved for it, where it is waiting or running,
// and how long each phase took (X-Timing).
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/api/request_timing.h"
#include "coordinator/billing/ledger.h"
#include "coordinator/gateway/provider_session.h"
#include "coordinator/routing/router.h"
#include "crypto/secure_bytes.h"
#include "proto/blind.h"
#include "proto/openai.h"

namespace darkbloom::coordinator {

// Bodies of this size and more are parsed, encoded and sealed on the offload workers; smaller ones
// on the network thread, where they take less time than the hand-over would.
inline constexpr size_t kOffloadBodyBytes = 64 * 1024;

struct PendingRequest {
  std::string public_id;            // "req_…", returned as X-Request-Id
  std::string account_id;           // the consumer's, from its API key
  proto::CompletionRequest parsed;  // a blind request's: only model, max_tokens, n and stream
  // A blind request (POST /v1/blind/completions): the copies sealed by the consumer's proxy, one
  // per candidate provider; `plaintext` stays empty. `candidates` are the copies' provider ids.
  std::optional<proto::BlindRequest> blind;
  std::set<std::string> candidates;
  std::string plaintext;   // the SealedRequest JSON; wiped when the request ends
  size_t frame_bytes = 0;  // of the inference_request that carries it, sealed
  int64_t body_bytes = 0;  // of the request as received: bounds the prompt tokens billed
  RequestTiming timing;
  std::vector<std::pair<std::string, std::string>> rate_headers;  // x-ratelimit-*, on the provider's answer
  int max_tokens = 0;
  int64_t created = 0;  // unix seconds
  bool client_gone = false;
  std::shared_ptr<Router::Waiter> waiter;  // while queued
  std::shared_ptr<Attempt> attempt;        // while a provider has it
  std::optional<Reservation> reservation;  // until settled or refunded
  // Content chunks streamed to the client, each at least one byte: what a failure mid-stream costs.
  int64_t delivered_chunks = 0;

  PendingRequest() = default;
  PendingRequest(const PendingRequest&) = delete;
  PendingRequest& operator=(const PendingRequest&) = delete;
  ~PendingRequest() { crypto::wipe_memory(plaintext.data(), plaintext.size()); }
};

}  // namespace darkbloom::coordinator
