// The client side of plain HTTP/1.1, over TCP or TLS (tls.h): one request per connection, a
// response whose body is read piece by piece as it arrives (server-sent events) or whole. Used by
// the consumer's sealing proxy to talk to the coordinator; the WebSocket client shares connect().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "http/beast.h"
#include "http/tls.h"
#include "http/transport.h"

namespace darkbloom::http {

// A TCP connection to host:port (resolved), with TLS when `tls.enabled` (chain, host name and pin
// checked: client_tls_handshake). `timeout` bounds the whole of it. Errors name the step.
awaitable<Result<Transport>> connect(const std::string& host, uint16_t port, const ClientTls& tls,
                                     std::chrono::milliseconds timeout);

struct ClientRequest {
  bhttp::verb method = bhttp::verb::get;
  std::string target;  // "/v1/..."
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent with Content-Type: application/json when not empty
};

// A response being read. Its body comes in pieces as the server sends them.
class ClientResponse {
 public:
  ClientResponse(Transport transport, beast::flat_buffer buffer,
                 std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser);
  ~ClientResponse();

  unsigned status() const { return parser_->get().result_int(); }
  // The header's value, "" when absent.
  std::string header(std::string_view name) const;
  // The next piece of the body as it arrives, "" once it has ended. An error when the connection
  // fails, or nothing comes within `idle`.
  awaitable<Result<std::string>> next(std::chrono::milliseconds idle);
  // The rest of the body; an error beyond `max_bytes`.
  awaitable<Result<std::string>> read_all(size_t max_bytes, std::chrono::milliseconds idle);
  // Closes the connection (the server sees the client leave).
  void close();

 private:
  Transport transport_;
  beast::flat_buffer buffer_;
  std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser_;
};

// Sends `request` to host:port and reads the response's status line and headers within `timeout`.
awaitable<Result<std::unique_ptr<ClientResponse>>> send_request(const std::string& host, uint16_t port,
                                                                const ClientTls& tls, const ClientRequest& request,
                                                                std::chrono::milliseconds timeout);

}  // namespace darkbloom::http
