// An HTTP/1.1 server on Boost.Beast with C++20 coroutines: one coroutine per connection reading
// requests top to bottom, keep-alive, header and body limits, timeouts, a router, Server-Sent
// Events written one flushed chunk per event, client-disconnect notification, and WebSocket
// upgrades. Protocol-level errors (404, 413, ...) come out in the OpenAI error shape.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "http/beast.h"
#include "http/transport.h"
#include "http/websocket.h"
#include "net/shared_flag.h"
#include "proto/answer_stream.h"
#include "proto/openai.h"

namespace darkbloom::http {

struct ServerLimits {
  size_t header_bytes = 16 * 1024;
  size_t body_bytes = proto::kDefaultMaxBodyBytes;
  std::chrono::seconds read_timeout{30};   // to receive a whole request once it started
  std::chrono::seconds idle_timeout{75};   // keep-alive connection with no request
  std::chrono::seconds write_timeout{60};  // one write (a response or an SSE event) to a slow client
  std::chrono::seconds tls_handshake_timeout{10};
  size_t max_connections = 4096;  // HTTP and WebSocket connections together; beyond: closed at accept
  // From one IP address (an IPv6 /64); beyond: answered 429 with Retry-After, then closed.
  size_t max_connections_per_address = 256;
  WebSocketOptions websocket;
};

// Counts open connections, in all and per address. A connection holds its Slot for as long as it
// is open, through a WebSocket upgrade too. Network thread only.
class ConnectionCounter {
 public:
  class Slot {
   public:
    Slot(std::shared_ptr<ConnectionCounter> counter, std::string address);
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    std::shared_ptr<ConnectionCounter> counter_;
    std::string address_;
  };

  size_t total() const { return total_; }
  size_t from(const std::string& address) const;

 private:
  size_t total_ = 0;
  std::unordered_map<std::string, size_t> by_address_;
};

// What per-address limits count for a remote IP address: the address itself, or the /64 of an
// IPv6 one ("2001:db8::/64"); an IPv4-mapped IPv6 address counts as its IPv4 address.
std::string address_key(const asio::ip::address& address);
// The same for a "HOST:PORT" remote as Exchange::remote_address() writes it ("[v6]:PORT" too).
std::string address_key(std::string_view remote);

using Request = bhttp::request<bhttp::string_body>;
using Response = bhttp::response<bhttp::string_body>;
using Headers = std::vector<std::pair<std::string, std::string>>;

class Exchange;
using Handler = std::function<awaitable<void>(Exchange&)>;

// One request and the means to answer it. Exactly one of respond(), an SSE stream or a WebSocket
// takes the answer; a handler that does none gets a 500.
class Exchange {
 public:
  Exchange(std::shared_ptr<Transport> stream, Request request, const ServerLimits& limits,
           std::shared_ptr<ConnectionCounter::Slot> slot = nullptr);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const Request& request() const { return request_; }
  std::string_view path() const;   // target without the query string
  std::string_view query() const;  // after '?', may be empty
  std::string_view header(std::string_view name) const;
  std::string remote_address() const;

  awaitable<void> respond(Response response);
  // JSON body with Content-Type application/json; extra headers as name/value pairs.
  awaitable<void> respond_json(unsigned status, std::string body,
                               const std::vector<std::pair<std::string, std::string>>& headers = {});
  awaitable<void> respond_error(const proto::ApiError& error,
                                const std::vector<std::pair<std::string, std::string>>& headers = {});

  // Server-Sent Events: status 200, text/event-stream, chunked; each send_event writes and flushes
  // one "data: ...\n\n" event. Returns false once the client is gone.
  awaitable<bool> start_events(const std::vector<std::pair<std::string, std::string>>& headers = {});
  awaitable<bool> send_event(std::string_view data);
  // An event with a name ("event: <name>" before its data; none when empty).
  awaitable<bool> send_event(std::string_view name, std::string_view data);
  awaitable<void> end_events();

  // Calls `callback` (on the connection's executor) when the client closes its side while the
  // handler is still working. Only one callback; set it before waiting on anything slow.
  void on_client_gone(std::function<void()> callback);
  bool client_gone() const { return static_cast<bool>(client_gone_); }

  bool is_websocket_upgrade() const;
  // Accepts the upgrade and hands over the connection.
  awaitable<Result<std::shared_ptr<WebSocket>>> accept_websocket();

  bool answered() const { return answered_; }
  // The status sent (101 for a WebSocket upgrade), 0 before any.
  unsigned status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  bool taken_over() const { return taken_over_; }

 private:
  void start_watching();
  void stop_watching();

