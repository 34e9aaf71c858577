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

class ClientPool;

// Lets a caller give up on a request while ClientPool::send() waits for its answer (the client it
// serves left): the connection is closed, send() returns an error, and the server sees the
// request's client leave. Network thread only.
class ClientAbort {
 public:
  void abort();
  bool aborted() const { return aborted_; }
  // send() marks the connection it is waiting on (null when it stops waiting).
  void waiting_on(Transport* transport) { waiting_ = transport; }

 private:
  bool aborted_ = false;
  Transport* waiting_ = nullptr;  // the connection send() is using, while it does
};

// A response being read. Its body comes in pieces as the server sends them. A response read to
// its end on a connection the server keeps open gives the connection back to its pool.
class ClientResponse {
 public:
  ClientResponse(std::unique_ptr<Transport> transport, beast::flat_buffer buffer,
                 std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser, std::weak_ptr<ClientPool> pool);
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
  std::unique_ptr<Transport> transport_;  // null once given back; kept (closed) until destroyed
  bool closed_ = false;                   // a read may still be pending on it: never freed here
  beast::flat_buffer buffer_;
  std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser_;
  std::weak_ptr<ClientPool> pool_;
};

// Requests to one server, over connections kept open between them (HTTP/1.1 keep-alive): a new
// TCP connection, and over TLS a handshake, per request would cost each one a round trip or more.
// A connection idle for longer than `max_idle_time` is closed rather than used (servers close
// idle ones: the coordinator after 75 s). Network thread only.
class ClientPool : public std::enable_shared_from_this<ClientPool> {
 public:
  static std::shared_ptr<ClientPool> create(std::string host, uint16_t port, ClientTls tls,
                                            std::chrono::milliseconds connect_timeout, size_t max_idle = 16,
                                            std::chrono::seconds max_idle_time = std::chrono::seconds(20));
  ClientPool(std::string host, uint16_t port, ClientTls tls, std::chrono::milliseconds connect_timeout, size_t max_idle,
             std::chrono::seconds max_idle_time);

  // Sends `request` and reads the response's status line and headers within `timeout` (a new
  // connection within connect_timeout first, when no kept one is open). A kept connection the
  // server has closed is seen before anything is written on it; a request is never sent twice,
  // except a GET that a kept connection lost before any answer.
  awaitable<Result<std::unique_ptr<ClientResponse>>> send(ClientRequest request, std::chrono::milliseconds timeout,
                                                          std::shared_ptr<ClientAbort> abort = nullptr);
  // A connection whose response was read to its end.
  void give_back(std::unique_ptr<Transport> transport);
  size_t idle() const { return idle_.size(); }

 private:
  struct Idle {
    std::unique_ptr<Transport> transport;
    std::chrono::steady_clock::time_point since;
  };
  std::string host_;
  uint16_t port_;
  ClientTls tls_;
  std::chrono::milliseconds connect_timeout_;
  size_t max_idle_;
  std::chrono::seconds max_idle_time_;
  std::vector<Idle> idle_;  // newest last
};

// One request on a connection of its own (closed after the response).
awaitable<Result<std::unique_ptr<ClientResponse>>> send_request(const std::string& host, uint16_t port,
                                                                const ClientTls& tls, const ClientRequest& request,
                                                                std::chrono::milliseconds timeout);

}  // namespace darkbloom::http
