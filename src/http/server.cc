#include "http/server.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/socket.h>

#include <charconv>

#include "base/log.h"

namespace darkbloom::http {
namespace {

namespace websocket = beast::websocket;

// After an error response to a request whose body was not read (413, 431), keep reading and
// discarding for a moment so the client sees the response instead of a connection reset.
awaitable<void> lingering_close(Transport& stream) {
  error_code ignored;
  stream.tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.tcp().expires_after(std::chrono::seconds(2));
  std::array<char, 16384> sink;
  size_t drained = 0;
  while (drained < (64u << 20)) {
    auto [error, n] = co_await stream.tcp().async_read_some(asio::buffer(sink), as_tuple_awaitable);
    if (error) break;
    drained += n;
  }
  stream.tcp().socket().close(ignored);
}

Response json_response(unsigned status, unsigned version, std::string body) {
  Response response{static_cast<bhttp::status>(status), version};
  response.set(bhttp::field::server, "darkbloom");
  response.set(bhttp::field::content_type, "application/json");
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

proto::ApiError protocol_error(unsigned status, std::string type, std::string code, std::string message) {
  proto::ApiError error;
  error.status = static_cast<int>(status);
  error.type = std::move(type);
  error.code = std::move(code);
  error.message = std::move(message);
  return error;
}

// How long accepting pauses when the process is out of descriptors, rather than spinning.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
// 429 answers to connections over their address's limit in progress at once, per address and in
// all; beyond them such connections are closed at accept.
constexpr size_t kRefusalsPerAddress = 8;
constexpr size_t kRefusals = 64;

bool out_of_descriptors(const error_code& error) {
  return error == asio::error::no_descriptors || error.value() == ENFILE || error == asio::error::no_buffer_space ||
         error == asio::error::no_memory;
}

// True once the peer has closed its side (or the socket failed), even with unread bytes queued.
bool peer_hung_up(int descriptor) {
  pollfd watched{descriptor, static_cast<short>(POLLRDHUP), 0};
  return ::poll(&watched, 1, 0) > 0 && (watched.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Unread bytes keep the socket readable, so readiness says nothing more: the hang-up is looked for
// a few times a second until the watch stops.
void poll_for_hangup(std::shared_ptr<Transport> stream, net::SharedFlag stopped, net::SharedFlag gone,
                     std::shared_ptr<std::function<void()>> callback) {
  auto timer = std::make_shared<asio::steady_timer>(stream->get_executor(), std::chrono::milliseconds(250));
  timer->async_wait([timer, stream, stopped, gone, callback](error_code error) mutable {
    if (stopped || error) return;
    if (peer_hung_up(stream->tcp().socket().native_handle())) {
      gone.set(true);
      if (callback && *callback) (*callback)();
      return;
    }
    poll_for_hangup(std::move(stream), std::move(stopped), std::move(gone), std::move(callback));
  });
}

}  // namespace

// ---- ConnectionCounter ----

ConnectionCounter::Slot::Slot(std::shared_ptr<ConnectionCounter> counter, std::string address)
    : counter_(std::move(counter)), address_(std::move(address)) {
  counter_->total_ += 1;
  counter_->by_address_[address_] += 1;
}

ConnectionCounter::Slot::~Slot() {
  counter_->total_ -= 1;
  if (--counter_->by_address_[address_] == 0) counter_->by_address_.erase(address_);
}

size_t ConnectionCounter::from(const std::string& address) const {
  const auto it = by_address_.find(address);
  return it == by_address_.end() ? 0 : it->second;
}

std::string address_key(const asio::ip::address& address) {
  if (!address.is_v6()) return address.to_string();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  // One IPv6 subscriber usually holds a whole /64: counted as one address.
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

std::string address_key(std::string_view remote) {
  const size_t colon = remote.rfind(':');
  std::string_view host = colon == std::string_view::npos ? remote : remote.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  error_code error;
  const auto address = asio::ip::make_address(host, error);
  return error ? std::string(host) : address_key(address);
}

// ---- Exchange ----

Exchange::Exchange(std::shared_ptr<Transport> stream, Request request, const ServerLimits& limits,
                   std::shared_ptr<ConnectionCounter::Slot> slot)
    : stream_(std::move(stream)), request_(std::move(request)), limits_(limits), slot_(std::move(slot)) {
  keep_alive_ = request_.keep_alive();
}

Exchange::~Exchange() {
  stop_watching();
}

std::string_view Exchange::path() const {
  const std::string_view target(request_.target().data(), request_.target().size());
  return target.substr(0, target.find('?'));
}

std::string_view Exchange::query() const {
  const std::string_view target(request_.target().data(), request_.target().size());
  const size_t mark = target.find('?');
  return mark == std::string_view::npos ? std::string_view() : target.substr(mark + 1);
}

std::string_view Exchange::header(std::string_view name) const {
  const auto it = request_.find(beast::string_view(name.data(), name.size()));
  if (it == request_.end()) return {};
  return {it->value().data(), it->value().size()};
}

std::string Exchange::remote_address() const {
  error_code error;
  const auto endpoint = stream_->tcp().socket().remote_endpoint(error);
  if (error) return "unknown";
  return fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
}

awaitable<void> Exchange::respond(Response response) {
  if (answered_) co_return;
  answered_ = true;
  status_ = response.result_int();
  stop_watching();
  response.keep_alive(keep_alive_);
  stream_->tcp().expires_after(limits_.write_timeout);
  auto [error, bytes] = co_await bhttp::async_write(*stream_, response, as_tuple_awaitable);
  stream_->tcp().expires_never();
  if (error) keep_alive_ = false;
}

awaitable<void> Exchange::respond_json(unsigned status, std::string body,
                                       const std::vector<std::pair<std::string, std::string>>& headers) {
  Response response = json_response(status, request_.version(), std::move(body));
  for (const auto& [name, value] : headers) response.set(name, value);
  co_await respond(std::move(response));
}

awaitable<void> Exchange::respond_error(const proto::ApiError& error,
                                        const std::vector<std::pair<std::string, std::string>>& headers) {
  co_await respond_json(static_cast<unsigned>(error.status), error.to_json(), headers);
}

awaitable<bool> Exchange::start_events(const std::vector<std::pair<std::string, std::string>>& headers) {
  if (answered_) co_return false;
  answered_ = true;
  status_ = 200;
  streaming_ = true;
  bhttp::response<bhttp::empty_body> response{bhttp::status::ok, request_.version()};
  response.set(bhttp::field::server, "darkbloom");
  response.set(bhttp::field::content_type, "text/event-stream");
  response.set(bhttp::field::cache_control, "no-cache");
  response.set("X-Accel-Buffering", "no");
  for (const auto& [name, value] : headers) response.set(name, value);
  response.keep_alive(keep_alive_);
  response.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> serializer{response};
  stream_->tcp().expires_after(limits_.write_timeout);
  auto [error, bytes] = co_await bhttp::async_write_header(*stream_, serializer, as_tuple_awaitable);
  stream_->tcp().expires_never();
  if (error) {
    keep_alive_ = false;
    client_gone_.set(true);
    co_return false;
  }
  co_return true;
}

awaitable<bool> Exchange::send_event(std::string_view data) {
  co_return co_await send_event(std::string_view(), data);
}

awaitable<bool> Exchange::send_event(std::string_view name, std::string_view data) {
  if (!streaming_ || client_gone_) co_return false;
  // One event per chunk, flushed by the write itself: "data: <json>\n\n".
  std::string event;
  event.reserve(name.size() + data.size() + 16);
  if (!name.empty()) event.append("event: ").append(name).append("\n");
  event.append("data: ").append(data).append("\n\n");
  stream_->tcp().expires_after(limits_.write_timeout);
  auto [error, bytes] =
      co_await asio::async_write(*stream_, bhttp::make_chunk(asio::buffer(event)), as_tuple_awaitable);
  stream_->tcp().expires_never();
  if (error) {
    keep_alive_ = false;
    client_gone_.set(true);
    co_return false;
  }
  co_return true;
}

awaitable<void> Exchange::end_events() {
  if (!streaming_) co_return;
  streaming_ = false;
  stop_watching();
  if (client_gone_) co_return;
  stream_->tcp().expires_after(limits_.write_timeout);
  auto [error, bytes] = co_await asio::async_write(*stream_, bhttp::make_chunk_last(), as_tuple_awaitable);
  stream_->tcp().expires_never();
  if (error) keep_alive_ = false;
}

void Exchange::on_client_gone(std::function<void()> callback) {
  gone_callback_ = std::make_shared<std::function<void()>>(std::move(callback));
  start_watching();
}

void Exchange::start_watching() {
  if (watching_) return;
  watching_ = true;
  // Wait until the socket is readable without consuming anything: a peek of zero bytes means the
  // client closed; data means it sent the next request early, and watching ends there.
  auto stream = stream_;
  auto stopped = watch_stopped_;
  auto gone = client_gone_;
  auto callback = gone_callback_;
  stream->tcp().socket().async_wait(tcp::socket::wait_read, [stream, stopped, gone, callback](error_code error) {
    if (stopped || error == asio::error::operation_aborted) return;
    char byte;
    const ssize_t n = ::recv(stream->tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (error || n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      gone.set(true);
      if (callback && *callback) (*callback)();
    } else if (n > 0 && stream->is_tls()) {
      // Under TLS the bytes may be the client's close_notify rather than its next request.
      poll_for_hangup(stream, stopped, gone, callback);
    }
  });
}

void Exchange::stop_watching() {
  if (!watching_) return;
  watching_ = false;
  watch_stopped_.set(true);
  // A new flag for a possible later watch; the old wait completes on the next readiness and
  // does nothing because its flag is set.
  watch_stopped_ = net::SharedFlag(false);
}

bool Exchange::is_websocket_upgrade() const {
  return websocket::is_upgrade(request_);
}

awaitable<Result<std::shared_ptr<WebSocket>>> Exchange::accept_websocket() {
  if (answered_ || !is_websocket_upgrade()) co_return make_error(Errc::invalid_argument, "not a WebSocket upgrade");
  answered_ = true;
  taken_over_ = true;
  stop_watching();
  const std::string remote = remote_address();
  WebSocket::Stream ws(std::move(*stream_));
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& response) { response.set(bhttp::field::server, "darkbloom"); }));
  ws.read_message_max(limits_.websocket.max_message_bytes);
  auto [error] = co_await ws.async_accept(request_, as_tuple_awaitable);
  if (error) co_return make_error(Errc::unavailable, "WebSocket handshake failed: " + error.message());
  status_ = 101;
  auto socket = std::make_shared<WebSocket>(std::move(ws), limits_.websocket, remote);
  socket->hold(std::move(slot_));  // still one of the server's connections
  co_return socket;
}

// ---- Router ----

void Router::add(bhttp::verb method, std::string path, Handler handler) {
  routes_[std::move(path)].emplace_back(method, std::move(handler));
}

void Router::add_prefix(bhttp::verb method, std::string prefix, Handler handler) {
  for (auto& [existing, handlers] : prefixes_) {
    if (existing == prefix) {
      handlers.emplace_back(method, std::move(handler));
      return;
    }
  }
  prefixes_.emplace_back(std::move(prefix), Handlers{});
  prefixes_.back().second.emplace_back(method, std::move(handler));
}

const Handler* Router::find(bhttp::verb method, std::string_view path, proto::ApiError* error,
                            std::string* route) const {
  const Handlers* handlers = nullptr;
  std::string name;
  if (const auto it = routes_.find(std::string(path)); it != routes_.end()) {
    handlers = &it->second;
    name = it->first;
  } else {
    for (const auto& [prefix, candidates] : prefixes_) {
      if (path.size() > prefix.size() && path.starts_with(prefix)) {
        handlers = &candidates;
        name = prefix + "*";
        break;
      }
    }
  }
  if (handlers == nullptr) {
    *error = proto::not_found_error(fmt::format("No route for {}", path));
    return nullptr;
  }
  for (const auto& [verb, handler] : *handlers) {
    if (verb == method) {
      if (route != nullptr) *route = std::move(name);
      return &handler;
    }
  }
  *error = protocol_error(405, "invalid_request_error", "method_not_allowed",
                          fmt::format("Method {} is not allowed on {}", std::string(bhttp::to_string(method)), path));
  return nullptr;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// ---- Server ----

Server::Server(asio::any_io_executor executor, Router router, ServerLimits limits)
    : executor_(std::move(executor)), router_(std::move(router)), limits_(limits), acceptor_(executor_) {}

Server::~Server() {
  alive_.set(false);
  stop();
}

Result<uint16_t> Server::listen(const std::string& host, uint16_t port) {
  error_code error;
  const auto address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, error);
  if (error) return make_error(Errc::invalid_argument, fmt::format("'{}' is not an IP address to listen on", host));
  const tcp::endpoint endpoint(address, port);
  acceptor_.open(endpoint.protocol(), error);
  if (!error) acceptor_.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor_.bind(endpoint, error);
  if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return make_error(Errc::unavailable, fmt::format("cannot listen on {}:{}: {}", host, port, error.message()));
  }
  const uint16_t bound = acceptor_.local_endpoint().port();
  asio::co_spawn(executor_, accept_loop(), asio::detached);
  return bound;
}

void Server::stop() {
  error_code ignored;
  acceptor_.close(ignored);
  for (const auto& stream : connections_) stream->tcp().socket().close(ignored);
}

awaitable<void> Server::accept_loop() {
  auto alive = alive_;
  asio::steady_timer backoff(executor_);
  auto last_warning = std::chrono::steady_clock::time_point{};
  while (acceptor_.is_open()) {
    auto [error, socket] = co_await acceptor_.async_accept(as_tuple_awaitable);
    if (!alive) co_return;
    if (error) {
      if (error == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      // Out of descriptors: the pending connection stays queued, so accepting again at once
      // would spin. Pause, and say so at most once a second.
      const auto now = std::chrono::steady_clock::now();
      if (now - last_warning > std::chrono::seconds(1)) {
        log::warn("accept failed: {}", error.message());
        last_warning = now;
      }
      if (out_of_descriptors(error)) {
        backoff.expires_after(kAcceptBackoff);
        co_await backoff.async_wait(as_tuple_awaitable);
        if (!alive) co_return;
      }
      continue;
    }
    if (counter_->total() >= limits_.max_connections) {
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    const auto remote = socket.remote_endpoint(error);
    if (error) {  // gone already
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), error);
    const std::string address = address_key(remote.address());
    const size_t from_address = counter_->from(address);
    const bool over_address_limit = from_address >= limits_.max_connections_per_address;
    // Refusals hold a connection for a moment too: a few per address and in all, then plain closes.
    if (over_address_limit &&
        (from_address >= limits_.max_connections_per_address + kRefusalsPerAddress || refusing_ >= kRefusals)) {
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto slot = std::make_shared<ConnectionCounter::Slot>(counter_, address);
    auto stream = tls_ ? std::make_shared<Transport>(beast::tcp_stream(std::move(socket)), tls_)
                       : std::make_shared<Transport>(beast::tcp_stream(std::move(socket)));
    connections_.insert(stream);
    asio::co_spawn(executor_, serve_connection(stream, std::move(slot), over_address_limit),
                   [this, alive, stream](std::exception_ptr failure) {
                     if (failure) {
                       try {
                         std::rethrow_exception(failure);
                       } catch (const std::exception& e) {
                         log::error("connection failed: {}", e.what());
                       }
                     }
                     if (alive) connections_.erase(stream);
                   });
  }
}

void Server::observe(bhttp::verb method, std::string_view target, unsigned status) {
  if (!observer_) return;
  const std::string_view path = target.substr(0, target.find('?'));
  proto::ApiError ignored;
  std::string route;
  observer_(
      router_.find(method, path, &ignored, &route) != nullptr ? std::string_view(route) : std::string_view("unmatched"),
      status);
}

awaitable<void> Server::refuse_connection(Transport& stream) {
  ++refusing_;
  struct Done {
    size_t& refusing;
    ~Done() { --refusing; }
  } done{refusing_};
  beast::flat_buffer buffer;
  bhttp::request_parser<bhttp::empty_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(limits_.header_bytes));
  stream.tcp().expires_after(std::chrono::seconds(1));
  auto [error, n] = co_await bhttp::async_read_header(stream, buffer, parser, as_tuple_awaitable);
  const unsigned version = error ? 11 : parser.get().version();
  const proto::ApiError reply =
      proto::rate_limited("Too many connections from your address; close some or retry later");
  Response response = json_response(static_cast<unsigned>(reply.status), version, reply.to_json());
  response.set(bhttp::field::retry_after, "5");
  response.keep_alive(false);
  stream.tcp().expires_after(std::chrono::seconds(1));
  co_await bhttp::async_write(stream, response, as_tuple_awaitable);
  error_code ignored;
  stream.tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.tcp().socket().close(ignored);
}

awaitable<bool> Server::refused_before_body(Transport& stream, const Request& request, unsigned version) {
  std::optional<std::pair<proto::ApiError, Headers>> refusal;
  // An unknown route or method is answered before any body is read, too.
  const std::string_view target(request.target().data(), request.target().size());
  proto::ApiError route_error;
  if (router_.find(request.method(), target.substr(0, target.find('?')), &route_error) == nullptr) {
    refusal.emplace(std::move(route_error), Headers{});
  } else if (header_check_) {
    error_code error;
    const auto remote = stream.tcp().socket().remote_endpoint(error);
    const std::string address = error ? std::string("unknown") : address_key(remote.address());
    refusal = co_await header_check_(request, address);
  }
  if (!refusal) co_return false;
  const auto& [reply, headers] = *refusal;
  observe(request.method(), target, static_cast<unsigned>(reply.status));
  Response response = json_response(static_cast<unsigned>(reply.status), version, reply.to_json());
  for (const auto& [name, value] : headers) response.set(name, value);
  response.keep_alive(false);  // the body was never read: the connection cannot carry another request
  stream.tcp().expires_after(limits_.write_timeout);
  co_await bhttp::async_write(stream, response, as_tuple_awaitable);
  co_await lingering_close(stream);
  co_return true;
}

awaitable<Server::ReadOutcome> Server::read_request(Transport& stream, beast::flat_buffer& buffer, bool first) {
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(limits_.header_bytes));
  parser.body_limit(limits_.body_bytes);
  stream.tcp().expires_after(first ? limits_.read_timeout : limits_.idle_timeout);
  auto [header_error, header_bytes] = co_await bhttp::async_read_header(stream, buffer, parser, as_tuple_awaitable);
  unsigned version = 11;
  if (!header_error) version = parser.get().version();
  // A body still to come is read only for a known route and, where the route checks one, a valid
  // credential: refusals come first, before any 100 Continue.
  if (!header_error && !parser.is_done()) {
    const bool refused = co_await refused_before_body(stream, parser.get(), version);
    if (refused) co_return ReadOutcome{std::nullopt, true};
  }
  if (!header_error && parser.get()[bhttp::field::expect] == "100-continue" && !parser.is_done()) {
    stream.tcp().expires_after(limits_.write_timeout);
    Response go_on{bhttp::status::continue_, version};
    auto [continue_error, n] = co_await bhttp::async_write(stream, go_on, as_tuple_awaitable);
    if (continue_error) co_return ReadOutcome{};
  }
  error_code error = header_error;
  if (!error && !parser.is_done()) {
    stream.tcp().expires_after(limits_.read_timeout);
    auto [body_error, body_bytes] = co_await bhttp::async_read(stream, buffer, parser, as_tuple_awaitable);
    error = body_error;
  }
  if (!error) co_return ReadOutcome{parser.release(), false};
  // (A TLS client that closes without close_notify ends with stream_truncated: a quiet close too.)
  if (error == bhttp::error::end_of_stream || error == asio::error::eof || error == beast::error::timeout ||
      error == asio::error::operation_aborted || error == asio::error::connection_reset ||
      error == ssl::error::stream_truncated) {
    co_return ReadOutcome{};
  }
  proto::ApiError reply;
  if (error == bhttp::error::body_limit) {
    reply = proto::request_too_large(limits_.body_bytes);
  } else if (error == bhttp::error::header_limit) {
    reply = protocol_error(431, "invalid_request_error", "request_header_fields_too_large",
                           fmt::format("Request headers are larger than {} bytes", limits_.header_bytes));
  } else {
    reply = proto::invalid_request("Malformed HTTP request: " + error.message());
  }
  observe(bhttp::verb::unknown, "", static_cast<unsigned>(reply.status));
  Response response = json_response(static_cast<unsigned>(reply.status), version, reply.to_json());
  response.keep_alive(false);
  stream.tcp().expires_after(limits_.write_timeout);
  co_await bhttp::async_write(stream, response, as_tuple_awaitable);
  co_await lingering_close(stream);
  co_return ReadOutcome{std::nullopt, true};
}

awaitable<Server::AfterRequest> Server::handle_request(Exchange& exchange) {
  proto::ApiError route_error;
  std::string route;
  const Handler* handler = router_.find(exchange.request().method(), exchange.path(), &route_error, &route);
  if (handler == nullptr) {
    co_await exchange.respond_error(route_error);
    if (observer_) observer_("unmatched", exchange.status());
    co_return exchange.keep_alive() ? AfterRequest::next : AfterRequest::close;
  }
  bool failed = false;
  std::string failure;
  try {
    co_await (*handler)(exchange);
  } catch (const std::exception& e) {
    failed = true;
    failure = e.what();
  }
  if (failed) log::error("handler for {} failed: {}", std::string(exchange.path()), failure);
  // A handler that failed after it started answering left a half-written answer behind.
  const bool half_written = failed && exchange.answered();
  if (!exchange.answered()) {
    co_await exchange.respond_error(proto::server_error(failed ? "Internal error" : "The handler did not answer"));
  }
  if (observer_) observer_(route, exchange.status());
  if (exchange.taken_over()) co_return AfterRequest::taken_over;
  if (half_written) co_return AfterRequest::close;
  co_return exchange.keep_alive() ? AfterRequest::next : AfterRequest::close;
}

awaitable<void> Server::serve_connection(std::shared_ptr<Transport> stream,
                                         std::shared_ptr<ConnectionCounter::Slot> slot, bool over_address_limit) {
  if (auto* tls = stream->tls()) {
    if (over_address_limit) {
      // A refusal is not worth a handshake: over its address's limit, a TLS connection is closed.
      error_code ignored;
      stream->tcp().socket().close(ignored);
      co_return;
    }
    stream->tcp().expires_after(limits_.tls_handshake_timeout);
    auto [error] = co_await tls->async_handshake(ssl::stream_base::server, as_tuple_awaitable);
    if (error) {
      ++tls_handshake_failures_;
      log::debug("TLS handshake failed: {}", error.message());
      error_code ignored;
      stream->tcp().socket().close(ignored);
      co_return;
    }
  }
  if (over_address_limit) {
    co_await refuse_connection(*stream);
    co_return;
  }
  beast::flat_buffer buffer;
  for (bool first = true;; first = false) {
    ReadOutcome read = co_await read_request(*stream, buffer, first);
    if (read.closed) co_return;
    if (!read.request) break;
    stream->tcp().expires_never();
    Exchange exchange(stream, std::move(*read.request), limits_, slot);
    const AfterRequest after = co_await handle_request(exchange);
    if (after == AfterRequest::taken_over) co_return;
    if (after == AfterRequest::close) break;
  }
  error_code ignored;
  stream->tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream->tcp().socket().close(ignored);
}

Result<std::pair<std::string, uint16_t>> parse_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_error(Errc::invalid_argument, fmt::format("'{}' is not HOST:PORT", text));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return make_error(Errc::invalid_argument, fmt::format("'{}' is not HOST:PORT", text));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, parse_error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (parse_error != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return make_error(Errc::invalid_argument, fmt::format("'{}' has no valid port (0-65535)", text));
  }
  return std::make_pair(std::string(host), static_cast<uint16_t>(port));
}

awaitable<bool> send_events(Exchange& exchange, std::vector<proto::StreamEvent> events) {
  bool open = true;
  for (proto::StreamEvent& event : events) {
    if (open) open = co_await exchange.send_event(event.name, event.data);
    OPENSSL_cleanse(event.data.data(), event.data.size());
  }
  co_return open;
}

}  // namespace darkbloom::http
