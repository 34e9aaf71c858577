#include "proto/answer_stream.h"

namespace darkbloom::proto {
namespace {

std::vector<StreamEvent> data_events(std::vector<std::string> datas) {
  std::vector<StreamEvent> out;
  out.reserve(datas.size());
  for (std::string& data : datas) out.push_back({{}, std::move(data)});
  return out;
}

// Chat completions and completions: one chunk per part, [DONE] last.
class ChunkWriter final : public AnswerWriter {
 public:
  ChunkWriter(Endpoint endpoint, std::string id, std::string model, int64_t created)
      : format_(endpoint, std::move(id), std::move(model), created) {}

  std::vector<StreamEvent> start(int choices) override {
    std::vector<std::string> out;
    for (int i = 0; i < choices; ++i) {
      if (auto opening = format_.opening_chunk(i)) out.push_back(std::move(*opening));
    }
    return data_events(std::move(out));
  }
  std::vector<StreamEvent> text(int index, std::string_view text, const json::bj::value& logprobs) override {
    return data_events({format_.content_chunk(text, logprobs, index)});
  }
  std::vector<StreamEvent> tool_calls(int index, const std::vector<ToolCallDelta>& deltas) override {
    return data_events({format_.tool_call_chunk(deltas, index)});
  }
  std::vector<StreamEvent> finish_choice(int index, std::string_view finish_reason) override {
    return data_events({format_.finish_chunk(finish_reason, index)});
  }
  std::vector<StreamEvent> end(const std::vector<std::string>&, const Usage& usage, bool include_usage,
                               const Receipt* receipt) override {
    std::vector<std::string> out;
    if (include_usage) out.push_back(format_.usage_chunk(usage));
    if (receipt != nullptr) out.push_back(format_.receipt_chunk(*receipt));
    out.emplace_back("[DONE]");
    return data_events(std::move(out));
  }
  std::vector<StreamEvent> error(const ApiError& error) override {
    return data_events({stream_error_event(error), "[DONE]"});
  }
  std::string whole(const std::vector<ChunkFormatter::Choice>& choices, const Usage& usage, const Receipt*) override {
    return format_.complete_response(choices, usage);  // the receipt travels in headers
  }

 private:
  ChunkFormatter format_;
};

// The Responses API: typed events named by their "type".
class ResponsesAnswerWriter final : public AnswerWriter {
 public:
  ResponsesAnswerWriter(std::string id, std::string model, int64_t created, const CompletionRequest& request)
      : writer_(std::move(id), std::move(model), created, request) {}

  std::vector<StreamEvent> start(int) override { return named(writer_.start()); }
  std::vector<StreamEvent> text(int, std::string_view text, const json::bj::value&) override {
    return named(writer_.text(text));
  }
  std::vector<StreamEvent> tool_calls(int, const std::vector<ToolCallDelta>& deltas) override {
    std::vector<StreamEvent> out;
    for (const ToolCallDelta& delta : deltas) {
      for (StreamEvent& event : named(writer_.tool_call(delta))) out.push_back(std::move(event));
    }
    return out;
  }
  std::vector<StreamEvent> finish_choice(int, std::string_view) override { return {}; }
  std::vector<StreamEvent> end(const std::vector<std::string>& reasons, const Usage& usage, bool,
                               const Receipt* receipt) override {
    return named(writer_.finish(reasons.empty() ? "stop" : reasons[0], usage, receipt));
  }
  std::vector<StreamEvent> error(const ApiError& error) override { return named(writer_.failed(error)); }
  std::string whole(const std::vector<ChunkFormatter::Choice>& choices, const Usage& usage,
                    const Receipt* receipt) override {
    return writer_.whole(choices.at(0), usage, receipt);
  }

 private:
  // Each event's `event:` line is its "type", which the writer puts first: {"type":"...",...}.
  static std::vector<StreamEvent> named(std::vector<std::string> datas) {
    constexpr std::string_view kPrefix = R"({"type":")";
    std::vector<StreamEvent> out;
    out.reserve(datas.size());
    for (std::string& data : datas) {
      std::string name;
      if (std::string_view(data).starts_with(kPrefix)) {
        const size_t end = data.find('"', kPrefix.size());
        if (end != std::string::npos) name = data.substr(kPrefix.size(), end - kPrefix.size());
      }
      out.push_back({std::move(name), std::move(data)});
    }
    return out;
  }

  ResponsesWriter writer_;
};

}  // namespace

std::vector<StreamEvent> AnswerWriter::piece(int index, std::string_view text, const json::bj::value& logprobs,
                                             const std::vector<ToolCallDelta>& deltas) {
  std::vector<StreamEvent> events;
  if (!text.empty()) events = this->text(index, text, logprobs);
  if (!deltas.empty()) {
    for (auto& event : tool_calls(index, deltas)) events.push_back(std::move(event));
  }
  return events;
}

std::unique_ptr<AnswerWriter> answer_writer(const CompletionRequest& request, std::string_view request_id,
                                            int64_t created) {
  std::string id = response_id(request.endpoint, request_id);
  if (request.endpoint == Endpoint::responses) {
    return std::make_unique<ResponsesAnswerWriter>(std::move(id), request.model, created, request);
  }
  return std::make_unique<ChunkWriter>(request.endpoint, std::move(id), request.model, created);
}

}  // namespace darkbloom::proto
