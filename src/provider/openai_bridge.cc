#include "provider/openai_bridge.h"

#include <fmt/format.h>
#include <string.h>  // explicit_bzero

#include "base/utf8.h"
#include "engine/chat/chat_template.h"

namespace darkbloom::provider {

const char* openai_finish_reason(engine::FinishReason reason) {
  return reason == engine::FinishReason::length ? "length" : "stop";
}

Result<engine::GenerationRequest> to_generation_request(const engine::Engine& engine,
                                                        const proto::CompletionRequest& request,
                                                        proto::ApiError* error) {
  engine::GenerationRequest out;
  const engine::Tokenizer& tokenizer = engine.tokenizer();
  std::string param;
  if (request.endpoint == proto::Endpoint::chat_completions) {
    std::vector<engine::ChatTurn> turns;
    turns.reserve(request.messages.size());
    for (const auto& message : request.messages) turns.push_back({message.role, message.content});
    out.prompt_tokens = engine::encode_chat(tokenizer, engine::detect_chat_format(engine.chat_template()), turns);
    param = "messages";
  } else {
    // A raw prompt belongs to its sender alone, so special-token text in it is honoured.
    out.prompt_tokens = tokenizer.encode(request.prompt);
    param = "prompt";
  }
  const int context = engine.context();
  const int prompt_length = static_cast<int>(out.prompt_tokens.size());
  if (prompt_length == 0) {
    *error = proto::invalid_request("The prompt is empty", param);
    return make_error(Errc::invalid_argument, error->message);
  }
  if (prompt_length >= context) {
    *error = proto::invalid_request(
        fmt::format("This model's context holds {} tokens; the prompt has {} (leave room for the answer)", context,
                    prompt_length),
        param);
    error->code = "context_length_exceeded";
    return make_error(Errc::out_of_range, error->message);
  }
  // Without a bound the answer may run to the end of the context.
  out.max_tokens = std::min(request.max_tokens.value_or(context - prompt_length), context - prompt_length);
  out.stop = request.stop;
  out.ignore_eos = request.ignore_eos;
  out.sampling.temperature = static_cast<float>(request.temperature.value_or(1.0));
  out.sampling.top_p = static_cast<float>(request.top_p.value_or(1.0));
  out.sampling.top_k = request.top_k && *request.top_k > 0 ? *request.top_k : 0;
  out.sampling.min_p = static_cast<float>(request.min_p.value_or(0.0));
  out.sampling.presence_penalty = static_cast<float>(request.presence_penalty.value_or(0.0));
  out.sampling.frequency_penalty = static_cast<float>(request.frequency_penalty.value_or(0.0));
  out.sampling.repetition_penalty = static_cast<float>(request.repetition_penalty.value_or(1.0));
  if (request.seed) out.sampling.seed = static_cast<uint64_t>(*request.seed);
  out.logprobs = request.logprobs ? request.top_logprobs : -1;
  if (request.response_format == "json_object" || request.response_format == "json_schema") {
    const json::bj::value* schema = request.json_schema.is_null() ? nullptr : &request.json_schema;
    auto grammar = engine.json_grammar(schema);
    if (!grammar) {
      *error =
          proto::invalid_request("response_format.json_schema.schema: " + grammar.error().message, "response_format");
      return grammar.error();
    }
    out.grammar = std::move(*grammar);
  }
  if (auto status = out.sampling.validate(); !status) {
    *error = proto::invalid_request(status.error().message);
    return status.error();
  }
  return out;
}

namespace {

json::bj::array byte_values(std::string_view bytes) {
  json::bj::array out;
  for (char c : bytes) out.push_back(static_cast<uint8_t>(c));
  return out;
}

}  // namespace

json::bj::value LogprobsCollector::take(std::string_view text) {
  namespace bj = json::bj;
  if (pending_.empty()) {
    offset_ += text.size();
    return nullptr;
  }
  bj::object result;
  if (endpoint_ == proto::Endpoint::chat_completions) {
    bj::array content;
    for (const auto& sampled : pending_) {
      const std::string piece = tokenizer_.token_to_piece(sampled.token);
      bj::array top;
      for (const auto& alternative : sampled.top) {
        const std::string alternative_piece = tokenizer_.token_to_piece(alternative.token);
        top.push_back(bj::object{{"token", utf8::sanitize(alternative_piece)},
                                 {"logprob", alternative.logprob},
                                 {"bytes", byte_values(alternative_piece)}});
      }
      content.push_back(bj::object{{"token", utf8::sanitize(piece)},
                                   {"logprob", sampled.logprob},
                                   {"bytes", byte_values(piece)},
                                   {"top_logprobs", std::move(top)}});
    }
    result["content"] = std::move(content);
    result["refusal"] = nullptr;
  } else {
    bj::array tokens, token_logprobs, top_logprobs, text_offset;
    size_t offset = offset_;
    for (const auto& sampled : pending_) {
      const std::string piece = tokenizer_.token_to_piece(sampled.token);
      tokens.push_back(bj::value(utf8::sanitize(piece)));
      token_logprobs.push_back(sampled.logprob);
      bj::object top;
      for (const auto& alternative : sampled.top) {
        top[utf8::sanitize(tokenizer_.token_to_piece(alternative.token))] = alternative.logprob;
      }
      top_logprobs.push_back(std::move(top));
      text_offset.push_back(offset);
      offset += piece.size();
    }
    result["tokens"] = std::move(tokens);
    result["token_logprobs"] = std::move(token_logprobs);
    result["top_logprobs"] = std::move(top_logprobs);
    result["text_offset"] = std::move(text_offset);
  }
  pending_.clear();
  offset_ += text.size();
  return result;
}

class ChoiceRun::Sink final : public engine::GenerationSink {
 public:
  Sink(std::shared_ptr<net::AsyncQueue<Tagged>> queue, int index) : queue_(std::move(queue)), index_(index) {}
  void on_text(std::string_view delta) override { queue_->push({index_, std::string(delta)}); }
  void on_token(const engine::SampledToken& token) override { queue_->push({index_, token}); }
  void on_finish(const engine::FinishEvent& event) override { queue_->push({index_, event}); }

