// A WebSocket connection (either side) carrying text messages: a read coroutine for the owner,
// a queued, thread-safe send, keep-alive pings every `ping_interval` and a verdict of "dead"
// after `dead_after` without any frame from the peer, and a frame size limit.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "base/result.h"
#include "http/asio.h"

namespace darkbloom::http {

struct WebSocketOptions {
  size_t max_message_bytes = 10u << 20;
  std::chrono::milliseconds ping_interval{10000};
  std::chrono::milliseconds dead_after{30000};
  size_t max_queued_messages = 8192;  // a peer this far behind is dropped
};

class WebSocket : public std::enable_shared_from_this<WebSocket> {
 public:
  using Stream = beast::websocket::stream<beast::tcp_stream>;

  WebSocket(Stream stream, WebSocketOptions options, std::string remote);
  ~WebSocket();

  // Dials ws://host:port/path (client side).
  static awaitable<Result<std::shared_ptr<WebSocket>>> connect(std::string host, uint16_t port, std::string path,
                                                               WebSocketOptions options);

  // Starts the writer and pinger; call once, before read() and send().
  void start();
  // The next text message, or an error once the connection is closed, dead, or broke a rule
  // (a binary frame, a message over the limit). Only one read at a time.
  awaitable<Result<std::string>> read();
  // Queues a text message. Safe from any thread; dropped silently once closed.
  void send(std::string message);
  // Closes with a reason (sent in the close frame). Safe from any thread; idempotent.
  void close(std::string reason);

  bool is_open() const { return open_.load(); }
  const std::string& remote() const { return remote_; }
  // Why the connection ended, for logs ("" while open).
  std::string close_reason() const;

 private:
  awaitable<void> writer_loop();
  void enqueue(std::string message);
  void close_now(std::string reason);

  Stream stream_;
  WebSocketOptions options_;
  std::string remote_;
  net::steady_timer wake_;
  std::deque<std::string> queue_;
  std::atomic<bool> open_{true};
  bool started_ = false;
  std::chrono::steady_clock::time_point last_received_;
  std::string close_reason_;
};

}  // namespace darkbloom::http
