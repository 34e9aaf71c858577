#include "apps/darkbloom/coordinator_link.h"

#include <fmt/format.h>

#include "http/server.h"
#include "proto/provider_messages.h"

namespace darkbloom::apps {
namespace {

Result<CoordinatorUrl> parse_url(const std::string& url, std::string_view secure, std::string_view plain,
                                 bool with_path) {
  CoordinatorUrl parsed;
  parsed.secure_scheme = std::string(secure);
  std::string rest;
  if (url.starts_with(secure)) {
    parsed.tls = true;
    rest = url.substr(secure.size());
  } else if (url.starts_with(plain)) {
    rest = url.substr(plain.size());
  } else {
    return make_error(
        Errc::invalid_argument,
        fmt::format("--coordinator must be a {}HOST:PORT or {}HOST:PORT URL (got '{}')", secure, plain, url));
  }
  parsed.path = std::string(proto::kProviderSocketPath);
  if (const size_t slash = rest.find('/'); slash != std::string::npos) {
    if (slash + 1 < rest.size()) {
      if (!with_path) {
        return make_error(Errc::invalid_argument,
                          fmt::format("--coordinator takes no path, only {}HOST:PORT (got '{}')", secure, url));
      }
      parsed.path = rest.substr(slash);
    }
    rest = rest.substr(0, slash);
  }
  auto host_port = http::parse_host_port(rest);
  if (!host_port) return make_error(Errc::invalid_argument, "--coordinator: " + host_port.error().message);
  if (host_port->second == 0) return make_error(Errc::invalid_argument, "--coordinator: the port must not be 0");
  parsed.host = host_port->first;
  parsed.port = host_port->second;
  if (!with_path) parsed.path.clear();
  return parsed;
}

}  // namespace

Result<CoordinatorUrl> parse_coordinator_url(const std::string& url) {
  return parse_url(url, "wss://", "ws://", true);
}

Result<CoordinatorUrl> parse_coordinator_http_url(const std::string& url) {
  return parse_url(url, "https://", "http://", false);
}

Result<http::ClientTls> coordinator_tls(const CoordinatorUrl& url, const CoordinatorTlsArgs& args) {
  http::ClientTls tls;
  tls.enabled = url.tls;
  if (!url.tls) {
    if (!args.ca_file.empty() || !args.pin.empty()) {
      return make_error(
          Errc::invalid_argument,
          fmt::format("--coordinator-ca and --coordinator-cert-sha256 need a {} --coordinator", url.secure_scheme));
    }
    if (!args.allow_plaintext && !http::is_loopback_host(url.host)) {
      return make_error(Errc::invalid_argument,
                        fmt::format("--coordinator {} is plaintext to a non-loopback host: use {}, or give "
                                    "--allow-plaintext to send its key and every request in clear",
                                    args.url, url.secure_scheme));
    }
    return tls;
  }
  tls.ca_file = args.ca_file;
  if (!args.pin.empty()) {
    auto pin = http::parse_certificate_pin(args.pin);
    if (!pin) return pin.error().with_context("--coordinator-cert-sha256");
    tls.pin_sha256 = *pin;
  }
  return tls;
}

}  // namespace darkbloom::apps