  std::shared_ptr<Transport> stream_;
  Request request_;
  const ServerLimits& limits_;
  std::shared_ptr<ConnectionCounter::Slot> slot_;  // handed to the WebSocket on an upgrade
  bool answered_ = false;
  unsigned status_ = 0;
  bool keep_alive_ = true;
  bool streaming_ = false;
  bool taken_over_ = false;
  net::SharedFlag client_gone_{false};
  std::shared_ptr<std::function<void()>> gone_callback_;
  net::SharedFlag watch_stopped_{false};
  bool watching_ = false;
};

// Sends `events` in order while the client takes them (false once it is gone), wiping each
// event's data after it went (answer text). The relays of the coordinator, the proxy and
// `darkbloom serve` all stream their AnswerWriter's events this way.
awaitable<bool> send_events(Exchange& exchange, std::vector<proto::StreamEvent> events);

class Router {
 public:
  void add(bhttp::verb method, std::string path, Handler handler);
  // Every path that starts with `prefix` and goes on (e.g. "/v1/models/" for /v1/models/{id});
  // exact paths win. Such a route is named "<prefix>*" (metrics labels stay bounded).
  void add_prefix(bhttp::verb method, std::string prefix, Handler handler);
  // The handler for a request, or nullptr with `*error` set (404 unknown path, 405 wrong method).
  // `route`, when given, receives the matched route's name.
  const Handler* find(bhttp::verb method, std::string_view path, proto::ApiError* error,
                      std::string* route = nullptr) const;

 private:
  using Handlers = std::vector<std::pair<bhttp::verb, Handler>>;
  std::unordered_map<std::string, Handlers> routes_;
  std::vector<std::pair<std::string, Handlers>> prefixes_;
};

// "%2F" → "/" and so on; a malformed escape stays as it is.
std::string percent_decode(std::string_view text);

// Looks at a request's headers before its body is read: a refusal (with its headers) is answered
// at once and the body never read, so an unauthenticated client cannot make the server read and
// hold a large body. (Unknown routes and methods are refused before the body without it.)
// The address is the client's, as address_key() names it.
using HeaderCheck =
    std::function<awaitable<std::optional<std::pair<proto::ApiError, Headers>>>(const Request&, const std::string&)>;

class Server {
 public:
  Server(asio::any_io_executor executor, Router router, ServerLimits limits = {});
  ~Server();

  // Binds and starts accepting; returns the bound port (useful with port 0).
  Result<uint16_t> listen(const std::string& host, uint16_t port);
  void set_header_check(HeaderCheck check) { header_check_ = std::move(check); }
  // Told of every answered request: its route (the path of a known route, else "unmatched") and
  // status, refusals before the body included. Network thread.
  using Observer = std::function<void(std::string_view route, unsigned status)>;
  void set_observer(Observer observer) { observer_ = std::move(observer); }
  // Serves TLS with `context` on connections accepted from now on (nullptr: plaintext).
  // Connections open already keep the context they started with: a certificate reload
  // drops nobody.
  void set_tls(std::shared_ptr<ssl::context> context) { tls_ = std::move(context); }
  bool serves_tls() const { return tls_ != nullptr; }
  // Stops accepting and closes every open connection.
  void stop();
  // HTTP connections and WebSocket sessions open now.
  size_t open_connections() const { return counter_->total(); }
  // TLS handshakes that failed or timed out since start.
  uint64_t tls_handshake_failures() const { return tls_handshake_failures_; }

 private:
  awaitable<void> accept_loop();
  awaitable<void> serve_connection(std::shared_ptr<Transport> stream, std::shared_ptr<ConnectionCounter::Slot> slot,
                                   bool over_address_limit);
  // One request read whole: headers, the checks before the body, 100 Continue, the body. No
  // request: the connection ends; `closed` when an error answer was sent and it is closed already.
  struct ReadOutcome {
    std::optional<Request> request;
    bool closed = false;
  };
  awaitable<ReadOutcome> read_request(Transport& stream, beast::flat_buffer& buffer, bool first);
  enum class AfterRequest { next, close, taken_over };
  // Routes and answers one request; what the connection does next.
  awaitable<AfterRequest> handle_request(Exchange& exchange);
  // Reads the request's headers and answers it 429 (too many connections from its address).
  awaitable<void> refuse_connection(Transport& stream);
  void observe(bhttp::verb method, std::string_view target, unsigned status);
  // Runs the header check; true when it refused (and answered) the request.
  awaitable<bool> refused_before_body(Transport& stream, const Request& request, unsigned version);

  asio::any_io_executor executor_;
  Router router_;
  ServerLimits limits_;
  tcp::acceptor acceptor_;
  std::unordered_set<std::shared_ptr<Transport>> connections_;
  std::shared_ptr<ConnectionCounter> counter_ = std::make_shared<ConnectionCounter>();
  size_t refusing_ = 0;  // 429s for connections over their address's limit, in progress
  HeaderCheck header_check_;
  Observer observer_;
  std::shared_ptr<ssl::context> tls_;
  uint64_t tls_handshake_failures_ = 0;
  net::SharedFlag alive_{true};
};

// "HOST:PORT" → parts; the host may be a name, IPv4 or [IPv6].
Result<std::pair<std::string, uint16_t>> parse_host_port(std::string_view text);

}  // namespace darkbloom::http
