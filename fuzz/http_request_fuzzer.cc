// The HTTP server as a client meets it: the fuzzer's bytes go down a real loopback connection to
// an http::Server running in this process (routes answering JSON, Server-Sent Events and a
// WebSocket, and a credential check before the body), then the client half-closes and reads.
// Whatever comes back must be HTTP, the server must close its side once the client is gone, and
// it must hold no connection afterwards. The same bytes also go through the address parsers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "fuzz/fuzz_support.h"
#include "http/server.h"

namespace {

using namespace darkbloom;
using net::asio::awaitable;

http::Router make_router() {
  http::Router router;
  router.add(http::bhttp::verb::post, "/v1/echo", [](http::Exchange& exchange) -> awaitable<void> {
    const std::string body = fmt::format(R"({{"bytes":{},"query":{},"type":{}}})", exchange.request().body().size(),
                                         exchange.query().size(), exchange.header("content-type").size());
    co_await exchange.respond_json(200, body);
  });
  router.add(http::bhttp::verb::get, "/v1/events", [](http::Exchange& exchange) -> awaitable<void> {
    if (!co_await exchange.start_events()) co_return;
    for (int i = 0; i < 3; ++i) {
      if (!co_await exchange.send_event(R"({"n":1})")) co_return;
    }
    co_await exchange.end_events();
  });
  router.add(http::bhttp::verb::get, "/v1/private", [](http::Exchange& exchange) -> awaitable<void> {
    co_await exchange.respond_json(200, R"({"private":true})");
  });
  router.add(http::bhttp::verb::post, "/v1/private", [](http::Exchange& exchange) -> awaitable<void> {
    co_await exchange.respond_json(200, R"({"private":true})");
  });
  router.add(http::bhttp::verb::get, "/ws", [](http::Exchange& exchange) -> awaitable<void> {
    if (!exchange.is_websocket_upgrade()) {
      co_await exchange.respond_error(proto::invalid_request("a WebSocket upgrade is expected"));
      co_return;
    }
    auto socket = co_await exchange.accept_websocket();
    if (!socket) co_return;
    (*socket)->start();
    while (true) {
      auto message = co_await (*socket)->read();
      if (!message) break;
      (*socket)->send(std::move(*message));
    }
    (*socket)->close("bye");
  });
  return router;
}

// The server on its own thread, for the whole run.
struct FuzzServer {
  net::asio::io_context io;
  std::unique_ptr<http::Server> server;
  uint16_t port = 0;
  std::thread thread;

  FuzzServer() {
    http::ServerLimits limits;
    limits.body_bytes = 64 * 1024;
    limits.read_timeout = std::chrono::seconds(5);
    limits.websocket.max_message_bytes = 16 * 1024;
    server = std::make_unique<http::Server>(io.get_executor(), make_router(), limits);
    server->set_header_check(
        [](const http::Request& request,
           const std::string&) -> awaitable<std::optional<std::pair<proto::ApiError, http::Headers>>> {
          const std::string_view target(request.target().data(), request.target().size());
          if (target.starts_with("/v1/private") && request[http::bhttp::field::authorization] != "Bearer fuzz") {
            co_return std::make_pair(proto::authentication_error("Invalid API key"), http::Headers{});
          }
          co_return std::nullopt;
        });
    auto bound = server->listen("127.0.0.1", 0);
    if (!bound) fuzz::invariant_failed("cannot listen", bound.error().message);
    port = *bound;
    thread = std::thread([this] { io.run(); });
  }

  size_t open_connections() {
    std::promise<size_t> count;
    net::asio::post(io, [&] { count.set_value(server->open_connections()); });
    return count.get_future().get();
  }
};

FuzzServer& fuzz_server() {
  static FuzzServer* server = [] {
    auto* made = new FuzzServer();  // lives until exit, when its thread is stopped and joined
    std::atexit([] {
      fuzz_server().io.stop();
      fuzz_server().thread.join();
    });
    return made;
  }();
  return *server;
}

// Connects from a new loopback address each time (127.1.0.1 and up, 62,500 of them): a run makes
// hundreds of thousands of connections, more than one address has ports for while closed ones
// linger in TIME_WAIT.
int connect_to(uint16_t port) {
  static uint32_t connections = 0;
  const uint32_t n = connections++ % 62'500;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fuzz::invariant_failed("socket() failed", std::strerror(errno));
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((n / 250) << 8) | (1 + n % 250));
  if (bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) {
    fuzz::invariant_failed("bind() failed", std::strerror(errno));
  }
  timeval timeout{5, 0};  // the server answers and closes well before, once the client has gone
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    // libFuzzer's timers interrupt system calls; an interrupted connect goes on by itself.
    pollfd ready{fd, POLLOUT, 0};
    int error = errno;
    if (error == EINTR) {
      while (poll(&ready, 1, 5000) < 0 && errno == EINTR) {
      }
      socklen_t length = sizeof error;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    }
    if (error != 0) fuzz::invariant_failed("connect() failed", std::strerror(error));
  }
  return fd;
}

// Sends everything (the server may stop reading early and close: that is an answer too).
void send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(sent));
  }
}

// Reads until the server closes; a server that keeps the connection open for long after the
// client has gone is a finding.
std::string read_until_closed(int fd) {
  std::string received;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      received.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 || errno == ECONNRESET) return received;
    if (errno == EINTR) continue;
    fuzz::invariant_failed("the server neither answered nor closed within 5 s of the client leaving");
  }
}

// The server's count drops right after it closes; a busy machine may take a moment.
void wait_until_no_connections(FuzzServer& server) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.open_connections() != 0) {
    if (std::chrono::steady_clock::now() > deadline)
      fuzz::invariant_failed("a connection stayed open after the client left");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)http::parse_host_port(input);
  (void)http::address_key(input);

  FuzzServer& server = fuzz_server();
  const int fd = connect_to(server.port);
  send_all(fd, input);
  shutdown(fd, SHUT_WR);
  const std::string received = read_until_closed(fd);
  linger abort_on_close{1, 0};  // no TIME_WAIT: a long run would use up the ephemeral ports
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  close(fd);
  if (!received.empty() && !received.starts_with("HTTP/1.1 ") && !received.starts_with("HTTP/1.0 ")) {
    fuzz::invariant_failed("the server answered something other than HTTP", received.substr(0, 64));
  }
  wait_until_no_connections(server);
  return 0;
}
