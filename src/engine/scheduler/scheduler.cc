#include "engine/scheduler/scheduler.h"

#include <string.h>  // explicit_bzero

#include <algorithm>
#include <exception>

#include "base/log.h"
#include "engine/grammar/matcher.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/stop_matcher.h"
#include "engine/tokenizer/streaming_detokenizer.h"

namespace darkbloom::engine {
namespace {

constexpr int kBlock = KvCache::kBlockTokens;

double milliseconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void wipe(std::vector<int32_t>& tokens) {
  if (!tokens.empty()) explicit_bzero(tokens.data(), tokens.size() * sizeof(int32_t));
}

int64_t blocks_for(int64_t positions) {
  return (positions + kBlock - 1) / kBlock;
}

}  // namespace

struct Scheduler::Row {
  RequestId id = 0;
  GenerationRequest request;
  std::shared_ptr<GenerationSink> sink;
  Clock::time_point submitted;
  Clock::time_point admitted;
  Clock::time_point first_token;
  bool started = false;     // admitted at least once
  bool has_output = false;  // the first token was sampled
  uint64_t admission = 0;   // order of the latest admission: the largest is the newest row
  // The sequence: prompt, then output; the last output token is not in the cache yet.
  std::vector<int32_t> tokens;
  int n_cached = 0;                    // leading positions whose keys and values are in `blocks`
  std::vector<int32_t> blocks;         // block table
  std::vector<uint64_t> block_hashes;  // chain hashes of the leading published (or reused) blocks
  std::optional<Sampler> sampler;
  std::optional<StreamingDetokenizer> detokenizer;
  std::optional<StopMatcher> stop_matcher;
  std::optional<grammar::Matcher> matcher;  // structured output
  FinishEvent event;
  bool done = false;

  int pending() const { return static_cast<int>(tokens.size()) - n_cached; }
};

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, ThreadPool& pool,
                     const kernels::KernelSet& kernels, const SchedulerOptions& options)
    : model_(model),
      tokenizer_(tokenizer),
      pool_(pool),
      options_(options),
      cache_(model.config().n_layer, model.config().kv_width(), options.kv_type, options.kv_blocks),
      forward_(model, pool, kernels) {
  stats_.kv_tokens_total = cache_.n_blocks() * kBlock;
  stats_.kv_blocks_total = cache_.n_blocks();
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
  auto row = std::make_unique<Row>();
  row->request = std::move(request);
  row->sink = std::move(sink);
  row->submitted = Clock::now();
  RequestId id;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    row->id = id;
    live_.insert(id);
    incoming_.push_back(std::move(row));
  }
  wake_.notify_all();
  return id;
}

void Scheduler::cancel(RequestId id) {
  {
    std::lock_guard lock(mutex_);
    if (!live_.count(id)) return;
    cancelled_.insert(id);
  }
  wake_.notify_all();
}

EngineStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::loop() {
  while (take_requests()) {
    admit();
    if (!running_.empty()) step();
    update_stats();
  }
}

bool Scheduler::take_requests() {
  std::unordered_set<RequestId> cancelled;
  bool stopping;
  {
    std::unique_lock lock(mutex_);
    // Sleep only when there is nothing to do at all.
    wake_.wait(lock, [this] {
      return stopping_ || !incoming_.empty() || !cancelled_.empty() || !running_.empty() ||
             (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running);
    });
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    cancelled.swap(cancelled_);
    stopping = stopping_;
  }
  auto stop_if_cancelled = [&](std::unique_ptr<Row>& row) {
    if (stopping || cancelled.count(row->id)) finish(*row, FinishReason::cancelled);
  };
  for (auto& row : running_) stop_if_cancelled(row);
  for (auto& row : waiting_) stop_if_cancelled(row);
  std::erase_if(running_, [](const std::unique_ptr<Row>& row) { return row->done; });
  std::erase_if(waiting_, [](const std::unique_ptr<Row>& row) { return row->done; });
  return !stopping;
}

