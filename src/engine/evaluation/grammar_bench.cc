#include "engine/evaluation/grammar_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <random>

#include "engine/blocking_sink.h"
#include "engine/grammar/matcher.h"

namespace darkbloom::engine {
namespace {

using Clock = std::chrono::steady_clock;

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

MaskTimes summarize(const std::vector<double>& micros) {
  return {micros.size(), percentile(micros, 0.5), percentile(micros, 0.99)};
}

// The k-th allowed token of a mask (k counted from 0).
int32_t nth_allowed(const grammar::TokenMask& mask, size_t k) {
  for (size_t word = 0; word < mask.size(); ++word) {
    const auto count = static_cast<size_t>(std::popcount(mask[word]));
    if (k >= count) {
      k -= count;
      continue;
    }
    uint64_t bits = mask[word];
    for (size_t skip = 0; skip < k; ++skip) bits &= bits - 1;
    return static_cast<int32_t>(word * 64 + static_cast<size_t>(std::countr_zero(bits)));
  }
  return -1;
}

size_t allowed_count(const grammar::TokenMask& mask) {
  size_t total = 0;
  for (uint64_t word : mask) total += static_cast<size_t>(std::popcount(word));
  return total;
}

// Per-request decode rates (tokens after the first, over the decode time) of `batch` requests
// submitted together; and the mean number of tokens they produced.
Result<std::pair<double, double>> decode_rate(Engine& engine, int batch, int gen_tokens, uint64_t seed,
                                              const std::shared_ptr<grammar::GrammarRuntime>& grammar) {
  std::vector<std::shared_ptr<BlockingSink>> sinks;
  for (int i = 0; i < batch; ++i) {
    GenerationRequest request;
    request.prompt_tokens = engine.tokenizer().encode(fmt::format("Request {} of the benchmark:", i));
    request.max_tokens = gen_tokens;
    request.sampling.temperature = 1.0f;
    request.sampling.seed = seed + static_cast<uint64_t>(i);
    request.ignore_eos = grammar == nullptr;
    request.grammar = grammar;
    sinks.push_back(std::make_shared<BlockingSink>());
    auto id = engine.submit(std::move(request), sinks.back());
    if (!id) return id.error();
  }
  std::vector<double> rates;
  double tokens = 0;
  for (auto& sink : sinks) {
    const FinishEvent event = sink->wait();
    if (event.reason == FinishReason::error) return make_error(Errc::internal, "generation failed: " + event.error);
    tokens += event.completion_tokens;
    if (event.completion_tokens >= 2 && event.decode_ms > 0) {
      rates.push_back((event.completion_tokens - 1) / (event.decode_ms / 1000.0));
    }
  }
  return std::make_pair(percentile(rates, 0.5), tokens / batch);
}

}  // namespace

Result<GrammarBenchResult> run_grammar_bench(Engine& engine, const json::bj::value& schema,
                                             const GrammarBenchOptions& options,
                                             const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  auto runtime = engine.json_grammar(&schema);
  if (!runtime) return runtime.error();
  GrammarBenchResult result;
  result.n_vocab = engine.tokenizer().n_vocab();

  // The mask step alone. Nothing else uses the runtime meanwhile (no request is running).
  say(fmt::format("timing the mask over {} simulated answers...", options.answers));
  std::mt19937_64 rng(options.seed);
  std::vector<float> logits(static_cast<size_t>(result.n_vocab));
  std::vector<double> cold;
  std::vector<double> warm;
  for (int answer = 0; answer < options.answers; ++answer) {
    grammar::Matcher matcher(*runtime);
    for (int step = 0; step < options.max_steps; ++step) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      const auto start = Clock::now();
      const std::shared_ptr<const grammar::TokenMask> mask = matcher.allowed_tokens();
      const bool any = grammar::apply_mask(*mask, logits);
      const double micros = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
      (answer == 0 ? cold : warm).push_back(micros);
      if (!any) return make_error(Errc::internal, "the grammar allows no token of this vocabulary");
      const int32_t token = nth_allowed(*mask, std::uniform_int_distribution<size_t>(0, allowed_count(*mask) - 1)(rng));
      if (engine.tokenizer().is_end_of_generation(token) || !matcher.accept(token) || matcher.finished()) {
        result.answers_completed += matcher.accepting() ? 1 : 0;
        break;
      }
    }
  }
  result.cold = summarize(cold);
  result.warm = summarize(warm);
  std::vector<double> all = cold;
  all.insert(all.end(), warm.begin(), warm.end());
  result.all = summarize(all);
  result.cached_masks = (*runtime)->cached_masks();
  result.stacks = (*runtime)->stack_count();

  for (int batch : options.batch_sizes) {
    say(fmt::format("decoding at batch {}, free and constrained...", batch));
    auto free = decode_rate(engine, batch, options.gen_tokens, options.seed, nullptr);
    if (!free) return free.error();
    auto constrained = decode_rate(engine, batch, options.gen_tokens, options.seed, *runtime);
    if (!constrained) return constrained.error();
    result.decode.push_back({batch, free->first, constrained->first, constrained->second});
  }
  return result;
}

}  // namespace darkbloom::engine
