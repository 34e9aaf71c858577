#include "engine/evaluation/engine_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>

namespace darkbloom::engine {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

// Records when each piece of text arrived (one per generated token for the bench's ordinary
// tokens) and waits for the end.
class TimedSink final : public GenerationSink {
 public:
  void on_text(std::string_view) override {
    std::lock_guard lock(mutex_);
    texts_.push_back(Clock::now());
    cv_.notify_all();
  }
  // Until the first text (or the end): the request is past its prompt.
  void wait_first_text() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !texts_.empty() || done_; });
  }
  // After wait(): the arrival times.
  const std::vector<Clock::time_point>& texts() const { return texts_; }
  void on_finish(const FinishEvent& event) override {
    std::lock_guard lock(mutex_);
    event_ = event;
    done_ = true;
    cv_.notify_all();
  }
  FinishEvent wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
    return event_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  FinishEvent event_;
  std::vector<Clock::time_point> texts_;
};

// Tokens per second of all rows together while every one of them was decoding: from the moment
// the last row got its first token to the moment the first row got its last. Rows that finish
// their prompt early would otherwise count the other rows' prefill steps as slow decoding.
double aggregate_decode_rate(const std::vector<std::shared_ptr<TimedSink>>& sinks) {
  Clock::time_point all_decoding = Clock::time_point::min(), first_done = Clock::time_point::max();
  for (const auto& sink : sinks) {
    if (sink->texts().size() < 2) return 0;
    all_decoding = std::max(all_decoding, sink->texts().front());
    first_done = std::min(first_done, sink->texts().back());
  }
  if (first_done <= all_decoding) return 0;
  size_t tokens = 0;
  for (const auto& sink : sinks) {
    for (const auto& at : sink->texts()) tokens += at > all_decoding && at <= first_done ? 1 : 0;
  }
  return static_cast<double>(tokens) / std::chrono::duration<double>(first_done - all_decoding).count();
}

struct Prompts {
  std::vector<int32_t> ordinary;
  std::mt19937_64 rng;
  GenerationRequest make(int prompt_tokens, int gen_tokens) {
    GenerationRequest request;
    for (int i = 0; i < prompt_tokens; ++i) request.prompt_tokens.push_back(ordinary[rng() % ordinary.size()]);
    request.max_tokens = gen_tokens;
    request.ignore_eos = true;
    request.sampling.temperature = 0.0f;
    return request;
  }
};

Status check_event(const FinishEvent& event, int expected_tokens) {
  if (event.reason == FinishReason::error) return make_error(Errc::internal, "engine error: " + event.error);
  if (event.completion_tokens != expected_tokens) {
    return make_error(Errc::internal,
                      fmt::format("expected {} tokens, got {}", expected_tokens, event.completion_tokens));
  }
  return {};
}

}  // namespace

uint64_t matmul_parameters(const ModelConfig& c) {
  const uint64_t attention = static_cast<uint64_t>(c.n_embd) * (c.q_width() + 2 * c.kv_width()) +
                             static_cast<uint64_t>(c.n_head) * c.value_dim * c.n_embd;
  // A mixture of experts multiplies by its router, the experts a token uses and the shared one.
  const uint64_t ffn =
      c.is_moe() ? 3ull * c.n_embd * (static_cast<uint64_t>(c.n_ff_expert) * c.n_expert_used + c.n_ff_shared) +
                       static_cast<uint64_t>(c.n_embd) * c.n_expert
                 : 3ull * c.n_embd * c.n_ff;
  return (attention + ffn) * static_cast<uint64_t>(c.n_layer);
}