void Scheduler::admit() {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Row& row = *waiting_.front();
    if (!row.started) {
      row.tokens = row.request.prompt_tokens;
      row.sampler.emplace(row.request.sampling, row.request.prompt_tokens);
      row.detokenizer.emplace(tokenizer_);
      // Stop strings could cut structured output short of valid: they apply to free text only.
      row.stop_matcher.emplace(row.request.grammar ? std::vector<std::string>{} : row.request.stop);
      if (row.request.grammar) row.matcher.emplace(row.request.grammar);
      row.event.prompt_tokens = static_cast<int>(row.tokens.size());
    }
    // Reuse published blocks of the same beginning, leaving at least the last token to compute
    // (its logits are what the step needs).
    std::vector<int32_t> reused;
    std::vector<uint64_t> hashes;
    if (options_.prefix_reuse) {
      const int64_t reusable = static_cast<int64_t>(row.tokens.size() - 1) / kBlock;
      uint64_t parent = 0;
      for (int64_t b = 0; b < reusable; ++b) {
        const std::span<const int32_t> tokens(row.tokens.data() + b * kBlock, kBlock);
        const uint64_t hash = KvCache::chain_hash(parent, tokens);
        auto block = cache_.find(hash, parent, tokens);
        if (!block) break;
        reused.push_back(*block);
        hashes.push_back(hash);
        parent = hash;
      }
    }
    // Blocks for the whole sequence so far plus the next token (within the context), so its
    // prompt can always finish.
    const int64_t positions = std::min<int64_t>(static_cast<int64_t>(row.tokens.size()) + 1, options_.context);
    const int64_t needed = blocks_for(positions) - static_cast<int64_t>(reused.size());
    if (needed > cache_.free_blocks()) {
      for (int32_t block : reused) cache_.release(block);
      if (running_.empty()) {
        // Nothing will ever free more: the cache is smaller than this one request.
        finish(row, FinishReason::error, "the KV cache is too small for this request (raise the KV memory)");
        waiting_.pop_front();
        continue;
      }
      break;  // first in, first out: nobody overtakes a request that waits for memory
    }
    row.blocks = std::move(reused);
    row.block_hashes = std::move(hashes);
    for (int64_t i = 0; i < needed; ++i) row.blocks.push_back(*cache_.allocate());
    row.n_cached = static_cast<int>(row.block_hashes.size()) * kBlock;
    const auto now = Clock::now();
    if (!row.started) {
      row.started = true;
      row.admitted = now;
      row.event.queue_ms = milliseconds_between(row.submitted, now);
    }
    row.admission = next_admission_++;
    {
      std::lock_guard lock(mutex_);
      stats_.prefix_tokens_reused += static_cast<uint64_t>(row.n_cached);
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void Scheduler::reserve_decode_blocks() {
  // Oldest first: when memory runs out, the newest row gives way.
  for (size_t i = 0; i < running_.size(); ++i) {
    Row& row = *running_[i];
    if (row.done || row.blocks.empty() || row.pending() != 1) continue;  // empty: preempted just now
    while (static_cast<int64_t>(row.blocks.size()) * kBlock < static_cast<int64_t>(row.tokens.size())) {
      if (auto block = cache_.allocate()) {
        row.blocks.push_back(*block);
        continue;
      }
      // The newest row that still holds blocks gives them up (possibly this one).
      Row* newest = nullptr;
      for (auto& other : running_) {
        if (!other->done && !other->blocks.empty() && (newest == nullptr || other->admission > newest->admission)) {
          newest = other.get();
        }
      }
      preempt(*newest);
      if (newest == &row) break;
    }
  }
  // Preempted rows go back to the front of the queue, oldest first.
  std::vector<std::unique_ptr<Row>> preempted;
  for (auto& row : running_) {
    if (!row->done && row->blocks.empty()) preempted.push_back(std::move(row));
  }
  std::erase_if(running_, [](const std::unique_ptr<Row>& row) { return row == nullptr; });
  std::sort(preempted.begin(), preempted.end(),
            [](const auto& a, const auto& b) { return a->admission < b->admission; });
  for (auto it = preempted.rbegin(); it != preempted.rend(); ++it) waiting_.push_front(std::move(*it));
}

void Scheduler::preempt(Row& row) {
  // Its keys and values are given back (published blocks stay findable, so the recompute may
  // find them again); tokens, sampler and text state stay, so its output does not change.
  release_blocks(row);
  row.n_cached = 0;
  std::lock_guard lock(mutex_);
  stats_.preemptions += 1;
}

void Scheduler::step() {
  reserve_decode_blocks();
  batch_.clear();
  std::vector<Row*> with_logits;
  int budget = options_.step_tokens;
  // Decoding rows first: one token each keeps every answer moving.
  for (auto& row : running_) {
    if (row->pending() != 1) continue;
    batch_.push_back(
        {row->tokens.back(), row->n_cached, row->blocks.data(), static_cast<int32_t>(row->blocks.size()), true});
    with_logits.push_back(row.get());
    budget -= 1;
  }
  // Then prompt chunks, oldest row first, within what is left of the budget (at least one
  // token, so a step never stalls).
  std::vector<std::pair<Row*, int>> chunks;
  for (auto& row : running_) {
    if (row->pending() <= 1) continue;
    const int take = std::min(row->pending(), std::max(budget, batch_.empty() && chunks.empty() ? 1 : 0));
    if (take <= 0) break;
    for (int i = 0; i < take; ++i) {
      const int position = row->n_cached + i;
      const bool last = position + 1 == static_cast<int>(row->tokens.size());
      batch_.push_back({row->tokens[static_cast<size_t>(position)], position, row->blocks.data(),
                        static_cast<int32_t>(row->blocks.size()), last});
      if (last) with_logits.push_back(row.get());
    }
    chunks.emplace_back(row.get(), take);
    budget -= take;
  }
  if (batch_.empty()) return;

  const size_t n_vocab = static_cast<size_t>(model_.config().n_vocab);
  logits_.resize(with_logits.size() * n_vocab);
  // Logits come out in batch order of the tokens that want them: decode rows, then prompts that
  // finish in this step, the order of `with_logits`.
  try {
    forward_.run(batch_, cache_, logits_.data());
  } catch (const std::exception& e) {
    log::error("engine step failed: {}", e.what());
    for (auto& row : running_) {
      if (!row->done) finish(*row, FinishReason::error, e.what());
    }
    std::erase_if(running_, [](const std::unique_ptr<Row>& row) { return row->done; });
    return;
  }
  for (Row* row : with_logits) {
    if (row->pending() == 1) row->n_cached += 1;  // a decode row fed its token
  }
  for (auto& [row, take] : chunks) {
    row->n_cached += take;
    publish_full_blocks(*row);
    std::lock_guard lock(mutex_);
    stats_.prompt_tokens_computed += static_cast<uint64_t>(take);
  }
  for (size_t i = 0; i < with_logits.size(); ++i) {
    Row& row = *with_logits[i];
    publish_full_blocks(row);
    try {
      advance(row, std::span<float>(logits_.data() + i * n_vocab, n_vocab));
    } catch (const std::exception& e) {
      log::error("request {} failed: {}", row.id, e.what());
      finish(row, FinishReason::error, e.what());
    }
  }
  // Finished rows go now; nothing may touch `with_logits` or `chunks` after this.
  std::erase_if(running_, [](const std::unique_ptr<Row>& row) { return row->done; });
}

void Scheduler::publish_full_blocks(Row& row) {
  if (!options_.prefix_reuse || row.done) return;
  const int64_t full = row.n_cached / kBlock;
  while (static_cast<int64_t>(row.block_hashes.size()) < full) {
    const size_t b = row.block_hashes.size();
    const uint64_t parent = b == 0 ? 0 : row.block_hashes[b - 1];
    const std::span<const int32_t> tokens(row.tokens.data() + b * kBlock, kBlock);
    const uint64_t hash = KvCache::chain_hash(parent, tokens);
    cache_.publish(row.blocks[b], hash, parent, tokens);
    row.block_hashes.push_back(hash);
  }
}

void Scheduler::advance(Row& row, std::span<float> logits) {
  const auto now = Clock::now();
  if (!row.has_output) {
    row.has_output = true;
    row.first_token = now;
    row.event.prefill_ms = milliseconds_between(row.admitted, now);
  }
  if (row.matcher && !grammar::apply_mask(*row.matcher->allowed_tokens(), logits)) {
    finish(row, FinishReason::error, "no token of this model's vocabulary can continue the structured output");
    return;
  }
  SampledToken sampled;
  const bool report = row.request.logprobs >= 0;
  const int32_t token = row.sampler->sample(logits, report ? &sampled : nullptr, std::max(row.request.logprobs, 0));
  if (report) row.sink->on_token(sampled);
  row.sampler->accept(token);
  row.event.completion_tokens += 1;
  if ((!row.request.ignore_eos || row.matcher) && tokenizer_.is_end_of_generation(token)) {
    if (row.matcher && !row.matcher->accepting()) {
      finish(row, FinishReason::error, "the model ended structured output before it was complete");
    } else {
      finish(row, FinishReason::stop);  // under a grammar the mask allows the end only where the text is complete
    }
    return;
  }
  if (row.matcher && !row.matcher->accept(token)) {
    finish(row, FinishReason::error, "the sampled token does not fit the structured output");
    return;
  }
  const std::string text = row.stop_matcher->push(row.detokenizer->push(token));
  if (!text.empty()) row.sink->on_text(text);
  if (row.stop_matcher->stopped() || (row.matcher && row.matcher->finished())) {
    finish(row, FinishReason::stop);  // a stop string, or structured output with nothing more to come
    return;
  }
  // The token is fed at position n_cached next step: it needs room in the context.
  if (row.event.completion_tokens >= row.request.max_tokens || row.n_cached >= options_.context) {
    finish(row, FinishReason::length);
    return;
  }
  row.tokens.push_back(token);
}

void Scheduler::finish(Row& row, FinishReason reason, const std::string& error) {
  if (row.done) return;
  row.done = true;
  // Text held for a possible stop string or an unfinished character belongs to the answer when
  // generation ended for any other reason than a stop string, a cancellation or an error.
  if ((reason == FinishReason::stop || reason == FinishReason::length) && row.stop_matcher &&
      !row.stop_matcher->stopped()) {
    std::string tail = row.stop_matcher->push(row.detokenizer->finish());
    if (!row.stop_matcher->stopped()) tail += row.stop_matcher->flush();
    if (!tail.empty()) row.sink->on_text(tail);
  }
  row.event.reason = row.stop_matcher && row.stop_matcher->stopped() ? FinishReason::stop : reason;
  row.event.error = error;
  const auto now = Clock::now();
  if (!row.started) {
    row.event.queue_ms = milliseconds_between(row.submitted, now);
    row.event.prompt_tokens = static_cast<int>(row.request.prompt_tokens.size());
  }
  if (row.has_output) row.event.decode_ms = milliseconds_between(row.first_token, now);
  release_blocks(row);
  update_stats();  // before the sink hears of it, so a caller that then asks sees this row gone
  {
    std::lock_guard lock(mutex_);
    live_.erase(row.id);
    cancelled_.erase(row.id);
    stats_.requests_finished += 1;
    stats_.tokens_generated += static_cast<uint64_t>(row.event.completion_tokens);
    if (row.event.prefill_ms > 0 && reason != FinishReason::cancelled) {
      stats_.last_prefill_tokens_per_second = row.event.prompt_tokens / (row.event.prefill_ms / 1000.0);
    }
    if (row.event.decode_ms > 0 && row.event.completion_tokens > 1) {
      stats_.last_decode_tokens_per_second = (row.event.completion_tokens - 1) / (row.event.decode_ms / 1000.0);
    }
  }
  row.sink->on_finish(row.event);
  // The prompt and the answer's tokens are someone's plaintext: zero them before they are freed.
  wipe(row.tokens);
  wipe(row.request.prompt_tokens);
}

void Scheduler::release_blocks(Row& row) {
  for (int32_t block : row.blocks) cache_.release(block);
  row.blocks.clear();
  row.block_hashes.clear();
}

void Scheduler::update_stats() {
  int64_t used_tokens = 0;
  int running = 0;
  int waiting = 0;
  for (const auto& row : running_) {
    if (row == nullptr || row->done) continue;
    used_tokens += row->n_cached;
    running += 1;
  }
  for (const auto& row : waiting_) waiting += row != nullptr && !row->done ? 1 : 0;
  std::lock_guard lock(mutex_);
  stats_.running = running;
  stats_.waiting = waiting + static_cast<int>(incoming_.size());
  stats_.kv_tokens_used = used_tokens;
  stats_.kv_blocks_used = cache_.used_blocks();
  stats_.kv_blocks_cached = cache_.published_blocks();
}

}  // namespace darkbloom::engine
