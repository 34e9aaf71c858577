// Every WebSocket message between a provider and the coordinator, from either side, and the
// sealed contents inside them (after decryption, so a provider with the key controls them too).
// A message that decodes must encode to one that decodes again to the same encoding: what one side
// writes, the other reads. The first byte picks the decoder; the rest is the message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz/fuzz_support.h"
#include "proto/provider_messages.h"

namespace {

using namespace darkbloom;

template <typename Message>
std::string encode_message(const Message& message) {
  return std::visit(
      [](const auto& m) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(m)>, proto::UnknownMessage>) {
          return {};
        } else {
          return proto::encode(m);
        }
      },
      message);
}

// decode ∘ encode is the identity on what decodes: encoding once more gives the same bytes.
template <typename Decode, typename Encode>
void check_round_trip(const std::string& encoded, Decode decode, Encode encode, const char* what) {
  if (encoded.empty()) return;  // an unknown message type is ignored, never re-sent
  auto again = decode(encoded);
  if (!again) fuzz::invariant_failed(what, again.error().message);
  if (encode(*again) != encoded) fuzz::invariant_failed(what, "encodes differently the second time");
}

constexpr auto encode_content = [](const auto& content) { return proto::encode(content); };

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t mode = fuzz::take_mode(data, size);
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  switch (mode % 5) {
    case 0:
      if (auto message = proto::decode_provider_message(frame)) {
        (void)proto::message_type(*message);
        check_round_trip(encode_message(*message), proto::decode_provider_message,
                         encode_message<proto::ProviderMessage>, "provider message round trip");
      }
      break;
    case 1:
      if (auto message = proto::decode_coordinator_message(frame)) {
        (void)proto::message_type(*message);
        check_round_trip(encode_message(*message), proto::decode_coordinator_message,
                         encode_message<proto::CoordinatorMessage>, "coordinator message round trip");
      }
      break;
    case 2:
      if (auto content = proto::decode_sealed_request(frame)) {
        check_round_trip(proto::encode(*content), proto::decode_sealed_request, encode_content,
                         "sealed request round trip");
      }
      break;
    case 3:
      if (auto content = proto::decode_chunk_content(frame)) {
        check_round_trip(proto::encode(*content), proto::decode_chunk_content, encode_content, "chunk round trip");
      }
      break;
    default:
      if (auto content = proto::decode_completion_content(frame)) {
        check_round_trip(proto::encode(*content), proto::decode_completion_content, encode_content,
                         "completion round trip");
      }
      break;
  }
  return 0;
}
