// POST /v1/responses, stateless: a Responses request is translated into the chat completion it
// asks for (which is what providers run), and the answer's events are written back as Responses
// objects and stream events. Nothing is stored: previous_response_id and friends are refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "proto/openai.h"

namespace darkbloom::proto {

// Most items in `input` (as many as a chat request has messages; `instructions` counts as one).
inline constexpr size_t kMaxInputItems = 4096;
// Most content parts in one input message.
inline constexpr size_t kMaxContentParts = 1024;

// Translates a Responses body into a chat completion request: `body` of the result is the chat
// body (what is sealed to the provider) and `endpoint` is Endpoint::responses. Errors are 400s
// whose `param` names the Responses field ("input[2].content", "text.format", "tools[0].name").
//   input: a string (one user message) or items: messages (roles user, system, developer,
//     assistant; content a string or input_text/output_text parts), function_call (merged into
//     the assistant message before it, if any) and function_call_output (a tool message).
//   instructions → a leading system message; max_output_tokens → max_tokens; text.format →
//     response_format; flat function tools → chat tools; tool_choice → chat's forms.
//   The sampling extensions chat takes (seed, top_k, min_p, penalties, stop, ignore_eos) pass
//   through; store, metadata, user and a few other bookkeeping fields are accepted and ignored;
//   stored state (previous_response_id, conversation, prompt, background) and other unknown
//   fields are refused.
Result<CompletionRequest> parse_responses_request(const json::bj::value& body, ApiError* error);
// The same from the raw request body (malformed JSON is a 400 too).
Result<CompletionRequest> parse_responses_body(std::string_view body, ApiError* error);

// Writes one answer (a single choice) as the Responses API does, either streamed or whole.
// Streaming methods return the `data` of the SSE events to send, in order: JSON objects with a
// "type" (also the SSE event name) and a "sequence_number" counting 0, 1, 2... across the stream.
// There is no [DONE]: response.completed, response.incomplete or response.failed ends a stream,
// and calls after it return nothing. Item ids derive from the response id ("msg_", "fc_").
// Not thread-safe: one writer belongs to one request.
class ResponsesWriter {
 public:
  // `id` is the response id ("resp_..."); the settings the response object echoes (max output
  // tokens, sampling, tools, tool_choice, text format) are copied from `request`. Instructions
  // and metadata are not kept by the translation, so they echo as null and {}.
  ResponsesWriter(std::string id, std::string model, int64_t created_at, const CompletionRequest& request);
  ~ResponsesWriter();  // the answer's text and arguments it holds are wiped
  ResponsesWriter(const ResponsesWriter&) = delete;
  ResponsesWriter& operator=(const ResponsesWriter&) = delete;

  // response.created and response.in_progress. Every other streaming method starts the stream
  // itself when start() was not called.
  std::vector<std::string> start();
  // Text of the answer. The first text after start (or after a function call) opens a message
  // item: response.output_item.added and response.content_part.added, then
  // response.output_text.delta.
  std::vector<std::string> text(std::string_view delta);
  // A piece of a function call. A new call index closes the open item (message or earlier call)
  // and adds a function_call item; argument fragments are response.function_call_arguments.delta.
  // A piece for a call already closed is a provider's protocol violation: it fails the response.
  std::vector<std::string> tool_call(const ToolCallDelta& delta);
  // Closes what is open, then response.completed, or response.incomplete with
  // incomplete_details.reason "max_output_tokens" when `finish_reason` is "length". An answer
  // with neither text nor calls still gets one (empty) message item. `receipt` (may be null)
  // becomes the response object's "darkbloom_receipt".
  std::vector<std::string> finish(std::string_view finish_reason, const Usage& usage, const Receipt* receipt);
  // response.failed, for an error after the stream started: status "failed" and
  // "error": {"code", "message"}; open items are left "incomplete".
  std::vector<std::string> failed(const ApiError& error);

  // The non-streaming response object: a message item with one output_text part (when there is
  // text, or no call at all), then a function_call item per call.
  std::string whole(const ChunkFormatter::Choice& choice, const Usage& usage, const Receipt* receipt) const;

 private:
  struct Item {
    bool is_call = false;
    std::string id;
    std::string text;  // message
    ToolCall call;     // function_call
    int call_index = -1;
    bool open = true;
    std::string status = "in_progress";
  };

  json::bj::object event(std::string_view type);
  void push(std::vector<std::string>* out, const json::bj::object& event) const;
  void ensure_started(std::vector<std::string>* out);
  void open_message(std::vector<std::string>* out);
  void close_item(size_t index, std::string_view status, std::vector<std::string>* out);
  void close_open_items(std::string_view status, std::vector<std::string>* out);
  std::optional<size_t> find_call(int call_index) const;  // the item of call `call_index`
  void add_call(const ToolCallDelta& delta, std::vector<std::string>* out);
  std::string item_id(bool is_call, size_t ordinal) const;
  // An item as response.output_item.added shows it (empty, in progress) or as it stands.
  json::bj::object item_object(const Item& item, bool as_added) const;
  json::bj::array output() const;
  json::bj::object response_object(std::string_view status, const json::bj::array& output, const Usage* usage,
                                   const Receipt* receipt) const;

  std::string id_;
  std::string model_;
  int64_t created_at_;
  json::bj::object settings_;  // the request's settings, echoed in every response object
  std::vector<Item> items_;    // the output so far, in output_index order
  size_t messages_ = 0;        // message items opened (for their ids)
  int64_t sequence_ = 0;
  bool started_ = false;
  bool ended_ = false;
};

}  // namespace darkbloom::proto
