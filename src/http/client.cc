#include "http/client.h"

#include <fmt/format.h>

#include <sys/socket.h>

#include <array>
#include <cerrno>
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

ClientResponse::ClientResponse(std::unique_ptr<Transport> transport, beast::flat_buffer buffer,
                               std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser,
                               std::weak_ptr<ClientPool> pool)
    : transport_(std::move(transport)),
      buffer_(std::move(buffer)),
      parser_(std::move(parser)),
      pool_(std::move(pool)) {}

ClientResponse::~ClientResponse() {
  close();
}

void ClientResponse::close() {
  if (!transport_ || closed_) return;
  closed_ = true;
  error_code ignored;
  transport_->tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  transport_->tcp().close();
}

std::string ClientResponse::header(std::string_view name) const {
  const auto& fields = parser_->get();
  const auto it = fields.find(beast::string_view(name.data(), name.size()));
  return it == fields.end() ? std::string() : std::string(it->value());
}

awaitable<Result<std::string>> ClientResponse::next(std::chrono::milliseconds idle) {
  std::array<char, 16384> piece{};
  while (transport_ && !closed_ && !parser_->is_done()) {
    auto& body = parser_->get().body();
    body.data = piece.data();
    body.size = piece.size();
    transport_->tcp().expires_after(idle);
    auto [error, bytes] = co_await bhttp::async_read_some(*transport_, buffer_, *parser_, as_tuple_awaitable);
    (void)bytes;
    const size_t got = piece.size() - parser_->get().body().size;
    if (error && error != bhttp::error::need_buffer) {
      close();
      if (got > 0) co_return std::string(piece.data(), got);
      co_return make_error(Errc::unavailable, error == beast::error::timeout
                                                  ? fmt::format("nothing from the server for {} ms", idle.count())
                                                  : "the connection failed: " + error.message());
    }
    if (got > 0) co_return std::string(piece.data(), got);
  }
  if (!transport_ || closed_) co_return make_error(Errc::unavailable, "the connection is closed");
  // The whole response is read: the connection can carry the next request if both sides agree.
  auto pool = pool_.lock();
  if (pool && parser_->keep_alive() && buffer_.size() == 0) {
    transport_->tcp().expires_never();
    pool->give_back(std::move(transport_));
  } else {
    close();
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
      close();
      co_return make_error(Errc::out_of_range, fmt::format("the response is larger than {} bytes", max_bytes));
    }
  }
}

