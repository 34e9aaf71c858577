// Subcommands of the `darkbloom` binary. Each registers its options on the CLI11 app and returns
// the function that runs it (returning the process exit code).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/json.h"
#include "engine/engine.h"

namespace darkbloom::apps {

using CommandRunner = std::function<int()>;

// Every register_* adds one subcommand to `app`; the runner is stored in `runner` and called
// when that subcommand was given.
void register_generate(CLI::App& app, CommandRunner* runner);
void register_perplexity(CLI::App& app, CommandRunner* runner);
void register_models(CLI::App& app, CommandRunner* runner);
void register_bench(CLI::App& app, CommandRunner* runner);
// `bench model-proof`, under the bench command (cmd_models.cc).
void add_model_proof_bench(CLI::App* bench, CommandRunner* runner);
void register_tokenize(CLI::App& app, CommandRunner* runner);
void register_chat_template(CLI::App& app, CommandRunner* runner);
void register_provider_commands(CLI::App& app, CommandRunner* runner);
// `proxy`: the consumer's sealing proxy (cmd_proxy.cc).
void register_proxy_command(CLI::App& app, CommandRunner* runner);
// `status`, `stop` and `service install`.
void register_service_commands(CLI::App& app, CommandRunner* runner);
// `keys show|rotate|delete|approve` and `doctor`.
void register_keys(CLI::App& app, CommandRunner* runner);

// --model, --threads, --ctx, --kernels and the batching options, shared by every command that
// loads a model.
void add_engine_options(CLI::App* command, engine::EngineOptions* options);
// --max-batch, --step-tokens, --kv-memory, --kv-type, --no-prefix-reuse.
void add_batching_options(CLI::App* command, engine::EngineOptions* options);
// --chat-template-file.
void add_chat_template_option(CLI::App* command, engine::EngineOptions* options);
// --kernels with the names kernels_by_name() knows.
void add_kernels_option(CLI::App* command, std::string* kernels);

// Calls `each` with every non-empty line of a JSONL file, parsed as a JSON object; stops at the
// first error (a line that is not an object names its number).
Status for_each_jsonl_object(const std::string& path,
                             const std::function<Status(const json::bj::object& object, int line)>& each);

// Prints "darkbloom: error: <message>" on one line and returns the exit code for failures.
int fail(const std::string& message);

// The median of benchmark samples (0 for none).
double median(std::vector<double> samples);

}  // namespace darkbloom::apps
