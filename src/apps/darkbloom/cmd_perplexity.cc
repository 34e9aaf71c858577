#include <fmt/format.h>

#include <cstdio>

#include "apps/darkbloom/commands.h"
#include "base/file.h"
#include "base/thread_pool.h"
#include "engine/evaluation/perplexity.h"
#include "engine/kernels/kernel_set.h"
#include "engine/model/model.h"

namespace darkbloom::apps {
namespace {

struct PerplexityArgs {
  engine::EngineOptions engine;
  std::string file;
  int max_windows = 0;
};

int run_perplexity(const PerplexityArgs& args) {
  auto text = read_file(args.file);
  if (!text) return fail(text.error().message);
  const auto* kernels = engine::kernels::kernels_by_name(args.engine.kernels);
  if (kernels == nullptr) return fail("kernels '" + args.engine.kernels + "' are not supported by this CPU");
  auto model = engine::Model::load(args.engine.model_path);
  if (!model) return fail(model.error().message);
  auto tokenizer = engine::Tokenizer::from_gguf((*model)->file());
  if (!tokenizer) return fail(tokenizer.error().message);
  ThreadPool pool(args.engine.threads);
  engine::PerplexityOptions options;
  options.context = args.engine.context > 0 ? args.engine.context : 512;
  options.max_windows = args.max_windows;
  auto result = engine::compute_perplexity(
      **model, *tokenizer, pool, *kernels, *text, options, [](int done, int total, double ppl) {
        std::fprintf(stderr, "%s", fmt::format("[window {}/{}] perplexity so far {:.4f}\n", done, total, ppl).c_str());
      });
  if (!result) return fail(result.error().message);
  std::printf("%s", fmt::format("perplexity: {:.4f} ({} tokens scored in {} windows of {}; text has {} tokens)\n",
                                result->perplexity, result->tokens_scored, result->windows, options.context,
                                result->text_tokens)
                        .c_str());
  return 0;
}

}  // namespace

void register_perplexity(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity",
                                     "Perplexity of a text file under a model (windows of --ctx tokens, default 512)");
  add_engine_options(cmd, &args->engine);
  cmd->add_option("-f,--file", args->file, "text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--max-windows", args->max_windows, "stop after this many windows (0 = all)")
      ->check(CLI::Range(0, 1 << 30));
  cmd->callback([runner, args] { *runner = [args] { return run_perplexity(*args); }; });
}

}  // namespace darkbloom::apps
