// The coordinator as `darkbloom start` (a WebSocket) and `darkbloom proxy` (HTTP) reach it: its
// URL, and the TLS rules both share (plaintext only to loopback unless allowed; a CA file or a
// certificate pin only over TLS).
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "http/tls.h"

namespace darkbloom::apps {

struct CoordinatorUrl {
  std::string host;
  uint16_t port = 0;
  std::string path;  // WebSocket URLs only
  bool tls = false;
  std::string secure_scheme;  // "wss://" or "https://", for messages
};

// ws[s]://HOST:PORT[/path] → its parts (the path defaults to the provider socket's).
Result<CoordinatorUrl> parse_coordinator_url(const std::string& url);
// http[s]://HOST:PORT[/] → its parts.
Result<CoordinatorUrl> parse_coordinator_http_url(const std::string& url);

struct CoordinatorTlsArgs {
  std::string url;      // as given, for the messages
  std::string ca_file;  // --coordinator-ca
  std::string pin;      // --coordinator-cert-sha256
  bool allow_plaintext = false;
};
Result<http::ClientTls> coordinator_tls(const CoordinatorUrl& url, const CoordinatorTlsArgs& args);

}  // namespace darkbloom::apps
