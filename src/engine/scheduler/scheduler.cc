#include "engine/scheduler/scheduler.h"

#include <string.h>  // explicit_bzero

#include <algorithm>
#include <exception>
#include <optional>

#include "base/log.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/stop_matcher.h"
#include "engine/tokenizer/streaming_detokenizer.h"

namespace darkbloom::engine {
namespace {

// Prompt tokens per forward call: large enough for matrix-matrix efficiency, small enough that a
// cancellation is noticed quickly.
constexpr int kPrefillChunk = 256;

double milliseconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool,
                     const kernels::KernelSet& kernels, int context)
    : tokenizer_(tokenizer),
      cache_(model.config().n_layer, model.config().kv_width(), context, 1),
      forward_(model, pool, kernels),
      logits_(static_cast<size_t>(model.config().n_vocab)) {
  stats_.kv_tokens_total = context;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

RequestId Scheduler::enqueue(GenerationRequest request, std::shared_ptr<GenerationSink> sink) {
  RequestId id;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    queue_.push_back({id, std::move(request), std::move(sink), Clock::now()});
  }
  wake_.notify_all();
  return id;
}

void Scheduler::cancel(RequestId id) {
  std::lock_guard lock(mutex_);
  const bool known =
      id == running_id_ || std::any_of(queue_.begin(), queue_.end(), [id](const Pending& p) { return p.id == id; });
  if (known) cancelled_.insert(id);
}

EngineStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats copy = stats_;
  copy.waiting = static_cast<int>(queue_.size());
  copy.running = running_id_ != 0 ? 1 : 0;
  return copy;
}

bool Scheduler::check_cancelled(RequestId running) {
  std::vector<Pending> dropped;
  bool running_cancelled = false;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_.empty() && !stopping_) return false;
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (stopping_ || cancelled_.count(it->id)) {
        cancelled_.erase(it->id);
        dropped.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    running_cancelled = stopping_ || cancelled_.erase(running) > 0;
  }
  for (Pending& p : dropped) {
    FinishEvent event;
    event.reason = FinishReason::cancelled;
    event.prompt_tokens = static_cast<int>(p.request.prompt_tokens.size());
    event.queue_ms = milliseconds_between(p.submitted, Clock::now());
    p.sink->on_finish(event);
  }
  return running_cancelled;
}

void Scheduler::loop() {
  for (;;) {
    Pending pending;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
    }
    if (check_cancelled(0)) {
      // Stopping: every queued request was finished as cancelled.
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) continue;
      pending = std::move(queue_.front());
      queue_.pop_front();
      running_id_ = pending.id;
    }
    run_request(pending);
  }
}

void Scheduler::run_request(Pending& pending) {
  const GenerationRequest& request = pending.request;
  GenerationSink& sink = *pending.sink;
  FinishEvent event;
  event.prompt_tokens = static_cast<int>(request.prompt_tokens.size());
  const auto started = Clock::now();
  event.queue_ms = milliseconds_between(pending.submitted, started);

  std::optional<Sampler> sampler;  // made inside the try: seeding can throw
  StreamingDetokenizer detokenizer(tokenizer_);
  StopMatcher stop_matcher(request.stop);
  FinishReason reason = FinishReason::stop;
  auto prefill_done = started;
  bool prefilled = false;

  try {
    sampler.emplace(request.sampling, request.prompt_tokens);
    // Prompt, in chunks; only the last position's logits are needed.
    const auto& prompt = request.prompt_tokens;
    std::vector<BatchToken> batch;
    for (size_t start = 0; start < prompt.size(); start += kPrefillChunk) {
      if (check_cancelled(pending.id)) break;
      const size_t end = std::min(prompt.size(), start + kPrefillChunk);
      batch.clear();
      for (size_t i = start; i < end; ++i) {
        batch.push_back({prompt[i], static_cast<int32_t>(i), 0, i + 1 == prompt.size()});
      }
      forward_.run(batch, cache_, logits_.data());
      prefilled = end == prompt.size();
      std::lock_guard lock(mutex_);
      stats_.kv_tokens_used = static_cast<int64_t>(end);
    }
    prefill_done = Clock::now();
    event.prefill_ms = milliseconds_between(started, prefill_done);
    if (!prefilled) reason = FinishReason::cancelled;

    int position = static_cast<int>(prompt.size());
    while (prefilled) {
      const int32_t token = sampler->sample(logits_);
      sampler->accept(token);
      event.completion_tokens += 1;
      if (!request.ignore_eos && tokenizer_.is_end_of_generation(token)) {
        reason = FinishReason::stop;
        break;
      }
      const std::string text = stop_matcher.push(detokenizer.push(token));
      if (!text.empty()) sink.on_text(text);
      if (stop_matcher.stopped()) {
        reason = FinishReason::stop;
        break;
      }
      if (event.completion_tokens >= request.max_tokens || position >= cache_.context()) {
        reason = FinishReason::length;
        break;
      }
      if (check_cancelled(pending.id)) {
        reason = FinishReason::cancelled;
        break;
      }
      const BatchToken next{token, position, 0, true};
      forward_.run({&next, 1}, cache_, logits_.data());
      ++position;
      std::lock_guard lock(mutex_);
      stats_.kv_tokens_used = position;
    }
  } catch (const std::exception& e) {
    log::error("request {} failed in the engine: {}", pending.id, e.what());
    event.error = e.what();
    reason = FinishReason::error;
  }
  if (prefilled) event.decode_ms = milliseconds_between(prefill_done, Clock::now());

  // Text held for a possible stop string or an unfinished character belongs to the answer when
  // generation ended for any other reason than a stop string, a cancellation or an error.
  if ((reason == FinishReason::stop || reason == FinishReason::length) && !stop_matcher.stopped()) {
    std::string tail = stop_matcher.push(detokenizer.finish());
    if (!stop_matcher.stopped()) tail += stop_matcher.flush();
    if (!tail.empty()) sink.on_text(tail);
  }
  event.reason = stop_matcher.stopped() ? FinishReason::stop : reason;
  {
    std::lock_guard lock(mutex_);
    running_id_ = 0;
    cancelled_.erase(pending.id);
    stats_.requests_finished += 1;
    stats_.tokens_generated += static_cast<uint64_t>(event.completion_tokens);
    stats_.kv_tokens_used = 0;
    if (event.prefill_ms > 0 && prefilled) {
      stats_.last_prefill_tokens_per_second = event.prompt_tokens / (event.prefill_ms / 1000.0);
    }
    if (event.decode_ms > 0 && event.completion_tokens > 1) {
      stats_.last_decode_tokens_per_second = (event.completion_tokens - 1) / (event.decode_ms / 1000.0);
    }
  }
  sink.on_finish(event);
  // The prompt is someone's plaintext: zero it before the memory goes back to the allocator.
  auto& prompt_tokens = pending.request.prompt_tokens;
  explicit_bzero(prompt_tokens.data(), prompt_tokens.size() * sizeof(prompt_tokens[0]));
}

}  // namespace darkbloom::engine
