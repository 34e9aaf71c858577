#include <fmt/format.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "apps/darkbloom/commands.h"
#include "base/file.h"
#include "engine/blocking_sink.h"

namespace darkbloom::apps {
namespace {

struct GenerateArgs {
  engine::EngineOptions engine;
  std::string prompt;
  std::string prompt_file;
  int max_tokens = 128;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int top_k = 40;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;
  std::vector<std::string> stop;
  bool no_bos = false;
  bool quiet = false;
};

// Writes deltas to stdout as they arrive.
class StdoutSink final : public engine::BlockingSink {
 public:
  void on_text(std::string_view delta) override {
    std::fwrite(delta.data(), 1, delta.size(), stdout);
    std::fflush(stdout);
  }
};

int run_generate(const GenerateArgs& args) {
  std::string prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    auto text = read_file(args.prompt_file);
    if (!text) return fail(text.error().message);
    prompt = std::move(*text);
  }
  if (prompt.empty()) return fail("the prompt is empty (give --prompt TEXT or --file FILE)");

  auto loaded = engine::Engine::load(args.engine);
  if (!loaded) return fail(loaded.error().message);
  engine::Engine& engine = **loaded;

  engine::EncodeOptions encode;
  encode.add_special = !args.no_bos;
  engine::GenerationRequest request;
  request.prompt_tokens = engine.tokenizer().encode(prompt, encode);
  request.max_tokens = args.max_tokens;
  request.stop = args.stop;
  request.sampling.temperature = args.temperature;
  request.sampling.top_p = args.top_p;
  request.sampling.top_k = args.top_k;
  request.sampling.min_p = args.min_p;
  request.sampling.repetition_penalty = args.repeat_penalty;
  if (args.seed >= 0) request.sampling.seed = static_cast<uint64_t>(args.seed);

  auto sink = std::make_shared<StdoutSink>();
  auto id = engine.submit(std::move(request), sink);
  if (!id) return fail(id.error().message);
  const engine::FinishEvent event = sink->wait();
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (event.reason == engine::FinishReason::error) return fail("generation failed: " + event.error);
  if (!args.quiet) {
    const double prefill_tps = event.prefill_ms > 0 ? event.prompt_tokens / (event.prefill_ms / 1000.0) : 0;
    const double decode_tps = event.decode_ms > 0 && event.completion_tokens > 1
                                  ? (event.completion_tokens - 1) / (event.decode_ms / 1000.0)
                                  : 0;
    std::fprintf(stderr, "%s",
                 fmt::format("[prompt {} tokens, {:.1f} tok/s | generated {} tokens, {:.1f} tok/s | finish: {} | "
                             "{} threads, {} kernels]\n",
                             event.prompt_tokens, prefill_tps, event.completion_tokens, decode_tps,
                             engine::finish_reason_name(event.reason), engine.threads(), engine.kernels_name())
                     .c_str());
  }
  return 0;
}

}  // namespace

void add_engine_options(CLI::App* command, engine::EngineOptions* options) {
  command->add_option("-m,--model", options->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  command->add_option("-t,--threads", options->threads, "compute threads (0 = one per hardware thread)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  command->add_option("-c,--ctx", options->context, "context length in tokens (0 = model's, capped at 4096)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  add_kernels_option(command, &options->kernels);
  add_batching_options(command, options);
  add_chat_template_option(command, options);
}

void add_chat_template_option(CLI::App* command, engine::EngineOptions* options) {
  command
      ->add_option("--chat-template-file", options->chat_template_file,
                   "a Jinja chat template to use instead of the model's tokenizer.chat_template")
      ->check(CLI::ExistingFile);
}

void add_kernels_option(CLI::App* command, std::string* kernels) {
  command
      ->add_option("--kernels", *kernels,
                   "compute kernels: auto (the fastest this CPU runs), avx512, avx2, scalar, or float (no "
                   "activation rounding; slow, for checking)")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512", "float"}))
      ->capture_default_str();
}

void add_batching_options(CLI::App* command, engine::EngineOptions* options) {
  command->add_option("--max-batch", options->max_batch, "requests decoding together")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  command
      ->add_option("--step-tokens", options->step_tokens,
                   "tokens per forward step: every decoding request's next token, then prompt chunks")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  command
      ->add_option("--kv-memory", options->kv_memory_mb,
                   "KV cache size in MiB (0 = max-batch full contexts, at most a quarter of RAM)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  command->add_option("--kv-type", options->kv_type, "KV cache element type: f16, q8_0 (half the memory) or f32")
      ->check(CLI::IsMember({"f16", "q8_0", "f32"}))
      ->capture_default_str();
  command->add_flag("!--no-prefix-reuse", options->prefix_reuse,
                    "recompute every prompt instead of reusing cached keys and values of equal beginnings");
}

void register_generate(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Stream a completion of a prompt from a GGUF model");
  add_engine_options(cmd, &args->engine);
  auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "prompt text");
  cmd->add_option("-f,--file", args->prompt_file, "read the prompt from a file")
      ->excludes(prompt)
      ->check(CLI::ExistingFile);
  cmd->add_option("-n,--max-tokens", args->max_tokens, "tokens to generate at most")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "sampling temperature (0 = greedy)")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "nucleus sampling mass, in (0, 1]")
      ->check(CLI::Validator(
          [](std::string& value) {
            char* end = nullptr;
            const double p = std::strtod(value.c_str(), &end);
            const bool ok = end != value.c_str() && *end == '\0' && p > 0.0 && p <= 1.0;
            return ok ? std::string() : std::string("must be a number in (0, 1]");
          },
          "(0, 1]"))
      ->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "keep the k most likely tokens (0 = off)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--min-p", args->min_p, "drop tokens below this fraction of the top probability")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", args->repeat_penalty, "penalty for tokens of the last 64")
      ->check(CLI::Range(0.01, 10.0))
      ->capture_default_str();
  cmd->add_option("-s,--seed", args->seed, "random seed (-1 = random)")->capture_default_str();
  cmd->add_option("--stop", args->stop, "stop before this text (repeatable)");
  cmd->add_flag("--no-bos", args->no_bos, "do not add the BOS/EOS tokens the vocabulary asks for");
  cmd->add_flag("-q,--quiet", args->quiet, "do not print speed statistics to stderr");
  cmd->callback([runner, args] { *runner = [args] { return run_generate(*args); }; });
}

}  // namespace darkbloom::apps
