// TLS set-up for both ends (OpenSSL 3 through Boost.Asio): the server's context from a
// certificate chain and key, the client's handshake with chain, host-name and optional pin checks
// that fail with the reason in words, and the plaintext rule (loopback only, unless told).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"
#include "http/transport.h"

namespace darkbloom::http {

// A server context: TLS 1.2 and 1.3 only, forward-secret AEAD suites for 1.2, no renegotiation,
// no compression. Errors name the file and what is wrong with it (unreadable, not PEM, key not
// matching the certificate).
Result<std::shared_ptr<ssl::context>> make_server_tls_context(const std::string& cert_file,
                                                              const std::string& key_file);
// "CN=... (expires 2027-01-01)" of the first certificate in `cert_file`, for the log.
std::string describe_certificate_file(const std::string& cert_file);

struct ClientTls {
  bool enabled = false;
  std::string ca_file;     // PEM roots to trust; empty: the system store (Debian ca-certificates)
  std::string pin_sha256;  // SHA-256 of the server certificate (DER), hex, ':' allowed; empty: none
};

// Normalises a pin ("AB:CD:..." or "abcd...") to 64 lowercase hex digits, or says why not.
Result<std::string> parse_certificate_pin(std::string_view text);

// The TLS handshake as a client of `host` over `tcp` (connected, its expiry set by the caller):
// verifies the chain against the CA file or the system store, the host name (or IP address), then
// the pin. A failure names the cause ("certificate has expired", "Hostname mismatch", "does not
// match the pinned SHA-256 ...").
awaitable<Result<Transport>> client_tls_handshake(beast::tcp_stream tcp, const std::string& host,
                                                  const ClientTls& options);

// True for "localhost" and for loopback IP addresses (127.0.0.0/8, ::1): where plaintext is safe.
bool is_loopback_host(std::string_view host);

}  // namespace darkbloom::http
