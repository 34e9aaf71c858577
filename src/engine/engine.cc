#include "engine/engine.h"

#include <fmt/format.h>

#include <list>
#include <mutex>

#include "base/file.h"
#include "base/log.h"
#include "base/system_info.h"
#include "base/thread_pool.h"
#include "base/utf8.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "engine/kernels/kernel_set.h"
#include "engine/model/model.h"
#include "engine/scheduler/scheduler.h"

namespace darkbloom::engine {
namespace {

constexpr int kDefaultContextCap = 4096;
constexpr size_t kMaxStopStrings = 16;
// Compiled grammars kept for reuse (each holds its token-mask cache).
constexpr size_t kCachedGrammars = 16;
constexpr size_t kShareStacksBelow = 256u << 10;
// Schemas larger than this are refused (compiling one is work on the caller's thread).
constexpr size_t kMaxSchemaBytes = 256u << 10;

class LocalEngine final : public Engine {
 public:
  LocalEngine(std::unique_ptr<Model> model, Tokenizer tokenizer, ChatTemplate chat_template, int threads,
              const kernels::KernelSet& kernels, const SchedulerOptions& options)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        pool_(threads),
        kernels_(kernels),
        context_(options.context),
        chat_template_(std::move(chat_template)),
        scheduler_(*model_, tokenizer_, pool_, kernels_, options) {}

  Result<RequestId> submit(GenerationRequest request, std::shared_ptr<GenerationSink> sink) override {
    if (sink == nullptr) return make_error(Errc::invalid_argument, "no sink for the request's output");
    if (request.prompt_tokens.empty())
      return make_error(Errc::invalid_argument, "the prompt is empty (it has no tokens)");
    if (request.prompt_tokens.size() >= static_cast<size_t>(context_)) {
      return make_error(Errc::out_of_range,
                        fmt::format("the prompt has {} tokens but the context holds {} (including the answer)",
                                    request.prompt_tokens.size(), context_));
    }
    for (int32_t token : request.prompt_tokens) {
      if (token < 0 || token >= model_->config().n_vocab) {
        return make_error(Errc::invalid_argument,
                          fmt::format("token id {} is outside the vocabulary of {}", token, model_->config().n_vocab));
      }
    }
    if (request.max_tokens <= 0) return make_error(Errc::invalid_argument, "max_tokens must be positive");
    DARKBLOOM_RETURN_IF_ERROR(request.sampling.validate());
    if (request.stop.size() > kMaxStopStrings) {
      return make_error(Errc::invalid_argument, fmt::format("at most {} stop strings are allowed", kMaxStopStrings));
    }
    for (const auto& stop : request.stop) {
      if (stop.empty() || !utf8::is_valid(stop)) {
        return make_error(Errc::invalid_argument, "stop strings must be non-empty valid UTF-8");
      }
    }
    if (request.logprobs < -1 || request.logprobs > kMaxTopLogprobs) {
      return make_error(Errc::invalid_argument, fmt::format("top logprobs must be between 0 and {}", kMaxTopLogprobs));
    }
    if (request.grammar && &request.grammar->trie() != &trie()) {
      return make_error(Errc::invalid_argument, "the grammar was made for another model");
    }
    return scheduler_.enqueue(std::move(request), std::move(sink));
  }

  Result<std::shared_ptr<grammar::GrammarRuntime>> json_grammar(const json::bj::value* schema) const override {
    std::string key = schema == nullptr ? std::string() : json::dump(*schema);
    {
      std::lock_guard lock(grammar_mutex_);
      for (auto it = grammars_.begin(); it != grammars_.end(); ++it) {
        // A runtime that has grown large (one client's varied answers) is not shared further:
        // a fresh one takes its place, so nobody inherits a full arena.
        if (it->first == key && it->second->stack_count() < kShareStacksBelow) {
          auto found = it->second;
          grammars_.splice(grammars_.begin(), grammars_, it);  // most recently used first
          return found;
        }
      }
    }
    if (key.size() > kMaxSchemaBytes) {
      return make_error(Errc::invalid_argument, fmt::format("the schema takes {} bytes; at most {} are supported",
                                                            key.size(), kMaxSchemaBytes));
    }
    grammar::Grammar compiled;
    if (schema == nullptr) {
      compiled = grammar::json_object_grammar();
    } else {
      auto result = grammar::compile_json_schema(*schema);
      if (!result) return result.error();
      compiled = std::move(*result);
    }
    auto runtime = std::make_shared<grammar::GrammarRuntime>(std::move(compiled), &trie());
    std::lock_guard lock(grammar_mutex_);
    grammars_.emplace_front(std::move(key), runtime);
    if (grammars_.size() > kCachedGrammars) grammars_.pop_back();
    return runtime;
  }

