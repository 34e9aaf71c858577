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

// Whether a JSON value holds a floating-point number anywhere.
bool has_double(const json::bj::value& value) {
  if (value.is_double()) return true;
  if (value.is_array()) {
    for (const auto& item : value.get_array()) {
      if (has_double(item)) return true;
    }
  }
  if (value.is_object()) {
    for (const auto& field : value.get_object()) {
      if (has_double(field.value())) return true;
    }
  }
  return false;
}

// decode ∘ encode is the identity on what decodes: what one side writes the other reads, and
// encoding once more gives the same bytes. (Not byte for byte where a floating-point number is
// inside: Boost.JSON 1.81 parses doubles to within one unit in the last place.)
template <typename Decode, typename Encode>
void check_round_trip(const std::string& encoded, Decode decode, Encode encode, const char* what) {
  if (encoded.empty()) return;  // an unknown message type is ignored, never re-sent
  auto again = decode(encoded);
  if (!again) fuzz::invariant_failed(what, again.error().message);
  auto parsed = json::parse(encoded, "encoded");
  if (!parsed) fuzz::invariant_failed(what, parsed.error().message);
  if (!has_double(*parsed) && encode(*again) != encoded) {
    fuzz::invariant_failed(what, "encodes differently the second time");
  }
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
