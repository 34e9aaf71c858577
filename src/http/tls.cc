#include "http/tls.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cstdio>

namespace darkbloom::http {
namespace {

// Mozilla's "intermediate" TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only. TLS 1.3 keeps
// OpenSSL's defaults (all of its suites are AEAD and forward-secret).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The reason OpenSSL gives for the last failure, without its error-queue codes.
std::string openssl_reason(const boost::system::error_code& error) {
  std::string reason = error.message();
  if (const unsigned long code = ERR_peek_last_error(); code != 0) {
    if (const char* text = ERR_reason_error_string(code); text != nullptr) reason = text;
  }
  ERR_clear_error();
  return reason;
}

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};
struct X509Deleter {
  void operator()(X509* certificate) const { X509_free(certificate); }
};

std::string asn1_time_text(const ASN1_TIME* time) {
  struct tm parts {};
  if (ASN1_TIME_to_tm(time, &parts) != 1) return "?";
  return fmt::format("{:04}-{:02}-{:02}", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday);
}

}  // namespace

Result<std::shared_ptr<ssl::context>> make_server_tls_context(const std::string& cert_file,
                                                              const std::string& key_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    return make_error(Errc::internal, "OpenSSL accepts none of the TLS 1.2 cipher suites");
  }
  boost::system::error_code error;
  context->use_certificate_chain_file(cert_file, error);
  if (error) {
    return make_error(Errc::invalid_argument, fmt::format("--tls-cert {}: not a readable PEM certificate chain ({})",
                                                          cert_file, openssl_reason(error)));
  }
  context->use_private_key_file(key_file, ssl::context::pem, error);
  if (error) {
    return make_error(Errc::invalid_argument, fmt::format("--tls-key {}: not a readable PEM private key ({})", key_file,
                                                          openssl_reason(error)));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument,
                      fmt::format("--tls-key {} does not match the certificate in --tls-cert {}", key_file, cert_file));
  }
  return context;
}

std::string describe_certificate_file(const std::string& cert_file) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(cert_file.c_str(), "r"));
  if (!file) return "unreadable";
  std::unique_ptr<X509, X509Deleter> certificate(PEM_read_X509(file.get(), nullptr, nullptr, nullptr));
  if (!certificate) return "not PEM";
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(certificate.get()), subject, sizeof(subject));
  return fmt::format("{} (valid until {})", subject, asn1_time_text(X509_get0_notAfter(certificate.get())));
}

Result<std::string> parse_certificate_pin(std::string_view text) {
  std::string hex;
  for (const char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return make_error(Errc::invalid_argument,
                        fmt::format("certificate pin '{}' is not hex (64 digits, ':' between bytes allowed)", text));
    }
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 64) {
    return make_error(Errc::invalid_argument,
                      fmt::format("certificate pin has {} hex digits; a SHA-256 has 64", hex.size()));
  }
  return hex;
}

awaitable<Result<Transport>> client_tls_handshake(beast::tcp_stream tcp, const std::string& host,
                                                  const ClientTls& options) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_verify_mode(ssl::verify_peer);
  boost::system::error_code error;
  if (options.ca_file.empty()) {
    context->set_default_verify_paths(error);
  } else {
    context->load_verify_file(options.ca_file, error);
  }
  if (error) {
    co_return make_error(
        Errc::invalid_argument,
        fmt::format("cannot load the CA {}: {}",
                    options.ca_file.empty() ? std::string("system store") : options.ca_file, openssl_reason(error)));
  }
  Transport transport(std::move(tcp), context);
  SSL* ssl = transport.tls()->native_handle();
  error_code address_error;
  asio::ip::make_address(host, address_error);
  const bool is_address = !address_error;
  // The name to verify: a DNS name (with SNI), or an IP address against the certificate's IP SANs.
  // Fails closed: a name OpenSSL cannot take (a scoped IPv6 address) would leave none checked.
  const bool name_set = is_address
                            ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1
                            : SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 && SSL_set1_host(ssl, host.c_str()) == 1;
  if (!name_set) {
    ERR_clear_error();
    co_return make_error(Errc::invalid_argument,
                         fmt::format("TLS: cannot check a certificate against the name '{}'; use a DNS name or a "
                                     "plain IP address",
                                     host));
  }
  auto [handshake_error] = co_await transport.tls()->async_handshake(ssl::stream_base::client, as_tuple_awaitable);
  if (handshake_error) {
    const long verdict = SSL_get_verify_result(ssl);
    if (verdict != X509_V_OK) {
      ERR_clear_error();
      co_return make_error(Errc::permission_denied, fmt::format("TLS: the certificate of {} is refused: {}", host,
                                                                X509_verify_cert_error_string(verdict)));
    }
    co_return make_error(Errc::unavailable,
                         fmt::format("TLS handshake with {} failed: {}", host, openssl_reason(handshake_error)));
  }
  if (!options.pin_sha256.empty()) {
    std::unique_ptr<X509, X509Deleter> certificate(SSL_get1_peer_certificate(ssl));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (!certificate || X509_digest(certificate.get(), EVP_sha256(), digest, &length) != 1) {
      co_return make_error(Errc::permission_denied, fmt::format("TLS: {} sent no certificate to pin", host));
    }
    std::string actual;
    for (unsigned int i = 0; i < length; ++i) actual += fmt::format("{:02x}", digest[i]);
    if (actual != options.pin_sha256) {
      co_return make_error(Errc::permission_denied,
                           fmt::format("TLS: the certificate of {} does not match the pinned SHA-256 "
                                       "(--coordinator-cert-sha256); it is {}",
                                       host, actual));
    }
  }
  co_return transport;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  error_code error;
  const auto address = asio::ip::make_address(host, error);
  if (error) return false;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

}  // namespace darkbloom::http
