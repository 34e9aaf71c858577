// `darkbloom proxy`: a plain OpenAI endpoint on the consumer's own machine whose requests the
// coordinator cannot read (docs/trust.md, "Requests the coordinator cannot read").
//
// For each request it reads the coordinator's public attestation listing (cached for a few
// seconds), verifies the candidates' attestations itself (and for `hardware` their EK chain and
// key area), seals the body separately to up to three of them, each with a fresh key pair, and
// posts the copies to the coordinator's blind endpoint with only the model, max_tokens, n, the
// body's size and the candidate ids in clear. It opens the sealed chunks of the provider that
// answered, streams them to its client as OpenAI chunks, and checks that provider's receipt.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "attest/hardware_policy.h"
#include "crypto/sealed_box.h"
#include "http/client.h"
#include "http/server.h"
#include "net/clock.h"
#include "net/wait_list.h"
#include "proto/blind.h"

namespace darkbloom::provider {

struct ProxyOptions {
  std::string coordinator_host;
  uint16_t coordinator_port = 0;
  http::ClientTls tls;
  std::string api_key;  // the consumer's, sent to the coordinator only
  bool require_hardware = false;
  std::optional<attest::HardwarePolicy> hardware;  // needed with require_hardware
  std::set<std::string> allowed_binaries;          // hex SHA-256 of provider binaries; empty: any
  int default_max_tokens = 8192;                   // sent when a request sets none (it must be in clear)
  size_t max_copies = proto::kMaxBlindCopies;
  // The coordinator's --max-body-bytes: a large request is sealed for fewer providers so that
  // its copies fit, and refused (413) when even one does not.
  size_t coordinator_body_bytes = proto::kDefaultMaxBodyBytes;
  std::chrono::milliseconds listing_max_age{5000};
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds answer_timeout{300000};  // for the first chunk, and between chunks
  http::ServerLimits limits;
};

// A provider of the listing as this proxy verified it, and what it seals to.
struct VerifiedProvider {
  proto::ProviderAttestation entry;  // the listing's entry it was verified from
  std::vector<uint8_t> public_key;   // P-256 X ‖ Y: the receipt's key
  std::string public_key_base64;
  crypto::PublicKey encryption_key{};
  std::string problem;  // why it cannot be used ("" when it can)
};

class SealingProxy {
 public:
  SealingProxy(net::asio::any_io_executor executor, ProxyOptions options);

  Result<uint16_t> listen(const std::string& host, uint16_t port) { return server_.listen(host, port); }
  void stop() { server_.stop(); }

 private:
  http::Router routes();
  net::awaitable<void> handle_completion(http::Exchange& exchange, proto::Endpoint endpoint);
  net::awaitable<void> handle_models(http::Exchange& exchange);
  using Listing = std::vector<proto::ProviderAttestation>;
  // The listing, read again when older than listing_max_age; one read at a time, the requests
  // that need it meanwhile wait for that one.
  net::awaitable<Result<std::shared_ptr<const Listing>>> listing();
  net::awaitable<Result<std::shared_ptr<const Listing>>> read_listing();
  // The verdict on one entry, kept while its signed bytes and evidence stay the same (a P-256
  // check, and for hardware an X.509 chain, not repeated at every read of the listing).
  std::shared_ptr<const VerifiedProvider> verified(const proto::ProviderAttestation& entry);
  VerifiedProvider verify(const proto::ProviderAttestation& entry) const;

  ProxyOptions options_;
  net::SystemClock clock_;
  std::shared_ptr<http::ClientPool> coordinator_;  // connections kept between requests
  std::shared_ptr<const Listing> listing_;
  std::optional<std::chrono::steady_clock::time_point> listing_at_;
  std::shared_ptr<net::WaitList> reading_;  // while a read of the listing is on its way
  std::string listing_error_;               // why the last read failed
  std::map<std::string, std::shared_ptr<const VerifiedProvider>> verified_;  // by provider id
  http::Server server_;
};

}  // namespace darkbloom::provider
