#include "http/websocket.h"

#include <fmt/format.h>

#include <optional>

#include "base/log.h"
#include "http/client.h"

namespace darkbloom::http {

namespace websocket = beast::websocket;
using Clock = std::chrono::steady_clock;

WebSocket::WebSocket(Stream stream, WebSocketOptions options, std::string remote)
    : stream_(std::move(stream)),
      options_(options),
      remote_(std::move(remote)),
      wake_(stream_.get_executor()),
      watchdog_(stream_.get_executor()),
      last_received_(Clock::now()) {
  stream_.read_message_max(options_.max_message_bytes);
  stream_.text(true);
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = std::chrono::seconds(10);   // also bounds the closing handshake
  timeouts.idle_timeout = websocket::stream_base::none();  // our own pings decide liveness
  timeouts.keep_alive_pings = false;
  stream_.set_option(timeouts);
  stream_.control_callback([this](websocket::frame_type, beast::string_view) { last_received_ = Clock::now(); });
}

WebSocket::~WebSocket() = default;

awaitable<Result<std::shared_ptr<WebSocket>>> WebSocket::connect(std::string host, uint16_t port, std::string path,
                                                                 WebSocketOptions options, ClientTls tls) {
  auto transport = co_await http::connect(host, port, tls, options.connect_timeout);
  if (!transport) co_return transport.error();
  error_code no_endpoint;
  const auto endpoint = transport->tcp().socket().remote_endpoint(no_endpoint);
  Stream stream(std::move(*transport));
  stream.set_option(websocket::stream_base::decorator(
      [](websocket::request_type& request) { request.set(bhttp::field::user_agent, "darkbloom"); }));
  const std::string host_header = fmt::format("{}:{}", host, port);
  stream.read_message_max(options.max_message_bytes);
  auto [handshake_error] = co_await stream.async_handshake(host_header, path, as_tuple_awaitable);
  if (handshake_error) {
    co_return make_error(Errc::unavailable, fmt::format("WebSocket handshake with {}{} failed: {}", host_header, path,
                                                        handshake_error.message()));
  }
  stream.next_layer().tcp().expires_never();
  auto socket = std::make_shared<WebSocket>(std::move(stream), options,
                                            fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port()));
  co_return socket;
}

void WebSocket::start() {
  if (started_) return;
  started_ = true;
  asio::co_spawn(stream_.get_executor(), writer_loop(), asio::detached);
  asio::co_spawn(stream_.get_executor(), watchdog_loop(), asio::detached);
}

awaitable<Result<std::string>> WebSocket::read() {
  auto self = shared_from_this();
  beast::flat_buffer buffer;
  auto [error, bytes] = co_await stream_.async_read(buffer, as_tuple_awaitable);
  if (error) {
    std::string reason;
    if (error == websocket::error::closed) {
      reason = "closed by peer";
      if (!stream_.reason().reason.empty())
        reason += ": " + std::string(stream_.reason().reason.data(), stream_.reason().reason.size());
    } else if (error == websocket::error::message_too_big) {
      reason = fmt::format("message larger than {} bytes", options_.max_message_bytes);
      close_now(reason);
    } else {
      reason = open_ ? error.message() : close_reason();
    }
    if (open_) {
      // The peer closed, vanished or broke the protocol: there is nobody to say goodbye to, and
      // the socket and its place among the server's connections go now, not at the next ping.
      open_ = false;
      if (close_reason_.empty()) close_reason_ = reason;
      wake_.cancel();
      watchdog_.cancel();
      drop_socket();
    }
    co_return make_error(Errc::unavailable, reason);
  }
  last_received_ = Clock::now();
  if (!stream_.got_text()) {
    close_now("binary frames are not accepted");
    co_return make_error(Errc::bad_format, "binary frames are not accepted");
  }
  co_return beast::buffers_to_string(buffer.data());
}

void WebSocket::send(std::string message) {
  if (!open_) return;
  asio::post(stream_.get_executor(), [self = shared_from_this(), message = std::move(message)]() mutable {
    self->enqueue(std::move(message));
  });
}

void WebSocket::enqueue(std::string message) {
  if (!open_) return;
  if (queued_bytes_ + message.size() > options_.max_queued_bytes) {
    abort("peer is not reading (send queue full)");
    return;
  }
  queued_bytes_ += message.size();
  queue_.push_back(std::move(message));
  wake_.cancel();
}

void WebSocket::close(std::string reason) {
  asio::post(stream_.get_executor(),
             [self = shared_from_this(), reason = std::move(reason)]() mutable { self->close_now(std::move(reason)); });
}

void WebSocket::abort(std::string reason) {
  close_now(std::move(reason));
  drop_socket();
}

void WebSocket::drop_socket() {
  error_code ignored;
  stream_.next_layer().tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.next_layer().tcp().close();
  held_.reset();  // the connection is gone, whoever still holds this object
}

void WebSocket::close_now(std::string reason) {
  if (!open_.exchange(false)) return;
  close_reason_ = reason;
  queue_.clear();
  queued_bytes_ = 0;
  wake_.cancel();
  watchdog_.cancel();
  websocket::close_reason close_frame(websocket::close_code::policy_error, reason.substr(0, 120));
  if (reason.empty()) close_frame = websocket::close_reason(websocket::close_code::normal);
  stream_.async_close(close_frame, [self = shared_from_this()](error_code) {
    // The closing handshake is bounded by the handshake timeout; then drop the socket.
    self->drop_socket();
  });
}

std::string WebSocket::close_reason() const {
  return close_reason_;
}

awaitable<void> WebSocket::writer_loop() {
  auto self = shared_from_this();
  while (open_) {
    while (open_ && !queue_.empty()) {
      std::string message = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= message.size();
      writing_ = true;
      write_started_ = Clock::now();
      auto [error, bytes] = co_await stream_.async_write(asio::buffer(message), as_tuple_awaitable);
      writing_ = false;
      if (error) {
        close_now("write failed: " + error.message());
        co_return;
      }
    }
    if (open_ && ping_due_) {
      ping_due_ = false;
      writing_ = true;
      write_started_ = Clock::now();
      auto [error] = co_await stream_.async_ping({}, as_tuple_awaitable);
      writing_ = false;
      if (error) {
        close_now("ping failed: " + error.message());
        co_return;
      }
      continue;
    }
    if (!open_) break;
    wake_.expires_at(Clock::time_point::max());
    co_await wake_.async_wait(as_tuple_awaitable);
  }
}

// Runs beside the writer, so a write that never completes cannot stop the verdict.
awaitable<void> WebSocket::watchdog_loop() {
  auto self = shared_from_this();
  while (open_) {
    watchdog_.expires_after(options_.ping_interval);
    co_await watchdog_.async_wait(as_tuple_awaitable);
    if (!open_) break;
    const auto now = Clock::now();
    if (now - last_received_ > options_.dead_after) {
      log::warn("websocket {}: nothing received for {} ms, closing", remote_,
                std::chrono::duration_cast<std::chrono::milliseconds>(now - last_received_).count());
      abort("peer unresponsive");
      break;
    }
    if (writing_ && now - write_started_ > options_.write_timeout) {
      log::warn("websocket {}: a write has been stuck for {} ms, closing", remote_,
                std::chrono::duration_cast<std::chrono::milliseconds>(now - write_started_).count());
      abort("peer is not reading");
      break;
    }
    ping_due_ = true;
    wake_.cancel();
  }
}

}  // namespace darkbloom::http