  void cancel(RequestId id) override { scheduler_.cancel(id); }
  EngineStats stats() const override { return scheduler_.stats(); }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  const ModelConfig& model_config() const override { return model_->config(); }
  int context() const override { return context_; }
  int threads() const override { return pool_.size(); }
  std::string_view kernels_name() const override { return kernels_.name; }
  const ChatTemplate& chat_template() const override { return chat_template_; }
  uint64_t weight_bytes_per_token() const override { return model_->weight_bytes_per_token(); }

 private:
  std::unique_ptr<Model> model_;
  Tokenizer tokenizer_;
  // The vocabulary's trie for grammars, built at the first one.
  const grammar::TokenTrie& trie() const {
    std::call_once(trie_once_, [this] { trie_ = std::make_unique<grammar::TokenTrie>(tokenizer_); });
    return *trie_;
  }
  mutable std::once_flag trie_once_;
  mutable std::unique_ptr<grammar::TokenTrie> trie_;
  mutable std::mutex grammar_mutex_;
  mutable std::list<std::pair<std::string, std::shared_ptr<grammar::GrammarRuntime>>> grammars_;
  ThreadPool pool_;
  const kernels::KernelSet& kernels_;
  int context_;
  ChatTemplate chat_template_;
  Scheduler scheduler_;  // last: its thread uses everything above
};

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::stop:
      return "stop";
    case FinishReason::length:
      return "length";
    case FinishReason::cancelled:
      return "cancelled";
    case FinishReason::error:
      return "error";
  }
  return "error";
}

Status check_inference_fit(const Model& model, const Tokenizer& tokenizer, int context) {
  const ModelConfig& config = model.config();
  if (tokenizer.n_vocab() != config.n_vocab) {
    return make_error(Errc::bad_format,
                      fmt::format("{}: the tokenizer has {} tokens but the model's embedding has {} rows",
                                  model.file().name(), tokenizer.n_vocab(), config.n_vocab));
  }
  if (context < 2) return make_error(Errc::invalid_argument, "the context must hold at least 2 tokens");
  if (context > (1 << 20)) return make_error(Errc::out_of_range, "the context must be at most 1048576 tokens");
  // Keys and values in float for every layer and position: refuse what cannot fit in memory
  // rather than dying on an allocation failure.
  const uint64_t kv_bytes = 2ull * sizeof(float) * static_cast<uint64_t>(config.n_layer) *
                            static_cast<uint64_t>(config.kv_width()) * static_cast<uint64_t>(context);
  const uint64_t memory = physical_memory_bytes();
  if (memory > 0 && kv_bytes > memory / 2) {
    return make_error(
        Errc::out_of_range,
        fmt::format("a context of {} tokens needs {:.1f} GiB of KV cache, more than half of this "
                    "machine's {:.1f} GiB; lower --ctx",
                    context, static_cast<double>(kv_bytes) / (1 << 30), static_cast<double>(memory) / (1 << 30)));
  }
  return {};
}

