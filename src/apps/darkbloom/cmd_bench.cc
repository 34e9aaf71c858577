#include <fmt/format.h>

#include <cstdio>
#include <sstream>

#include "apps/darkbloom/commands.h"
#include "engine/evaluation/engine_bench.h"

namespace darkbloom::apps {
namespace {

struct BenchArgs {
  engine::EngineOptions engine;
  std::string threads = "0";
  engine::EngineBenchOptions bench;
  bool json = false;
};

Result<std::vector<int>> parse_thread_list(const std::string& text) {
  std::vector<int> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    try {
      size_t used = 0;
      const int value = std::stoi(item, &used);
      if (used != item.size() || value < 0 || value > 1024) throw std::invalid_argument(item);
      values.push_back(value);
    } catch (const std::exception&) {
      return make_error(Errc::invalid_argument, "--threads takes a comma-separated list of numbers, e.g. 1,2");
    }
  }
  if (values.empty()) return make_error(Errc::invalid_argument, "--threads is empty");
  return values;
}

int run_bench(const BenchArgs& args) {
  auto thread_counts = parse_thread_list(args.threads);
  if (!thread_counts) return fail(thread_counts.error().message);
  std::vector<engine::EngineBenchResult> results;
  for (int threads : *thread_counts) {
    engine::EngineOptions options = args.engine;
    options.threads = threads;
    if (options.context == 0) options.context = args.bench.prompt_tokens + args.bench.gen_tokens;
    auto loaded = engine::Engine::load(options);
    if (!loaded) return fail(loaded.error().message);
    if (!args.json) {
      std::fprintf(
          stderr, "%s",
          fmt::format("benchmarking with {} threads ({} kernels)...\n", (*loaded)->threads(), (*loaded)->kernels_name())
              .c_str());
    }
    auto result = engine::run_engine_bench(**loaded, args.bench, [&](int done, int total) {
      if (!args.json) std::fprintf(stderr, "  run %d/%d done\n", done, total);
    });
    if (!result) return fail(result.error().message);
    results.push_back(*result);
  }
  if (args.json) {
    std::string out = "[";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      out += fmt::format(
          "{}{{\"threads\":{},\"prompt_tokens\":{},\"gen_tokens\":{},\"ttft_ms\":{:.3f},"
          "\"prefill_tokens_per_second\":{:.3f},\"decode_tokens_per_second\":{:.3f},"
          "\"weight_bytes_per_token\":{},\"decode_weight_gb_per_second\":{:.3f}}}",
          i ? "," : "", r.threads, r.prompt_tokens, r.gen_tokens, r.time_to_first_token_ms, r.prefill_tokens_per_second,
          r.decode_tokens_per_second, r.weight_bytes_per_token, r.decode_weight_gigabytes_per_second);
    }
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  std::printf("%s", fmt::format("{:>7} | {:>6} | {:>4} | {:>9} | {:>12} | {:>11} | {:>14}\n", "threads", "prompt",
                                "gen", "TTFT ms", "prefill t/s", "decode t/s", "weights GB/s")
                        .c_str());
  for (const auto& r : results) {
    std::printf("%s", fmt::format("{:>7} | {:>6} | {:>4} | {:>9.1f} | {:>12.1f} | {:>11.2f} | {:>14.2f}\n", r.threads,
                                  r.prompt_tokens, r.gen_tokens, r.time_to_first_token_ms, r.prefill_tokens_per_second,
                                  r.decode_tokens_per_second, r.decode_weight_gigabytes_per_second)
                          .c_str());
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print numbers");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand("engine", "Prefill and decode tokens/s of a model (batch 1, greedy, medians)");
  cmd->add_option("-m,--model", args->engine.model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-t,--threads", args->threads,
                  "comma-separated thread counts to measure, e.g. 1,2 (0 = one per core)")
      ->capture_default_str();
  cmd->add_option("-c,--ctx", args->engine.context, "context length (0 = prompt + gen)")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--kernels", args->engine.kernels,
                  "compute kernels: auto, avx2, scalar, or float (no activation rounding; slow, for checking)")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "float"}))
      ->capture_default_str();
  cmd->add_option("--prompt", args->bench.prompt_tokens, "prompt length in tokens")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gen", args->bench.gen_tokens, "tokens to generate")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--repeat", args->bench.repetitions, "runs per thread count (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print JSON instead of a table");
  cmd->callback([runner, args] { *runner = [args] { return run_bench(*args); }; });
}

}  // namespace darkbloom::apps
