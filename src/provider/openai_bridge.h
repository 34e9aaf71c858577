// From an OpenAI request to engine work and back: prompt building (chat template or raw prompt),
// sampling settings, and the events an engine request produces, carried to a coroutine.
// Shared by the provider agent and `darkbloom serve`.
#pragma once

#include <memory>
#include <string>
#include <variant>

#include "engine/engine.h"
#include "net/async_queue.h"
#include "proto/openai.h"

namespace darkbloom::provider {

// A validated request turned into engine input, or an OpenAI-shaped 400 (context exceeded, ...).
Result<engine::GenerationRequest> to_generation_request(const engine::Engine& engine,
                                                        const proto::CompletionRequest& request,
                                                        proto::ApiError* error);

// What an engine request emits: text deltas, then exactly one finish.
using EngineEvent = std::variant<std::string, engine::FinishEvent>;
using EngineEventQueue = net::AsyncQueue<EngineEvent>;

// An engine sink that forwards into a queue living on an Asio executor.
class QueueSink final : public engine::GenerationSink {
 public:
  explicit QueueSink(std::shared_ptr<EngineEventQueue> queue) : queue_(std::move(queue)) {}
  void on_text(std::string_view delta) override { queue_->push(std::string(delta)); }
  void on_finish(const engine::FinishEvent& event) override { queue_->push(event); }

 private:
  std::shared_ptr<EngineEventQueue> queue_;
};

// OpenAI's name for how generation ended.
const char* openai_finish_reason(engine::FinishReason reason);

}  // namespace darkbloom::provider
