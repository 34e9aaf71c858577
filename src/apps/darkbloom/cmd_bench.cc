#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "apps/darkbloom/commands.h"
#include "base/file.h"
#include "engine/evaluation/engine_bench.h"
#include "engine/evaluation/grammar_bench.h"
#include "engine/evaluation/machine_speed.h"

namespace darkbloom::apps {
namespace {

struct BenchArgs {
  engine::EngineOptions engine;
  std::vector<std::string> models;
  std::string threads = "0";
  std::string batches = "1";
  engine::EngineBenchOptions bench;
  bool json = false;
};

Result<std::vector<int>> parse_list(const std::string& text, const char* flag, int low, int high) {
  std::vector<int> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    try {
      size_t used = 0;
      const int value = std::stoi(item, &used);
      if (used != item.size() || value < low || value > high) throw std::invalid_argument(item);
      values.push_back(value);
    } catch (const std::exception&) {
      return make_error(
          Errc::invalid_argument,
          fmt::format("{} takes a comma-separated list of numbers from {} to {}, e.g. 1,2", flag, low, high));
    }
  }
  if (values.empty()) return make_error(Errc::invalid_argument, fmt::format("{} is empty", flag));
  return values;
}

struct Measured {
  std::string model;  // the file's name
  engine::EngineBenchResult result;
  double bandwidth_gb_per_s = 0;  // measured right before this thread count's runs
  double fma_gflops = 0;
  uint64_t matmul_parameters = 0;
  // Shares of the machine's limits: batch-1 decode against the bandwidth, prefill against fp32 FMA.
  double bandwidth_share() const {
    return bandwidth_gb_per_s > 0 ? result.decode_weight_gigabytes_per_second / bandwidth_gb_per_s : 0;
  }
  double prefill_gflops() const {
    return result.prefill_tokens_per_second * 2.0 * static_cast<double>(matmul_parameters) / 1e9;
  }
  double fma_share() const { return fma_gflops > 0 ? prefill_gflops() / fma_gflops : 0; }
};

std::string to_json(const std::vector<Measured>& rows) {
  std::string out = "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& m = rows[i];
    const auto& r = m.result;
    out += fmt::format(
        "{}{{\"model\":{},\"threads\":{},\"batch\":{},\"prompt_tokens\":{},\"gen_tokens\":{},\"ttft_ms\":{:.3f},"
        "\"busy_ttft_ms\":{:.3f},\"prefill_tokens_per_second\":{:.3f},\"decode_tokens_per_second\":{:.3f},"
        "\"aggregate_decode_tokens_per_second\":{:.3f},\"weight_bytes_per_token\":{},"
        "\"decode_weight_gb_per_second\":{:.3f},\"memory_bandwidth_gb_per_second\":{:.3f},\"bandwidth_share\":{:.4f},"
        "\"matmul_parameters\":{},\"prefill_gflops\":{:.3f},\"fma_peak_gflops\":{:.3f},\"fma_share\":{:.4f}}}",
        i ? "," : "", json::dump(json::bj::value(m.model)), r.threads, r.batch, r.prompt_tokens, r.gen_tokens,
        r.time_to_first_token_ms, r.busy_ttft_ms, r.prefill_tokens_per_second, r.decode_tokens_per_second,
        r.aggregate_decode_tokens_per_second, r.weight_bytes_per_token, r.decode_weight_gigabytes_per_second,
        m.bandwidth_gb_per_s, m.bandwidth_share(), m.matmul_parameters, m.prefill_gflops(), m.fma_gflops,
        m.fma_share());
  }
  return out + "]";
}

