// The engine's public face: load a GGUF model, submit generation requests that stream text to a
// sink, cancel them, read statistics. One scheduler thread owns the model and the KV cache;
// callers never block it. This is everything the provider and `darkbloom serve` use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "engine/chat/chat_template.h"
#include "engine/model/model_config.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine {

namespace grammar {
class GrammarRuntime;
}

struct EngineOptions {
  std::string model_path;
  int threads = 0;                 // 0 = one per hardware thread
  int context = 0;                 // tokens per sequence; 0 = min(model's training context, 4096)
  std::string kernels = "auto";    // "auto", "scalar", "avx2"
  int max_batch = 8;               // requests decoding together
  int step_tokens = 512;           // tokens per forward step (decoding rows, then prompt chunks)
  int64_t kv_memory_mb = 0;        // KV cache size; 0 = max_batch full contexts, at most a quarter of RAM
  std::string kv_type = "f16";     // "f16", "q8_0" or "f32"
  bool prefix_reuse = true;        // reuse cached keys and values of equal prompt beginnings
  std::string chat_template_file;  // a Jinja chat template used instead of the model's own
};

struct GenerationRequest {
  std::vector<int32_t> prompt_tokens;
  SamplingParams sampling;
  int max_tokens = 256;           // > 0
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool ignore_eos = false;        // keep going past end-of-generation tokens (benchmarks)
  // Structured output: every token must keep the text within this grammar (Engine::json_grammar),
  // and the request stops with `stop` only where the text is complete. Stop strings do not
  // apply: they could cut the text short of valid.
  std::shared_ptr<grammar::GrammarRuntime> grammar;
  // -1: no log-probabilities. 0 to kMaxTopLogprobs: the sink's on_token gets each sampled
  // token's log-probability and this many most likely alternatives.
  int logprobs = -1;
};

enum class FinishReason { stop, length, cancelled, error };
const char* finish_reason_name(FinishReason reason);

struct FinishEvent {
  FinishReason reason = FinishReason::stop;
  std::string error;  // set when reason == error
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double queue_ms = 0;    // submit → first forward step
  double prefill_ms = 0;  // prompt processing
  double decode_ms = 0;   // first generated token → finish
};

// Receives a request's output on the scheduler thread. Implementations must return quickly
// (copy the text, signal another thread); they must not call back into the engine except cancel.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Newly completed text: whole UTF-8 characters, never part of a stop string.
  virtual void on_text(std::string_view delta) = 0;
  // With logprobs asked for: each sampled token, before the text it completes (end-of-generation
  // tokens and tokens whose text a stop string swallowed are reported too).
  virtual void on_token(const SampledToken& /*token*/) {}
  // Exactly once per accepted request, after its last on_text.
  virtual void on_finish(const FinishEvent& event) = 0;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_tokens_used = 0;   // positions held by running requests
  int64_t kv_tokens_total = 0;  // positions the cache holds
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_cached = 0;         // published blocks, findable for prefix reuse
  uint64_t prefix_tokens_reused = 0;    // prompt positions taken from the cache instead of computed
  uint64_t prompt_tokens_computed = 0;  // prompt positions computed (including recomputation)
  uint64_t preemptions = 0;
  double last_prefill_tokens_per_second = 0;
  double last_decode_tokens_per_second = 0;
  uint64_t requests_finished = 0;
  uint64_t tokens_generated = 0;
};

using RequestId = uint64_t;

class Model;

// Checks that a model, its tokenizer and a context length can run together: vocabulary sizes
// agree and the KV cache fits in memory. Engine::load and perplexity use it.
Status check_inference_fit(const Model& model, const Tokenizer& tokenizer, int context);

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> load(const EngineOptions& options);
  virtual ~Engine() = default;

  // Queues a request; its output goes to `sink`. Errors (empty or over-long prompt, bad sampling
  // values, unknown token ids) are returned here and the sink is never called.
  virtual Result<RequestId> submit(GenerationRequest request, std::shared_ptr<GenerationSink> sink) = 0;
  // Stops a request at the next step; its sink gets on_finish(cancelled). Unknown ids are ignored.
  virtual void cancel(RequestId id) = 0;
  virtual EngineStats stats() const = 0;

  virtual const Tokenizer& tokenizer() const = 0;
  virtual const ModelConfig& model_config() const = 0;
  virtual int context() const = 0;
  virtual int threads() const = 0;
  virtual std::string_view kernels_name() const = 0;
  // The model's chat format: its tokenizer.chat_template, compiled at load, or a named family
  // when the file has none.
  virtual const ChatTemplate& chat_template() const = 0;
  virtual uint64_t weight_bytes_per_token() const = 0;

  // A grammar for JSON output on this model's vocabulary: any JSON object when `schema` is null,
  // else the texts `schema` accepts. Grammars are cached by schema text, so requests with the
  // same schema share their token masks. Errors (Errc::invalid_argument) name the unsupported
  // keyword and its path in the schema.
  virtual Result<std::shared_ptr<grammar::GrammarRuntime>> json_grammar(const json::bj::value* schema) const = 0;
};

}  // namespace darkbloom::engine