namespace {

struct Exchanged {
  beast::flat_buffer buffer;
  std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser;
};

// Writes `request` on `transport` and reads the response's header. `*unanswered` tells a failure
// before any byte of an answer came (the server had closed the connection).
awaitable<Result<Exchanged>> exchange(Transport& transport, const std::string& host, uint16_t port,
                                      const ClientRequest& request, std::chrono::milliseconds timeout,
                                      bool* unanswered) {
  bhttp::request<bhttp::string_body> message{request.method, request.target, 11};
  message.set(bhttp::field::host, fmt::format("{}:{}", host, port));
  message.set(bhttp::field::user_agent, "darkbloom");
  for (const auto& [name, value] : request.headers) message.set(name, value);
  if (!request.body.empty()) {
    message.set(bhttp::field::content_type, "application/json");
    message.body() = request.body;
  }
  message.prepare_payload();
  *unanswered = true;
  transport.tcp().expires_after(timeout);
  auto [write_error, written] = co_await bhttp::async_write(transport, message, as_tuple_awaitable);
  (void)written;
  if (write_error) {
    co_return make_error(Errc::unavailable,
                         fmt::format("sending to {}:{} failed: {}", host, port, write_error.message()));
  }
  Exchanged out;
  out.parser = std::make_unique<bhttp::response_parser<bhttp::buffer_body>>();
  out.parser->body_limit(boost::none);  // next() and read_all's callers bound what they keep
  out.parser->header_limit(64 * 1024);
  auto [read_error, read] = co_await bhttp::async_read_header(transport, out.buffer, *out.parser, as_tuple_awaitable);
  *unanswered = read == 0 && out.buffer.size() == 0 && read_error != beast::error::timeout;
  if (read_error) {
    co_return make_error(Errc::unavailable, fmt::format("no answer from {}:{}: {}", host, port,
                                                        read_error == beast::error::timeout
                                                            ? fmt::format("nothing within {} ms", timeout.count())
                                                            : read_error.message()));
  }
  co_return std::move(out);
}

// An idle kept connection is usable when the server has neither closed it nor sent anything
// unasked (a TLS alert, a stray byte): a peek that would block.
bool still_open(Transport& transport) {
  char byte = 0;
  const ssize_t got = ::recv(transport.tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

awaitable<Result<std::unique_ptr<ClientResponse>>> send_request(const std::string& host, uint16_t port,
                                                                const ClientTls& tls, const ClientRequest& request,
                                                                std::chrono::milliseconds timeout) {
  auto transport = co_await connect(host, port, tls, timeout);
  if (!transport) co_return transport.error();
  auto owned = std::make_unique<Transport>(std::move(*transport));
  ClientRequest closing = request;
  closing.headers.emplace_back("Connection", "close");
  bool unanswered = false;
  auto answer = co_await exchange(*owned, host, port, closing, timeout, &unanswered);
  if (!answer) co_return answer.error();
  co_return std::make_unique<ClientResponse>(std::move(owned), std::move(answer->buffer), std::move(answer->parser),
                                             std::weak_ptr<ClientPool>());
}

std::shared_ptr<ClientPool> ClientPool::create(std::string host, uint16_t port, ClientTls tls,
                                               std::chrono::milliseconds connect_timeout, size_t max_idle,
                                               std::chrono::seconds max_idle_time) {
  return std::make_shared<ClientPool>(std::move(host), port, std::move(tls), connect_timeout, max_idle, max_idle_time);
}

ClientPool::ClientPool(std::string host, uint16_t port, ClientTls tls, std::chrono::milliseconds connect_timeout,
                       size_t max_idle, std::chrono::seconds max_idle_time)
    : host_(std::move(host)),
      port_(port),
      tls_(std::move(tls)),
      connect_timeout_(connect_timeout),
      max_idle_(max_idle),
      max_idle_time_(max_idle_time) {}

void ClientPool::give_back(std::unique_ptr<Transport> transport) {
  if (idle_.size() >= max_idle_) {
    error_code ignored;
    idle_.front().transport->tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    idle_.erase(idle_.begin());
  }
  idle_.push_back(Idle{std::move(transport), std::chrono::steady_clock::now()});
}

void ClientAbort::abort() {
  aborted_ = true;
  if (waiting_ == nullptr) return;
  error_code ignored;
  waiting_->tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  waiting_->tcp().close();  // the pending write or read ends; the transport stays send()'s
}

namespace {

// Marks the connection `send()` is waiting on, for an abort, until the wait ends.
class Waiting {
 public:
  Waiting(const std::shared_ptr<ClientAbort>& abort, Transport* transport) : abort_(abort) {
    if (abort_) abort_->waiting_on(transport);
  }
  ~Waiting() {
    if (abort_) abort_->waiting_on(nullptr);
  }
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;

 private:
  std::shared_ptr<ClientAbort> abort_;
};

Error aborted_error() {
  return make_error(Errc::cancelled, "the request was given up (its client left)");
}

}  // namespace

awaitable<Result<std::unique_ptr<ClientResponse>>> ClientPool::send(ClientRequest request,
                                                                    std::chrono::milliseconds timeout,
                                                                    std::shared_ptr<ClientAbort> abort) {
  auto self = shared_from_this();
  const auto now = std::chrono::steady_clock::now();
  while (!idle_.empty()) {
    std::unique_ptr<Transport> kept = std::move(idle_.back().transport);
    const auto since = idle_.back().since;
    const bool fresh_enough = now - since < max_idle_time_;
    idle_.pop_back();
    // Old ones the server may be closing right now; one it closed (or wrote to) while idle.
    if (!fresh_enough || !still_open(*kept)) continue;
    if (abort && abort->aborted()) {
      idle_.push_back(Idle{std::move(kept), since});  // unused: still good, as old as it was
      co_return aborted_error();
    }
    bool unanswered = false;
    Result<Exchanged> answer = make_error(Errc::internal, "not sent");
    {
      const Waiting waiting(abort, kept.get());
      answer = co_await exchange(*kept, host_, port_, request, timeout, &unanswered);
    }
    if (abort && abort->aborted()) co_return aborted_error();
    if (answer) {
      co_return std::make_unique<ClientResponse>(std::move(kept), std::move(answer->buffer), std::move(answer->parser),
                                                 weak_from_this());
    }
    // A request that was written may have been acted on: only a GET is sent again.
    if (!unanswered || request.method != bhttp::verb::get) co_return answer.error();
  }
  if (abort && abort->aborted()) co_return aborted_error();
  auto transport = co_await connect(host_, port_, tls_, connect_timeout_);
  if (!transport) co_return transport.error();
  if (abort && abort->aborted()) co_return aborted_error();
  auto owned = std::make_unique<Transport>(std::move(*transport));
  bool unanswered = false;
  Result<Exchanged> answer = make_error(Errc::internal, "not sent");
  {
    const Waiting waiting(abort, owned.get());
    answer = co_await exchange(*owned, host_, port_, request, timeout, &unanswered);
  }
  if (abort && abort->aborted()) co_return aborted_error();
  if (!answer) co_return answer.error();
  co_return std::make_unique<ClientResponse>(std::move(owned), std::move(answer->buffer), std::move(answer->parser),
                                             weak_from_this());
}

}  // namespace darkbloom::http
