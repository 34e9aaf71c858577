#include "coordinator/gateway/provider_link.h"

#include "http/websocket.h"

namespace darkbloom::coordinator {
namespace {

class WebSocketLink final : public ProviderLink {
 public:
  explicit WebSocketLink(std::shared_ptr<http::WebSocket> socket) : socket_(std::move(socket)) {}
  void send(std::string frame) override { socket_->send(std::move(frame)); }
  void close(std::string reason) override { socket_->close(std::move(reason)); }
  bool is_open() const override { return socket_->is_open(); }
  std::string remote() const override { return socket_->remote(); }

 private:
  std::shared_ptr<http::WebSocket> socket_;
};

}  // namespace

std::shared_ptr<ProviderLink> websocket_link(std::shared_ptr<http::WebSocket> socket) {
  return std::make_shared<WebSocketLink>(std::move(socket));
}

}  // namespace darkbloom::coordinator
