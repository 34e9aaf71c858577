#include "engine/evaluation/engine_bench.h"

#include "engine/blocking_sink.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

namespace darkbloom::engine {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

}  // namespace

Result<EngineBenchResult> run_engine_bench(Engine& engine, const EngineBenchOptions& options,
                                           const std::function<void(int, int)>& progress) {
  if (options.prompt_tokens < 1 || options.gen_tokens < 2 || options.repetitions < 1) {
    return make_error(Errc::invalid_argument,
                      "bench needs a prompt of at least 1 token, at least 2 generated tokens and 1 repetition");
  }
  if (options.prompt_tokens + options.gen_tokens > engine.context()) {
    return make_error(Errc::out_of_range,
                      fmt::format("prompt {} + generated {} tokens exceed the context of {} (raise --ctx)",
                                  options.prompt_tokens, options.gen_tokens, engine.context()));
  }
  // A prompt of ordinary vocabulary tokens, the same for every run.
  const Tokenizer& tokenizer = engine.tokenizer();
  std::vector<int32_t> ordinary;
  for (int32_t id = 0; id < tokenizer.n_vocab(); ++id) {
    if (tokenizer.token_type(id) == TokenType::normal) ordinary.push_back(id);
  }
  if (ordinary.empty()) return make_error(Errc::bad_format, "the vocabulary has no ordinary tokens");
  std::mt19937_64 rng(options.seed);
  GenerationRequest request;
  for (int i = 0; i < options.prompt_tokens; ++i) request.prompt_tokens.push_back(ordinary[rng() % ordinary.size()]);
  request.max_tokens = options.gen_tokens;
  request.ignore_eos = true;
  request.sampling.temperature = 0.0f;

  std::vector<double> ttft, prefill, decode;
  for (int r = 0; r < options.repetitions; ++r) {
    auto sink = std::make_shared<BlockingSink>();
    auto id = engine.submit(request, sink);
    if (!id) return id.error();
    const FinishEvent event = sink->wait();
    if (event.reason == FinishReason::error) return make_error(Errc::internal, "engine error: " + event.error);
    if (event.completion_tokens != options.gen_tokens) {
      return make_error(Errc::internal,
                        fmt::format("expected {} tokens, got {}", options.gen_tokens, event.completion_tokens));
    }
    ttft.push_back(event.prefill_ms);
    prefill.push_back(options.prompt_tokens / (event.prefill_ms / 1000.0));
    decode.push_back((options.gen_tokens - 1) / (event.decode_ms / 1000.0));
    if (progress) progress(r + 1, options.repetitions);
  }
  EngineBenchResult result;
  result.threads = engine.threads();
  result.prompt_tokens = options.prompt_tokens;
  result.gen_tokens = options.gen_tokens;
  result.time_to_first_token_ms = median(ttft);
  result.prefill_tokens_per_second = median(prefill);
  result.decode_tokens_per_second = median(decode);
  result.weight_bytes_per_token = engine.weight_bytes_per_token();
  result.decode_weight_gigabytes_per_second =
      static_cast<double>(result.weight_bytes_per_token) * result.decode_tokens_per_second / 1e9;
  return result;
}

}  // namespace darkbloom::engine
