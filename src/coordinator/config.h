// Everything an operator can set on a coordinator, with its default, in one place. The flags of
// darkbloom-coordinator (src/apps/coordinator/flags.cc) bind to these fields and show these
// defaults; nothing else writes a default again.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/auth/rate_limiter.h"
#include "coordinator/billing/ledger.h"
#include "coordinator/trust/trust_level.h"
#include "http/server.h"

namespace darkbloom::coordinator {

struct CoordinatorConfig {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 8080;
  std::string data_dir = "darkbloom-data";
  // HTTPS and WSS on the listening port when both are set; without them plaintext, which is
  // allowed off loopback only with allow_plaintext (a TLS proxy in front).
  std::string tls_cert_file;
  std::string tls_key_file;
  bool allow_plaintext = false;
  // A second, plain-HTTP listener answering only GET /metrics without a token (empty: none; then
  // /metrics on the main port needs the admin token).
  std::string metrics_listen_host;
  uint16_t metrics_listen_port = 0;
  std::string admin_token;   // empty = admin API disabled
  std::string database_url;  // PostgreSQL; empty = SQLite in data_dir
  BillingOptions billing;
  std::chrono::milliseconds ledger_flush_interval{10};  // group commit period of settlements
  std::chrono::seconds ledger_release_interval{5};      // how often idle allowances are looked for
  TrustLevel min_trust = TrustLevel::self_signed;
  std::chrono::milliseconds challenge_interval{300'000};  // between challenges to each provider
  std::chrono::milliseconds challenge_timeout{30'000};    // to answer one
  // A provider is routable above `none` until this long after its last passed challenge beyond
  // the interval (5 min + 60 s = the 6 minutes of SPEC §4).
  std::chrono::milliseconds challenge_grace{60'000};
  // Chunks of a model file each challenge asks for, with their Merkle paths (1 MiB each on the
  // wire; 0: no model challenges). See trust/model_proof.h.
  size_t model_challenge_chunks = 2;
  // A provider's proven models are asked again at most this often (a model not yet proven is asked
  // at once). Providers prove one chunk per 10 s beyond a burst of 16 (proto::kProofChunksPerSecond),
  // so chunks / interval must stay within that.
  std::chrono::milliseconds model_challenge_interval{60'000};
  // The hardware level (attest/hardware_policy.h): CA certificates (PEM files) an EK certificate
  // must chain to, and the release key (PEM) whose PolicyAuthorize a TPM key must carry. Both, or
  // neither (then no provider is `hardware`).
  std::vector<std::string> tpm_ek_ca;
  std::string tpm_release_key;
  std::chrono::seconds attestation_max_skew{300};  // allowed distance of a document's timestamp
  size_t queue_depth = 10;                         // requests waiting per model
  std::chrono::milliseconds queue_wait{120'000};   // longest wait in the queue
  int max_attempts = 3;                            // providers tried per request
  std::chrono::milliseconds first_chunk_timeout{10'000};
  std::chrono::milliseconds heartbeat_timeout{90'000};   // a provider silent this long is evicted
  std::chrono::milliseconds inference_timeout{600'000};  // longest silence between chunks once streaming
  RateLimits rate_limits;                                // per account, unless an admin set its own (0 = unlimited)
  int64_t max_admin_failures = 10;  // failed admin-token attempts per address before a throttle; 0 = none
  int default_max_tokens = 8192;    // bound injected when a request has none
  size_t max_providers = 4096;      // WebSocket sessions at once
  // The registry's own defences (docs/network.md, Limits): a new session must register in time;
  // sessions that serve nothing yet (not registered, or not routable at min_trust) are capped, as
  // are sessions per source address and models per provider.
  std::chrono::milliseconds register_timeout{10'000};
  size_t max_untrusted_providers = 256;
  size_t max_providers_per_address = 32;
  size_t max_models_per_provider = 16;
  // Outside open mode, a registered provider not routable at min_trust (distrusted, or never
  // passing its challenges) this long is closed.
  std::chrono::milliseconds unroutable_timeout{120'000};
  std::chrono::hours provider_key_expiry{24 * 90};  // a key unused this long is forgotten
  http::ServerLimits limits;
  // Workers that parse and seal large bodies off the network thread, and how many such jobs may
  // wait or run at once (beyond: 503 with Retry-After).
  size_t offload_threads = 1;
  size_t offload_max_waiting = 16;

  // How often silent providers are looked for: a third of the heartbeat timeout, within 0.1–30 s.
  std::chrono::milliseconds eviction_interval() const {
    return std::clamp(heartbeat_timeout / 3, std::chrono::milliseconds(100), std::chrono::milliseconds(30'000));
  }
};

}  // namespace darkbloom::coordinator