// Lines that read the table's rows against each other: how each model's aggregate decode grows
// from one batch size to the next, and, with several models, each model's batch-1 decode
// against the first model's next to the ratio of the weight bytes they read per step (a
// mixture of experts against the dense model of its total size: 1.00 means the speed its bytes
// allow).
void print_comparisons(const std::vector<Measured>& rows) {
  for (size_t i = 1; i < rows.size(); ++i) {
    const Measured& a = rows[i - 1];
    const Measured& b = rows[i];
    if (a.model != b.model || a.result.threads != b.result.threads || b.result.batch <= a.result.batch) continue;
    std::printf("%s", fmt::format("{}: batch {} aggregate decode is {:.2f}x batch {}'s\n", b.model, b.result.batch,
                                  b.result.aggregate_decode_tokens_per_second /
                                      std::max(1e-9, a.result.aggregate_decode_tokens_per_second),
                                  a.result.batch)
                          .c_str());
  }
  const Measured& first = rows.front();
  for (const Measured& m : rows) {
    if (m.model == first.model || m.result.batch != first.result.batch || m.result.threads != first.result.threads ||
        m.result.weight_bytes_per_token == 0) {
      continue;
    }
    const double speed = m.result.decode_tokens_per_second / std::max(1e-9, first.result.decode_tokens_per_second);
    const double bytes =
        static_cast<double>(first.result.weight_bytes_per_token) / static_cast<double>(m.result.weight_bytes_per_token);
    std::printf("%s", fmt::format("{} against {}: batch-{} decode {:.2f}x as fast, {:.2f}x fewer weight bytes per "
                                  "step; {:.2f} of the speed its bytes allow\n",
                                  m.model, first.model, m.result.batch, speed, bytes, speed / bytes)
                          .c_str());
  }
}

int run_bench(const BenchArgs& args) {
  auto thread_counts = parse_list(args.threads, "--threads", 0, 1024);
  if (!thread_counts) return fail(thread_counts.error().message);
  auto batches = parse_list(args.batches, "--batch", 1, 256);
  if (!batches) return fail(batches.error().message);
  engine::EngineBenchOptions bench = args.bench;
  bench.batch_sizes = *batches;
  const int largest = *std::max_element(batches->begin(), batches->end());
  std::vector<Measured> rows;
  for (const std::string& model : args.models) {
    for (int threads : *thread_counts) {
      engine::EngineOptions options = args.engine;
      options.model_path = model;
      options.threads = threads;
      if (options.context == 0) options.context = bench.prompt_tokens + bench.gen_tokens;
      options.max_batch = std::max(options.max_batch, largest);
      auto loaded = engine::Engine::load(options);
      if (!loaded) return fail(loaded.error().message);
      engine::Engine& engine = **loaded;
      if (!args.json) {
        std::fprintf(stderr, "%s",
                     fmt::format("benchmarking {} with {} threads ({} kernels, {} KV)...\n", model, engine.threads(),
                                 engine.kernels_name(), args.engine.kv_type)
                         .c_str());
      }
      // The machine's limits, measured now with as many threads (it is shared and drifts).
      ThreadPool pool(engine.threads());
      const double fma = engine::measure_fma_gflops(pool);
      double bandwidth = engine::measure_read_bandwidth(pool);
      auto results = engine::run_engine_bench(engine, bench, [&](int done, int total) {
        if (!args.json) std::fprintf(stderr, "  %d/%d\n", done, total);
      });
      if (!results) return fail(results.error().message);
      // Again after the runs; the median of the two stands for the decode's conditions.
      bandwidth = (bandwidth + engine::measure_read_bandwidth(pool)) / 2.0;
      const std::string name = std::filesystem::path(model).filename().string();
      for (const auto& result : *results) {
        rows.push_back({name, result, bandwidth, fma, engine::matmul_parameters(engine.model_config())});
      }
    }
  }
  if (args.json) {
    std::printf("%s\n", to_json(rows).c_str());
    return 0;
  }
  size_t name_width = 5;
  for (const auto& m : rows) name_width = std::max(name_width, m.model.size());
  std::printf("%s", fmt::format("{:<{}} | {:>7} | {:>5} | {:>6} | {:>4} | {:>9} | {:>10} | {:>11} | {:>10} | {:>10} | "
                                "{:>12} | {:>7} | {:>9}\n",
                                "model", name_width, "threads", "batch", "prompt", "gen", "TTFT ms", "busy TTFT",
                                "prefill t/s", "decode t/s", "aggregate", "weights GB/s", "of BW", "of FMA")
                        .c_str());
  for (const auto& m : rows) {
    const auto& r = m.result;
    std::printf("%s", fmt::format("{:<{}} | {:>7} | {:>5} | {:>6} | {:>4} | {:>9.1f} | {:>10.1f} | {:>11.1f} | "
                                  "{:>10.2f} | {:>10.2f} | {:>12.2f} | {:>6.0f}% | {:>8.1f}%\n",
                                  m.model, name_width, r.threads, r.batch, r.prompt_tokens, r.gen_tokens,
                                  r.time_to_first_token_ms, r.busy_ttft_ms, r.prefill_tokens_per_second,
                                  r.decode_tokens_per_second, r.aggregate_decode_tokens_per_second,
                                  r.decode_weight_gigabytes_per_second, 100 * m.bandwidth_share(), 100 * m.fma_share())
                          .c_str());
  }
  for (const auto& m : rows) {
    if (m.result.batch != rows.front().result.batch) continue;
    std::printf(
        "%s",
        fmt::format("{}, threads {}: {:.1f} MB of weights per decode step; memory bandwidth {:.1f} GB/s, batch-{} "
                    "decode at {:.0f}% of it; fp32 FMA peak {:.1f} GFLOP/s, prefill at {:.1f} GFLOP/s "
                    "({:.0f}%, 2 x {:.1f}M matrix parameters per token)\n",
                    m.model, m.result.threads, m.result.weight_bytes_per_token / 1e6, m.bandwidth_gb_per_s,
                    m.result.batch, 100 * m.bandwidth_share(), m.fma_gflops, m.prefill_gflops(), 100 * m.fma_share(),
                    m.matmul_parameters / 1e6)
            .c_str());
  }
  print_comparisons(rows);
  return 0;
}