namespace {

// Blocks of the KV cache: the budget given, or enough for max_batch full contexts (at most a
// quarter of RAM, at least one context), refusing what cannot hold one request or fit in memory.
Result<int64_t> kv_cache_blocks(const ModelConfig& config, KvType type, int context, int max_batch,
                                int64_t kv_memory_mb) {
  if (type == KvType::q8_0 && config.head_dim % 32 != 0) {
    return make_error(
        Errc::unsupported,
        fmt::format("a q8_0 KV cache needs heads a multiple of 32 wide (this model's are {})", config.head_dim));
  }
  const uint64_t block = KvCache::block_bytes(type, config.n_layer, config.kv_width());
  const uint64_t one_context =
      block * static_cast<uint64_t>((context + KvCache::kBlockTokens - 1) / KvCache::kBlockTokens);
  const uint64_t memory = physical_memory_bytes();
  uint64_t budget;
  if (kv_memory_mb > 0) {
    budget = static_cast<uint64_t>(kv_memory_mb) << 20;
    if (budget < one_context) {
      return make_error(Errc::out_of_range,
                        fmt::format("{} MiB of KV cache cannot hold one request of the {}-token context (it needs "
                                    "{} MiB); raise --kv-memory or lower --ctx",
                                    kv_memory_mb, context, (one_context + (1 << 20) - 1) >> 20));
    }
  } else {
    budget = one_context * static_cast<uint64_t>(max_batch);
    if (memory > 0) budget = std::max(one_context, std::min(budget, memory / 4));
  }
  if (memory > 0 && budget > memory / 2) {
    return make_error(Errc::out_of_range,
                      fmt::format("the KV cache would take {:.1f} GiB, more than half of this machine's {:.1f} GiB; "
                                  "lower --kv-memory or --ctx",
                                  static_cast<double>(budget) / (1 << 30), static_cast<double>(memory) / (1 << 30)));
  }
  return static_cast<int64_t>(budget / block);
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::load(const EngineOptions& options) {
  if (options.threads < 0 || options.threads > 1024) {
    return make_error(
        Errc::invalid_argument,
        fmt::format("threads must be between 0 (one per hardware thread) and 1024 (got {})", options.threads));
  }
  if (options.context < 0) return make_error(Errc::invalid_argument, "context must not be negative");
  const kernels::KernelSet* kernels = kernels::kernels_by_name(options.kernels);
  if (kernels == nullptr) {
    return make_error(Errc::invalid_argument,
                      fmt::format("kernels '{}' are unknown or not supported by this CPU", options.kernels));
  }
  auto model = Model::load(options.model_path);
  if (!model) return model.error();
  auto tokenizer = Tokenizer::from_gguf((*model)->file());
  if (!tokenizer) return tokenizer.error();
  std::string template_source;
  std::string template_origin = options.model_path + ": tokenizer.chat_template";
  if (!options.chat_template_file.empty()) {
    auto source = read_file(options.chat_template_file);
    if (!source) return source.error();
    template_source = std::move(*source);
    template_origin = options.chat_template_file;
  } else if (const GgufValue* value = (*model)->file().find("tokenizer.chat_template"); value && value->as_string()) {
    template_source = *value->as_string();
  }
  auto chat_template = ChatTemplate::load(template_source, *tokenizer);
  if (!chat_template) return chat_template.error().with_context(template_origin);
  const int trained = (*model)->config().context_length;
  const int context = options.context > 0 ? options.context : std::min(trained, kDefaultContextCap);
  if (context > trained) {
    log::warn("context {} is longer than the {} tokens the model was trained on; quality may drop", context, trained);
  }
  DARKBLOOM_RETURN_IF_ERROR(check_inference_fit(**model, *tokenizer, context));
  if (options.max_batch < 1 || options.max_batch > 1024) {
    return make_error(Errc::invalid_argument,
                      fmt::format("max batch must be between 1 and 1024 (got {})", options.max_batch));
  }
  if (options.step_tokens < 1 || options.step_tokens > 65536) {
    return make_error(Errc::invalid_argument,
                      fmt::format("step tokens must be between 1 and 65536 (got {})", options.step_tokens));
  }
  const auto kv_type = parse_kv_type(options.kv_type);
  if (!kv_type) {
    return make_error(Errc::invalid_argument,
                      fmt::format("KV type must be f16, q8_0 or f32 (got '{}')", options.kv_type));
  }
  auto blocks = kv_cache_blocks((*model)->config(), *kv_type, context, options.max_batch, options.kv_memory_mb);
  if (!blocks) return blocks.error();
  SchedulerOptions scheduler;
  scheduler.context = context;
  scheduler.max_running = options.max_batch;
  scheduler.step_tokens = options.step_tokens;
  scheduler.kv_type = *kv_type;
  scheduler.kv_blocks = *blocks;
  scheduler.prefix_reuse = options.prefix_reuse;
  const int threads = options.threads > 0 ? options.threads : ThreadPool::hardware_threads();
  return std::unique_ptr<Engine>(new LocalEngine(std::move(*model), std::move(*tokenizer), std::move(*chat_template),
                                                 threads, *kernels, scheduler));
}

}  // namespace darkbloom::engine
