// The OpenAI-compatible API surface: request parsing with OpenAI-shaped validation errors
// (type, code, param), and the response objects and stream chunks both the coordinator and
// `darkbloom serve` write. Engine-independent: sampling settings are plain fields here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "base/result.h"

namespace darkbloom::proto {

// The largest request body a coordinator takes by default (413 beyond; --max-body-bytes).
inline constexpr size_t kDefaultMaxBodyBytes = 10u << 20;

// {"error": {"message", "type", "code", "param"}} with its HTTP status.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string code;   // defaults to type
  std::string param;  // the offending field, empty when none
  std::string message;

  std::string to_json() const;
};

ApiError invalid_request(std::string message, std::string param = {});
ApiError authentication_error(std::string message);
ApiError model_not_found(const std::string& model);
ApiError request_too_large(size_t limit_bytes);
// 413: the sealed request is larger than every provider of its model reads.
ApiError request_too_large_for_providers(size_t frame_bytes, size_t largest_frame_bytes);
ApiError rate_limited(std::string message);
ApiError provider_error(std::string message);
ApiError timeout_error(std::string message);
ApiError not_found_error(std::string message);
ApiError server_error(std::string message);
// 503: the model was served moments ago and its providers are gone for now (reconnecting).
ApiError no_provider_available(std::string message);
// 503: a part the request needs (the database) is not answering; retry after a while.
ApiError service_unavailable(std::string message);
// 402: the account's balance does not cover the request's worst case.
ApiError insufficient_quota(std::string message);

// `responses` is POST /v1/responses (proto/responses.h): the chat completion it asks for is what a
// provider runs, so providers only ever see the other two.
enum class Endpoint { chat_completions, completions, responses };
std::string_view endpoint_name(Endpoint endpoint);  // "chat.completions" | "completions" | "responses"
// The response's "id": "chatcmpl-", "cmpl-" or "resp_" followed by the request id.
std::string response_id(Endpoint endpoint, std::string_view request_id);

// A function call the model made: `arguments` is JSON text (an object, as the model wrote it).
struct ToolCall {
  std::string id;  // "call_..." as the provider named it
  std::string name;
  std::string arguments;
};

struct ChatMessage {
  std::string role;  // system, developer, user, assistant, tool
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant: the calls it made (content may then be empty)
  std::string tool_call_id;          // tool: the call this message answers
};

// A function the model may call: `parameters` is its JSON Schema (null when it takes none).
struct Tool {
  std::string name;
  std::string description;
  json::bj::value parameters;
};

// tool_choice: none (never call), auto (the model decides), required (call at least one),
// named (call `tool_choice_name`). Without tools it is `none`.
enum class ToolChoice { none, automatic, required, named };

// Bounds on tools: definitions per request (as OpenAI), calls in one answer, calls in one
// assistant message of the history.
inline constexpr size_t kMaxTools = 128;
inline constexpr size_t kMaxToolCalls = 16;
inline constexpr size_t kMaxHistoryToolCalls = 128;
inline constexpr size_t kMaxToolNameBytes = 64;
inline constexpr size_t kMaxToolCallIdBytes = 64;

// What a completion request asks for, validated. `body` keeps the whole original object
// (unknown fields included) so it can be forwarded as received.
struct CompletionRequest {
  Endpoint endpoint = Endpoint::chat_completions;
  std::string model;
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
  bool stream = false;
  bool include_usage = false;
  std::optional<int> max_tokens;  // max_completion_tokens or max_tokens
  std::optional<double> temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
  std::optional<int> top_k;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;  // extension (as in vLLM): keep generating past end-of-sequence tokens
  // response_format.type: "text", "json_object" or "json_schema". The schema itself (null when
  // the json_schema gives none) is checked where it is compiled, by the provider.
  std::string response_format = "text";
  json::bj::value json_schema;
  // Log-probabilities of the sampled tokens, with `top_logprobs` alternatives each (chat:
  // logprobs + top_logprobs 0-20; completions: logprobs 0-5).
  bool logprobs = false;
  int top_logprobs = 0;
  int n = 1;  // choices, 1 to kMaxChoices
  // Functions the model may call (chat only), and how it must choose among them.
  std::vector<Tool> tools;
  ToolChoice tool_choice = ToolChoice::none;
  std::string tool_choice_name;     // the function a `named` choice forces
  bool parallel_tool_calls = true;  // several calls in one answer
  json::bj::object body;
};

// The most choices (`n`) one request may ask for.
inline constexpr int kMaxChoices = 8;
// Log-probability entries (a token or an alternative) one request may ask for: n x max_tokens x
// (top_logprobs + 1). The coordinator holds them for a whole answer; beyond, the request is
// refused (by the provider for a blind request, which the coordinator cannot read).
inline constexpr int64_t kMaxLogprobEntries = 1 << 18;
// Bytes one entry may take on the wire on average, as a provider writes it (a token's text and
// bytes, escaped), and what an answer's logprobs may take in all.
inline constexpr size_t kMaxLogprobEntryBytes = 1024;
inline constexpr size_t kMaxAnswerLogprobsBytes = 64u << 20;
// What an honest provider writes for the logprobs of `max_tokens` (all choices) tokens with
// `top_logprobs` alternatives, with room for the chunks' JSON around them.
inline size_t max_logprobs_bytes(int64_t max_tokens, int top_logprobs) {
  const auto entries = static_cast<size_t>(max_tokens) * static_cast<size_t>(top_logprobs + 1);
  return std::min(entries * kMaxLogprobEntryBytes + (size_t{1} << 20), kMaxAnswerLogprobsBytes);
}