struct GrammarBenchArgs {
  engine::EngineOptions engine;
  std::string schema_path;
  std::string batches = "1,8";
  engine::GrammarBenchOptions bench;
};

int run_grammar_bench(const GrammarBenchArgs& args) {
  auto batches = parse_list(args.batches, "--batch", 1, 256);
  if (!batches) return fail(batches.error().message);
  auto text = read_file(args.schema_path);
  if (!text) return fail(text.error().message);
  auto schema = json::parse(*text, args.schema_path);
  if (!schema) return fail(schema.error().message);
  engine::EngineOptions options = args.engine;
  options.max_batch = std::max(options.max_batch, *std::max_element(batches->begin(), batches->end()));
  // Room for the decoding runs' short prompts and --gen tokens.
  if (options.context == 0) options.context = std::max(512, args.bench.gen_tokens + 64);
  auto loaded = engine::Engine::load(options);
  if (!loaded) return fail(loaded.error().message);
  engine::GrammarBenchOptions bench = args.bench;
  bench.batch_sizes = *batches;
  auto result = engine::run_grammar_bench(**loaded, *schema, bench,
                                          [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  if (!result) return fail(result.error().message);
  const auto& r = *result;
  std::printf("%s", fmt::format("mask step on a {}-token vocabulary ({} threads, {} kernels):\n", r.n_vocab,
                                (*loaded)->threads(), (*loaded)->kernels_name())
                        .c_str());
  std::printf("%s", fmt::format("  {:<28} {:>7} {:>10} {:>10}\n", "", "steps", "p50 us", "p99 us").c_str());
  auto row = [](const char* name, const engine::MaskTimes& t) {
    std::printf("%s", fmt::format("  {:<28} {:>7} {:>10.1f} {:>10.1f}\n", name, t.steps, t.p50_us, t.p99_us).c_str());
  };
  row("first answer (cold cache)", r.cold);
  row("later answers (warm cache)", r.warm);
  row("all", r.all);
  std::printf("%s", fmt::format("  {} of {} simulated answers complete; {} masks cached, {} stacks\n",
                                r.answers_completed, bench.answers, r.cached_masks, r.stacks)
                        .c_str());
  std::printf("%s", fmt::format("decoding ({} tokens per request, random sampling):\n", bench.gen_tokens).c_str());
  std::printf("%s", fmt::format("  {:>5} {:>14} {:>14} {:>9} {:>14} {:>18}\n", "batch", "free t/s", "constrained",
                                "ratio", "step ms", "mask p50 of step")
                        .c_str());
  for (const auto& d : r.decode) {
    const double step_ms = d.free_tokens_per_second > 0 ? 1000.0 / d.free_tokens_per_second : 0;
    const double share = step_ms > 0 ? r.all.p50_us * d.batch / (step_ms * 1000.0) : 0;
    std::printf("%s", fmt::format("  {:>5} {:>14.2f} {:>14.2f} {:>8.1f}% {:>14.2f} {:>17.2f}%\n", d.batch,
                                  d.free_tokens_per_second, d.constrained_tokens_per_second,
                                  d.free_tokens_per_second > 0
                                      ? 100.0 * d.constrained_tokens_per_second / d.free_tokens_per_second
                                      : 0.0,
                                  step_ms, 100.0 * share)
                          .c_str());
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print numbers");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand(
      "engine",
      "Time to first token, prefill and decode tokens/s of a model per batch size (greedy, medians), with the\n"
      "machine's memory bandwidth and fp32 FMA peak measured in the same run");
  cmd->add_option("-m,--model", args->models, "GGUF model file; repeat the flag to measure several in one table")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-t,--threads", args->threads,
                  "comma-separated thread counts to measure, e.g. 1,2 (0 = one per core)")
      ->capture_default_str();
  cmd->add_option("-b,--batch", args->batches, "comma-separated batch sizes, e.g. 1,2,4,8,16")->capture_default_str();
  cmd->add_option("-c,--ctx", args->engine.context, "context length (0 = prompt + gen)")->check(CLI::Range(0, 1 << 20));
  add_kernels_option(cmd, &args->engine.kernels);
  add_batching_options(cmd, &args->engine);
  cmd->add_option("--prompt", args->bench.prompt_tokens, "prompt length in tokens")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gen", args->bench.gen_tokens, "tokens to generate")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--repeat", args->bench.repetitions, "runs per batch size (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print JSON instead of a table");
  cmd->callback([runner, args] { *runner = [args] { return run_bench(*args); }; });

  add_model_proof_bench(bench, runner);

  auto grammar_args = std::make_shared<GrammarBenchArgs>();
  CLI::App* grammar = bench->add_subcommand(
      "grammar",
      "What structured output costs: the mask step per token (p50/p99, cold and warm cache) over\n"
      "random answers to a JSON schema, and free vs constrained decoding through the engine");
  grammar->add_option("-m,--model", grammar_args->engine.model_path, "GGUF model file")
      ->required()
      ->check(CLI::ExistingFile);
  grammar->add_option("--schema", grammar_args->schema_path, "JSON Schema file (as in response_format)")
      ->required()
      ->check(CLI::ExistingFile);
  grammar->add_option("-t,--threads", grammar_args->engine.threads, "threads (0 = one per core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  grammar->add_option("-b,--batch", grammar_args->batches, "comma-separated batch sizes for the decoding runs")
      ->capture_default_str();
  grammar->add_option("--answers", grammar_args->bench.answers, "simulated answers for the mask timings")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  grammar->add_option("--gen", grammar_args->bench.gen_tokens, "tokens per request in the decoding runs")
      ->check(CLI::Range(2, 1 << 16))
      ->capture_default_str();
  add_kernels_option(grammar, &grammar_args->engine.kernels);
  grammar->callback([runner, grammar_args] { *runner = [grammar_args] { return run_grammar_bench(*grammar_args); }; });
}

}  // namespace darkbloom::apps
