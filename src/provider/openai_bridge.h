// From an OpenAI request to engine work and back: prompt building (chat template or raw prompt),
// sampling settings, and the events an engine request produces, carried to a coroutine.
// Shared by the provider agent and `darkbloom serve`.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "engine/chat/tool_calls.h"
#include "engine/engine.h"
#include "net/async_queue.h"
#include "proto/openai.h"

namespace darkbloom::provider {

// A validated request turned into engine input, or an OpenAI-shaped 400 (context exceeded, ...).
Result<engine::GenerationRequest> to_generation_request(const engine::Engine& engine,
                                                        const proto::CompletionRequest& request,
                                                        proto::ApiError* error);

// How the answers of a request with tools are read for calls (none without tools, or with
// tool_choice none).
std::optional<engine::ToolCallParser> tool_call_parser(const engine::Engine& engine,
                                                       const proto::CompletionRequest& request);

// What an engine request emits: text deltas (with sampled tokens before them when logprobs were
// asked for), then exactly one finish.
using EngineEvent = std::variant<std::string, engine::SampledToken, engine::FinishEvent>;

// Log-probabilities of sampled tokens, held until the text they produced is sent, in the
// endpoint's shape: chat {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null};
// completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. Tokens that produce
// no text (the end token, text a stop string swallowed) are not reported.
class LogprobsCollector {
 public:
  LogprobsCollector(proto::Endpoint endpoint, const engine::Tokenizer& tokenizer)
      : endpoint_(endpoint), tokenizer_(tokenizer) {}
  void add(const engine::SampledToken& token) { pending_.push_back(token); }
  // The logprobs object for the tokens before `text` (null when there are none); the text moves
  // the offsets of the next ones.
  json::bj::value take(std::string_view text);

 private:
  proto::Endpoint endpoint_;
  const engine::Tokenizer& tokenizer_;
  std::vector<engine::SampledToken> pending_;
  size_t offset_ = 0;  // bytes of text sent before
};

// The `n` answers (choices) of one request on the engine. Choice 0 is submitted first and the
// others once it has produced something (its prompt is then in the KV cache, and they reuse the
// cached blocks of the prompt instead of computing them again). Choice i samples with seed + i
// when a seed is given. Events come out in order of arrival, tagged with their choice; text comes
// with the logprobs of its tokens when they were asked for. Lives on one executor; not thread-safe.
class ChoiceRun {
 public:
  struct Event {
    int index = 0;
    std::string text;                              // a content delta, unless `finish` is set
    json::bj::value logprobs;                      // null, or the logprobs object for the text's tokens
    std::vector<proto::ToolCallDelta> tool_calls;  // pieces of the choice's calls (with `text` or alone)
    std::optional<engine::FinishEvent> finish;     // the choice ended
    std::string finish_reason;                     // with `finish`: OpenAI's name ("tool_calls" after calls)
  };

  // With `tools`, each choice's text is read for tool calls (content and calls come out apart).
  ChoiceRun(engine::Engine& engine, net::asio::any_io_executor executor, proto::Endpoint endpoint,
            engine::GenerationRequest request, int n, std::optional<engine::ToolCallParser> tools = std::nullopt);
  ~ChoiceRun();
  ChoiceRun(const ChoiceRun&) = delete;
  ChoiceRun& operator=(const ChoiceRun&) = delete;

  // Submits choice 0; an error is the engine's refusal (nothing runs then).
  Status start();
  // The next event; call only while some choice has not finished.
  net::awaitable<Event> next();
  // Stops every choice (each still reports its finish, as cancelled).
  void cancel();
  int choices() const { return n_; }
  // Whether answers are read for tool calls (the request may call tools).
  bool reads_calls() const { return !parsers_.empty(); }
  bool finished() const { return finished_ == n_ && ready_.empty(); }

 private:
  using Tagged = std::pair<int, EngineEvent>;
  class Sink;
  void submit_others();
  // The events a text delta or a finish makes (content, calls, the finish), queued in ready_.
  void on_text(int index, std::string text);
  void on_finish(int index, const engine::FinishEvent& finish);
  void push_parsed(int index, std::vector<engine::ToolCallSegment> segments);

  engine::Engine& engine_;
  engine::GenerationRequest request_;  // what choices 1.. are made from; wiped once they are
  int n_;
  std::shared_ptr<net::AsyncQueue<Tagged>> queue_;
  std::vector<std::optional<engine::RequestId>> running_;
  std::vector<LogprobsCollector> collectors_;
  std::vector<engine::ToolCallParser> parsers_;  // one per choice, or none
  std::deque<Event> ready_;
  int finished_ = 0;
  bool others_submitted_ = false;
  bool cancelled_ = false;
};

// OpenAI's name for how generation ended.
const char* openai_finish_reason(engine::FinishReason reason);

}  // namespace darkbloom::provider
