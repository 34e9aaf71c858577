// A WebSocket connection (either side) carrying text messages: a read coroutine for the owner,
// a queued, thread-safe send, keep-alive pings every `ping_interval`, and a watchdog that drops
// the connection after `dead_after` without any frame from the peer or when one write is stuck
// for `write_timeout`. Frames and the send queue are bounded.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "base/result.h"
#include "http/beast.h"
#include "http/tls.h"
#include "http/transport.h"

namespace darkbloom::http {

struct WebSocketOptions {
  size_t max_message_bytes = 10u << 20;
  std::chrono::milliseconds ping_interval{10000};
  std::chrono::milliseconds dead_after{30000};     // nothing received for this long: dead
  std::chrono::milliseconds write_timeout{30000};  // one write stuck this long: dead
  std::chrono::milliseconds connect_timeout{10000};
  size_t max_queued_bytes = 64u << 20;  // a peer this far behind is dropped
};

class WebSocket : public std::enable_shared_from_this<WebSocket> {
 public:
  using Stream = beast::websocket::stream<Transport>;

  WebSocket(Stream stream, WebSocketOptions options, std::string remote);
  ~WebSocket();

  // Dials ws://host:port/path, or wss:// when `tls.enabled` (client side).
  static awaitable<Result<std::shared_ptr<WebSocket>>> connect(std::string host, uint16_t port, std::string path,
                                                               WebSocketOptions options, ClientTls tls = {});

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
  // Bytes queued to send, the one being written included (on the socket's executor).
  size_t queued_bytes() const { return queued_bytes_ + (writing_ ? 1 : 0); }
  // Keeps `token` (the connection's place in the server's count) until the socket is closed.
  void hold(std::shared_ptr<void> token) { held_ = std::move(token); }
  const std::string& remote() const { return remote_; }
  // Why the connection ended, for logs ("" while open).
  std::string close_reason() const;

 private:
  awaitable<void> writer_loop();
  awaitable<void> watchdog_loop();
  void enqueue(std::string message);
  void close_now(std::string reason);
  // Closes the socket itself, ending every pending operation at once (for a peer that stopped
  // reading, whose closing handshake would wait behind a stuck write).
  void abort(std::string reason);
  // Shuts the TCP socket and releases the server's connection slot.
  void drop_socket();

  Stream stream_;
  WebSocketOptions options_;
  std::string remote_;
  asio::steady_timer wake_;
  asio::steady_timer watchdog_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  std::atomic<bool> open_{true};
  bool started_ = false;
  bool ping_due_ = false;
  bool writing_ = false;
  std::chrono::steady_clock::time_point write_started_;
  std::chrono::steady_clock::time_point last_received_;
  std::string close_reason_;
  std::shared_ptr<void> held_;
};

}  // namespace darkbloom::http
