// An answer written in the shape of the API it was asked on: chat completions and completions
// (OpenAI chunks, then [DONE]) or the Responses API (typed events, no [DONE]). The coordinator and
// `darkbloom serve` relay answers through it, so both speak every endpoint the same way.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proto/openai.h"
#include "proto/responses.h"

namespace darkbloom::proto {

// One Server-Sent Event: `name` is its `event:` line (empty: none), `data` its JSON.
struct StreamEvent {
  std::string name;
  std::string data;
};

class AnswerWriter {
 public:
  virtual ~AnswerWriter() = default;

  // ---- streamed ----
  // What opens the stream of an answer with `choices` choices.
  virtual std::vector<StreamEvent> start(int choices) = 0;
  virtual std::vector<StreamEvent> text(int index, std::string_view text, const json::bj::value& logprobs) = 0;
  virtual std::vector<StreamEvent> tool_calls(int index, const std::vector<ToolCallDelta>& deltas) = 0;
  // One piece of an answer: its text (if any), then its calls (if any).
  std::vector<StreamEvent> piece(int index, std::string_view text, const json::bj::value& logprobs,
                                 const std::vector<ToolCallDelta>& deltas);
  // A choice finished (a chat chunk with its finish_reason; nothing for Responses, which ends whole).
  virtual std::vector<StreamEvent> finish_choice(int index, std::string_view finish_reason) = 0;
  // The end of a stream whose choices all finished (`reasons` in index order): usage when asked
  // for, the receipt when there is one (may be null), and the end marker.
  virtual std::vector<StreamEvent> end(const std::vector<std::string>& reasons, const Usage& usage, bool include_usage,
                                       const Receipt* receipt) = 0;
  // An error after the stream started, and the end marker.
  virtual std::vector<StreamEvent> error(const ApiError& error) = 0;

  // ---- whole ----
  // The response body of a finished answer, its choices in index order.
  virtual std::string whole(const std::vector<ChunkFormatter::Choice>& choices, const Usage& usage,
                            const Receipt* receipt) = 0;
};

// The writer for `request`'s endpoint; `request_id` makes the response id (response_id()).
std::unique_ptr<AnswerWriter> answer_writer(const CompletionRequest& request, std::string_view request_id,
                                            int64_t created);

}  // namespace darkbloom::proto
