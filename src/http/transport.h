// The byte stream under an HTTP connection or a WebSocket: plain TCP, or TLS over TCP, chosen at
// run time, so that the server, the WebSocket and their callers share one type for both. It
// offers what Beast's HTTP and WebSocket code needs (async_read_some, async_write_some, teardown)
// and the TCP stream underneath for timeouts and the socket.
#pragma once

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <memory>
#include <variant>

#include "http/beast.h"

namespace darkbloom::http {

namespace ssl = asio::ssl;

class Transport {
 public:
  using executor_type = beast::tcp_stream::executor_type;
  using TlsStream = beast::ssl_stream<beast::tcp_stream>;

  explicit Transport(beast::tcp_stream tcp) : stream_(std::move(tcp)) {}
  // TLS over `tcp`; the connection keeps `context` alive (a certificate reload makes a new one).
  Transport(beast::tcp_stream tcp, std::shared_ptr<ssl::context> context)
      : context_(std::move(context)), stream_(std::in_place_type<TlsStream>, std::move(tcp), *context_) {}

  // The moved-from side is left a closed plain stream, so whoever still holds it (the server's
  // list of connections, after a WebSocket upgrade) can close it safely.
  Transport(Transport&& other) : context_(std::move(other.context_)), stream_(std::move(other.stream_)) {
    other.stream_.emplace<beast::tcp_stream>(tcp().get_executor());
  }
  Transport& operator=(Transport&&) = delete;

  executor_type get_executor() { return tcp().get_executor(); }
  // The TCP stream at the bottom: its expiry bounds every operation, TLS ones too.
  beast::tcp_stream& tcp() {
    if (auto* tls = std::get_if<TlsStream>(&stream_)) return tls->next_layer();
    return std::get<beast::tcp_stream>(stream_);
  }
  // The TLS layer, or nullptr for plain TCP.
  TlsStream* tls() { return std::get_if<TlsStream>(&stream_); }
  bool is_tls() const { return std::holds_alternative<TlsStream>(stream_); }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& into) {
          std::visit([&](auto& stream) { stream.async_read_some(into, std::move(handler)); }, stream_);
        },
        token, buffers);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const ConstBuffers& from) {
          std::visit([&](auto& stream) { stream.async_write_some(from, std::move(handler)); }, stream_);
        },
        token, buffers);
  }

 private:
  std::shared_ptr<ssl::context> context_;  // before stream_: the TLS stream is built from it
  std::variant<beast::tcp_stream, TlsStream> stream_;
};

// Beast's customisation points for a WebSocket over a Transport (found by argument lookup): the
// closing handshake ends the layer underneath, and a timeout closes the socket.
inline void teardown(beast::role_type role, Transport& transport, error_code& error) {
  using beast::websocket::teardown;
  if (auto* tls = transport.tls()) {
    teardown(role, *tls, error);
  } else {
    teardown(role, transport.tcp(), error);
  }
}

template <class TeardownHandler>
void async_teardown(beast::role_type role, Transport& transport, TeardownHandler&& handler) {
  using beast::websocket::async_teardown;
  if (auto* tls = transport.tls()) {
    async_teardown(role, *tls, std::forward<TeardownHandler>(handler));
  } else {
    async_teardown(role, transport.tcp(), std::forward<TeardownHandler>(handler));
  }
}

inline void beast_close_socket(Transport& transport) {
  transport.tcp().close();
}

}  // namespace darkbloom::http