 private:
  std::shared_ptr<net::AsyncQueue<Tagged>> queue_;
  int index_;
};

ChoiceRun::ChoiceRun(engine::Engine& engine, net::asio::any_io_executor executor, proto::Endpoint endpoint,
                     engine::GenerationRequest request, int n)
    : engine_(engine),
      request_(std::move(request)),
      n_(n),
      queue_(std::make_shared<net::AsyncQueue<Tagged>>(executor)),
      running_(static_cast<size_t>(n)) {
  for (int i = 0; i < n; ++i) collectors_.emplace_back(endpoint, engine.tokenizer());
}

ChoiceRun::~ChoiceRun() {
  for (const auto& id : running_) {
    if (id) engine_.cancel(*id);
  }
  if (!request_.prompt_tokens.empty()) {
    explicit_bzero(request_.prompt_tokens.data(), request_.prompt_tokens.size() * sizeof(int32_t));
  }
}

Status ChoiceRun::start() {
  // With one choice the request moves on; with more, choice 0 gets a copy (request_ is wiped later).
  engine::GenerationRequest first = n_ == 1 ? std::move(request_) : request_;
  auto id = engine_.submit(std::move(first), std::make_shared<Sink>(queue_, 0));
  if (!id) return id.error();
  running_[0] = *id;
  return {};
}

void ChoiceRun::submit_others() {
  others_submitted_ = true;
  for (int i = 1; i < n_; ++i) {
    engine::GenerationRequest copy = request_;
    if (copy.sampling.seed) copy.sampling.seed = *copy.sampling.seed + static_cast<uint64_t>(i);
    Result<engine::RequestId> id = make_error(Errc::cancelled, "cancelled");
    if (!cancelled_) id = engine_.submit(std::move(copy), std::make_shared<Sink>(queue_, i));
    if (id) {
      running_[static_cast<size_t>(i)] = *id;
      continue;
    }
    // Not run (cancelled first, or refused as choice 0 was not): it ends here.
    engine::FinishEvent ended;
    ended.reason = cancelled_ ? engine::FinishReason::cancelled : engine::FinishReason::error;
    ended.error = id.error().message;
    queue_->push_here({i, ended});
  }
  explicit_bzero(request_.prompt_tokens.data(), request_.prompt_tokens.size() * sizeof(int32_t));
  request_.prompt_tokens.clear();
}

void ChoiceRun::cancel() {
  cancelled_ = true;
  for (const auto& id : running_) {
    if (id) engine_.cancel(*id);
  }
}

net::awaitable<ChoiceRun::Event> ChoiceRun::next() {
  for (;;) {
    Tagged tagged = co_await queue_->pop();
    const int index = tagged.first;
    if (index == 0 && !others_submitted_ && n_ > 1) submit_others();  // choice 0's prompt is in the cache now
    LogprobsCollector& collector = collectors_[static_cast<size_t>(index)];
    if (auto* sampled = std::get_if<engine::SampledToken>(&tagged.second)) {
      collector.add(*sampled);
      continue;
    }
    Event event;
    event.index = index;
    if (auto* text = std::get_if<std::string>(&tagged.second)) {
      event.logprobs = collector.take(*text);
      event.text = std::move(*text);
      co_return event;
    }
    event.finish = std::get<engine::FinishEvent>(tagged.second);
    running_[static_cast<size_t>(index)].reset();
    finished_ += 1;
    co_return event;
  }
}

}  // namespace darkbloom::provider
