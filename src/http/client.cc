#include "http/client.h"

#include <fmt/format.h>

#include <array>
#include <optional>

namespace darkbloom::http {

awaitable<Result<Transport>> connect(const std::string& host, uint16_t port, const ClientTls& tls,
                                     std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] = co_await resolver.async_resolve(host, std::to_string(port), as_tuple_awaitable);
  if (resolve_error) {
    co_return make_error(Errc::unavailable, fmt::format("cannot resolve {}: {}", host, resolve_error.message()));
  }
  beast::tcp_stream tcp_stream(executor);
  tcp_stream.expires_after(timeout);
  auto [connect_error, endpoint] = co_await tcp_stream.async_connect(endpoints, as_tuple_awaitable);
  if (connect_error) {
    co_return make_error(Errc::unavailable,
                         fmt::format("cannot connect to {}:{}: {}", host, port, connect_error.message()));
  }
  error_code ignored;
  tcp_stream.socket().set_option(tcp::no_delay(true), ignored);  // chunks are small and latency-bound
  tcp_stream.expires_after(timeout);                             // bounds the handshake below
  if (!tls.enabled) co_return Transport(std::move(tcp_stream));
  auto secured = co_await client_tls_handshake(std::move(tcp_stream), host, tls);
  if (!secured) co_return secured.error();
  co_return std::move(*secured);
}

ClientResponse::ClientResponse(Transport transport, beast::flat_buffer buffer,
                               std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser)
    : transport_(std::move(transport)), buffer_(std::move(buffer)), parser_(std::move(parser)) {}

ClientResponse::~ClientResponse() {
  close();
}

void ClientResponse::close() {
  error_code ignored;
  transport_.tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  transport_.tcp().close();
}

std::string ClientResponse::header(std::string_view name) const {
  const auto& fields = parser_->get();
  const auto it = fields.find(beast::string_view(name.data(), name.size()));
  return it == fields.end() ? std::string() : std::string(it->value());
}

awaitable<Result<std::string>> ClientResponse::next(std::chrono::milliseconds idle) {
  std::array<char, 16384> piece{};
  while (!parser_->is_done()) {
    auto& body = parser_->get().body();
    body.data = piece.data();
    body.size = piece.size();
    transport_.tcp().expires_after(idle);
    auto [error, bytes] = co_await bhttp::async_read_some(transport_, buffer_, *parser_, as_tuple_awaitable);
    (void)bytes;
    const size_t got = piece.size() - parser_->get().body().size;
    if (error && error != bhttp::error::need_buffer) {
      if (got > 0) co_return std::string(piece.data(), got);
      co_return make_error(Errc::unavailable, error == beast::error::timeout
                                                  ? fmt::format("nothing from the server for {} ms", idle.count())
                                                  : "the connection failed: " + error.message());
    }
    if (got > 0) co_return std::string(piece.data(), got);
  }
  co_return std::string();
}

awaitable<Result<std::string>> ClientResponse::read_all(size_t max_bytes, std::chrono::milliseconds idle) {
  std::string all;
  for (;;) {
    auto piece = co_await next(idle);
    if (!piece) co_return piece.error();
    if (piece->empty()) co_return all;
    all += *piece;
    if (all.size() > max_bytes) {
      co_return make_error(Errc::out_of_range, fmt::format("the response is larger than {} bytes", max_bytes));
    }
  }
}

awaitable<Result<std::unique_ptr<ClientResponse>>> send_request(const std::string& host, uint16_t port,
                                                                const ClientTls& tls, const ClientRequest& request,
                                                                std::chrono::milliseconds timeout) {
  auto transport = co_await connect(host, port, tls, timeout);
  if (!transport) co_return transport.error();
  bhttp::request<bhttp::string_body> message{request.method, request.target, 11};
  message.set(bhttp::field::host, fmt::format("{}:{}", host, port));
  message.set(bhttp::field::user_agent, "darkbloom");
  message.set(bhttp::field::connection, "close");
  for (const auto& [name, value] : request.headers) message.set(name, value);
  if (!request.body.empty()) {
    message.set(bhttp::field::content_type, "application/json");
    message.body() = request.body;
  }
  message.prepare_payload();
  transport->tcp().expires_after(timeout);
  auto [write_error, written] = co_await bhttp::async_write(*transport, message, as_tuple_awaitable);
  (void)written;
  if (write_error) {
    co_return make_error(Errc::unavailable,
                         fmt::format("sending to {}:{} failed: {}", host, port, write_error.message()));
  }
  beast::flat_buffer buffer;
  auto parser = std::make_unique<bhttp::response_parser<bhttp::buffer_body>>();
  parser->body_limit(boost::none);  // read_all and the caller bound what they keep
  parser->header_limit(64 * 1024);
  auto [read_error, read] = co_await bhttp::async_read_header(*transport, buffer, *parser, as_tuple_awaitable);
  (void)read;
  if (read_error) {
    co_return make_error(Errc::unavailable, fmt::format("no answer from {}:{}: {}", host, port,
                                                        read_error == beast::error::timeout
                                                            ? fmt::format("nothing within {} ms", timeout.count())
                                                            : read_error.message()));
  }
  co_return std::make_unique<ClientResponse>(std::move(*transport), std::move(buffer), std::move(parser));
}

}  // namespace darkbloom::http