// Parses and validates a body for an endpoint. Errors are 400s naming the field in `param`.
Result<CompletionRequest> parse_completion_request(Endpoint endpoint, const json::bj::value& body, ApiError* error);
// The same from the raw request body (malformed JSON is a 400 too).
Result<CompletionRequest> parse_completion_body(Endpoint endpoint, std::string_view body, ApiError* error);

// 1 to 64 letters, digits, '_' or '-': what OpenAI allows in function names, schema names and
// (here) tool-call ids.
bool valid_identifier(std::string_view text);

// A piece of a tool call as it streams: the first piece of call `index` carries its id and name;
// any piece may carry a fragment of its arguments.
struct ToolCallDelta {
  int index = 0;  // of the call within its choice
  std::string id;
  std::string name;
  std::string arguments;
};

// Adds a streamed piece to the calls assembled so far.
void append_tool_call(std::vector<ToolCall>* calls, const ToolCallDelta& delta);

// What an answer may do with tools, from its request's tools and tool_choice: the coordinator
// checks a plain answer against it as it relays it, the consumer's proxy a blind one.
struct ToolCallRules {
  std::vector<std::string> names;  // the functions it may call; empty: none
  size_t max_calls = 0;            // per choice
  bool forced = false;             // a named or required call: calls only, and no stop without one
};
ToolCallRules tool_call_rules(const CompletionRequest& request);
// What a call counts toward the usage bound beyond its name and arguments: the markup a model
// writes around it (tags, keys, braces), which the client never sees as text.
inline constexpr size_t kToolCallMarkupBytes = 32;
// One choice's calls as they arrive.
struct ChoiceCalls {
  std::vector<ToolCall> calls;
  bool text_since_call = false;  // text came after its last call began
};
// Checks one chunk's text and call pieces for a choice against the rules and appends the pieces:
// a new call is the next one, with a well-formed id and an offered function, within max_calls;
// later pieces only continue the last call, before any text. `*counted` grows by what the calls
// count toward the usage bound (name + kToolCallMarkupBytes per new call, and the arguments).
std::optional<std::string> check_tool_pieces(const ToolCallRules& rules, ChoiceCalls& choice, bool has_text,
                                             const std::vector<ToolCallDelta>& deltas, size_t* counted);
// Checks how each choice finished against its calls: "tool_calls" only after a call, and a forced
// call never ends with "stop".
std::optional<std::string> check_tool_finish(const ToolCallRules& rules, const std::vector<ChoiceCalls>& choices,
                                             const std::vector<std::string>& reasons);

// What a receipt covers of one choice (attest::receipt_text joins the choices): its content; for
// a request that may call tools (`framed`), "\x1f" then the content and each call's id, name and
// arguments, each field after its length in bytes and ':' ("\x1f2:hi7:call_ab3:add2:{}"), so that
// no content can pass for a call.
std::string receipt_choice_text(std::string_view content, const std::vector<ToolCall>& calls, bool framed);

// The tool named `name`, or null.
const Tool* find_tool(const CompletionRequest& request, std::string_view name);

// ---- responses ----

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// Streams one response as OpenAI chunks; ids and timestamps are fixed at construction.
// A provider's signed receipt for an answer: `signature` (base64 DER ECDSA by `public_key`) over
// `response_hash` = hex SHA-256 of "<request_id>:<completion_tokens>:<text>".
struct Receipt {
  std::string request_id;  // the id the provider answered under (the attempt), not X-Request-Id
  int completion_tokens = 0;
  std::string response_hash;
  std::string signature;
  std::string public_key;  // base64 P-256 X ‖ Y
};

class ChunkFormatter {
 public:
  ChunkFormatter(Endpoint endpoint, std::string id, std::string model, int64_t created);

  // The first chat chunk of a choice carries the assistant role (and empty content); completions
  // have none.
  std::optional<std::string> opening_chunk(int index = 0) const;
  // `logprobs` (null when none) is the choice's logprobs object for the tokens of `text`.
  std::string content_chunk(std::string_view text, const json::bj::value& logprobs = nullptr, int index = 0) const;
  // Pieces of tool calls (chat only).
  std::string tool_call_chunk(const std::vector<ToolCallDelta>& deltas, int index = 0) const;
  std::string finish_chunk(std::string_view finish_reason, int index = 0) const;
  std::string usage_chunk(const Usage& usage) const;
  // The last event before [DONE] when the provider signed its answer: `choices` is empty and the
  // receipt sits in `darkbloom_receipt`.
  std::string receipt_chunk(const Receipt& receipt) const;
  // The non-streaming response object, its choices in index order.
  struct Choice {
    std::string text;
    std::string finish_reason;
    json::bj::value logprobs;  // null when none
    std::vector<ToolCall> tool_calls;
  };
  std::string complete_response(const std::vector<Choice>& choices, const Usage& usage) const;

  const std::string& id() const { return id_; }

 private:
  json::bj::object base(std::string_view object_name) const;

  Endpoint endpoint_;
  std::string id_;
  std::string model_;
  int64_t created_;
};

// Appends a chunk's logprobs object to those of the chunks before it (the arrays in it grow),
// for a whole response assembled from chunks.
void append_logprobs(json::bj::value* all, const json::bj::value& part);

// A `data:` event of a stream error, sent in-band after the stream started.
std::string stream_error_event(const ApiError& error);

}  // namespace darkbloom::proto
