// The coordinator's end of one provider's connection, as the gateway uses it: send a frame,
// close with a reason. A WebSocket in production; a recording fake in unit tests.
#pragma once

#include <memory>
#include <string>

namespace darkbloom::http {
class WebSocket;
}

namespace darkbloom::coordinator {

class ProviderLink {
 public:
  virtual ~ProviderLink() = default;
  // Queues a text frame; dropped once the link is closed.
  virtual void send(std::string frame) = 0;
  // Closes with a reason; idempotent.
  virtual void close(std::string reason) = 0;
  virtual bool is_open() const = 0;
  virtual std::string remote() const = 0;
};

std::shared_ptr<ProviderLink> websocket_link(std::shared_ptr<http::WebSocket> socket);

}  // namespace darkbloom::coordinator