Result<std::vector<EngineBenchResult>> run_engine_bench(Engine& engine, const EngineBenchOptions& options,
                                                        const std::function<void(int, int)>& progress) {
  if (options.prompt_tokens < 1 || options.gen_tokens < 2 || options.repetitions < 1 || options.batch_sizes.empty()) {
    return make_error(Errc::invalid_argument,
                      "bench needs a prompt of at least 1 token, at least 2 generated tokens and 1 repetition");
  }
  if (options.prompt_tokens + options.gen_tokens > engine.context()) {
    return make_error(Errc::out_of_range,
                      fmt::format("prompt {} + generated {} tokens exceed the context of {} (raise --ctx)",
                                  options.prompt_tokens, options.gen_tokens, engine.context()));
  }
  Prompts prompts{{}, std::mt19937_64(options.seed)};
  const Tokenizer& tokenizer = engine.tokenizer();
  for (int32_t id = 0; id < tokenizer.n_vocab(); ++id) {
    if (tokenizer.token_type(id) == TokenType::normal) prompts.ordinary.push_back(id);
  }
  if (prompts.ordinary.empty()) return make_error(Errc::bad_format, "the vocabulary has no ordinary tokens");

  std::vector<EngineBenchResult> results;
  const int total_steps = static_cast<int>(options.batch_sizes.size()) * options.repetitions;
  int steps_done = 0;
  for (int batch : options.batch_sizes) {
    if (batch < 1) return make_error(Errc::invalid_argument, "batch sizes must be at least 1");
    std::vector<double> ttft, busy_ttft, prefill, decode;
    for (int r = 0; r < options.repetitions; ++r) {
      // B requests together.
      std::vector<std::shared_ptr<TimedSink>> sinks;
      for (int b = 0; b < batch; ++b) {
        auto sink = std::make_shared<TimedSink>();
        auto id = engine.submit(prompts.make(options.prompt_tokens, options.gen_tokens), sink);
        if (!id) return id.error();
        sinks.push_back(sink);
      }
      double last_first_token_ms = 0;
      std::vector<double> row_decode;
      for (auto& sink : sinks) {
        const FinishEvent event = sink->wait();
        DARKBLOOM_RETURN_IF_ERROR(check_event(event, options.gen_tokens));
        const double first_token_ms = event.queue_ms + event.prefill_ms;
        ttft.push_back(first_token_ms);
        last_first_token_ms = std::max(last_first_token_ms, first_token_ms);
        row_decode.push_back((options.gen_tokens - 1) / (event.decode_ms / 1000.0));
      }
      prefill.push_back(static_cast<double>(batch) * options.prompt_tokens / (last_first_token_ms / 1000.0));
      const double aggregate = aggregate_decode_rate(sinks);
      decode.push_back(batch > 1 && aggregate > 0 ? aggregate / batch : median(row_decode));

      // One more request arriving while batch - 1 rows decode (long enough to outlast it).
      if (batch == 1) {
        busy_ttft.push_back(ttft.back());
      } else {
        std::vector<std::shared_ptr<TimedSink>> background;
        std::vector<RequestId> ids;
        for (int b = 0; b < batch - 1; ++b) {
          auto sink = std::make_shared<TimedSink>();
          auto id =
              engine.submit(prompts.make(options.prompt_tokens, engine.context() - options.prompt_tokens - 1), sink);
          if (!id) return id.error();
          background.push_back(sink);
          ids.push_back(*id);
        }
        for (auto& sink : background) sink->wait_first_text();  // all are decoding now
        auto probe = std::make_shared<TimedSink>();
        auto id = engine.submit(prompts.make(options.prompt_tokens, 2), probe);
        if (!id) return id.error();
        const FinishEvent event = probe->wait();
        DARKBLOOM_RETURN_IF_ERROR(check_event(event, 2));
        busy_ttft.push_back(event.queue_ms + event.prefill_ms);
        for (RequestId background_id : ids) engine.cancel(background_id);
        for (auto& sink : background) sink->wait();
      }
      if (progress) progress(++steps_done, total_steps);
    }
    EngineBenchResult result;
    result.threads = engine.threads();
    result.batch = batch;
    result.prompt_tokens = options.prompt_tokens;
    result.gen_tokens = options.gen_tokens;
    result.time_to_first_token_ms = median(ttft);
    result.busy_ttft_ms = median(busy_ttft);
    result.prefill_tokens_per_second = median(prefill);
    result.decode_tokens_per_second = median(decode);
    result.aggregate_decode_tokens_per_second = result.decode_tokens_per_second * batch;
    result.weight_bytes_per_token = engine.weight_bytes_per_token();
    result.decode_weight_gigabytes_per_second =
        static_cast<double>(result.weight_bytes_per_token) * result.decode_tokens_per_second / 1e9;
    results.push_back(result);
  }
  return results;
}

}  // namespace darkbloom::engine
