#include "provider/openai_bridge.h"

#include <fmt/format.h>

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
  if (auto status = out.sampling.validate(); !status) {
    *error = proto::invalid_request(status.error().message);
    return status.error();
  }
  return out;
}

}  // namespace darkbloom::provider
