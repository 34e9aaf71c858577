// `darkbloom start` (the provider agent) and `darkbloom serve` (the engine behind a local
// OpenAI server). Wiring only: the work lives in the provider library.
#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "apps/common/config_layers.h"
#include "apps/darkbloom/commands.h"
#include "apps/darkbloom/key_options.h"
#include "attest/posture.h"
#include "base/log.h"
#include "crypto/sealed_box.h"
#include "http/server.h"
#include "provider/agent.h"
#include "provider/local_server.h"

namespace darkbloom::apps {
namespace {

struct StartArgs {
  engine::EngineOptions engine;
  std::string coordinator = "ws://127.0.0.1:8080";
  std::string model_id;
  int max_concurrency = 0;  // 0: the engine's --max-batch
  std::string account_token;
  double idle_timeout_mins = 60;
  std::string config_file;
  KeyArgs key;
  std::string rotation_file;
};

struct ServeArgs {
  engine::EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model_id;
};

// The model id a provider announces: --model-id, or the file name without ".gguf".
std::string default_model_id(const std::string& path) {
  return std::filesystem::path(path).stem().string();
}

// ws://HOST:PORT[/path] → host, port, path.
Result<std::tuple<std::string, uint16_t, std::string>> parse_coordinator_url(const std::string& url) {
  constexpr std::string_view kScheme = "ws://";
  if (url.rfind(kScheme, 0) != 0) {
    return make_error(
        Errc::invalid_argument,
        fmt::format("--coordinator must be a ws://HOST:PORT URL (got '{}'; wss:// is not supported yet)", url));
  }
  std::string rest = url.substr(kScheme.size());
  std::string path = std::string(proto::kProviderSocketPath);
  if (const size_t slash = rest.find('/'); slash != std::string::npos) {
    if (slash + 1 < rest.size()) path = rest.substr(slash);
    rest = rest.substr(0, slash);
  }
  auto host_port = http::parse_host_port(rest);
  if (!host_port) return make_error(Errc::invalid_argument, "--coordinator: " + host_port.error().message);
  if (host_port->second == 0) return make_error(Errc::invalid_argument, "--coordinator: the port must not be 0");
  return std::make_tuple(host_port->first, host_port->second, path);
}

std::string default_config_path() {
  const char* home = std::getenv("HOME");
  if (home == nullptr) return {};
  const std::string path = std::string(home) + "/.config/darkbloom/provider.toml";
  return std::filesystem::exists(path) ? path : std::string();
}

int run_start(CLI::App* command, StartArgs args) {
  const std::string config_path = config_file_path(args.config_file, default_config_path());
  if (auto layered = apply_config_layers(*command, config_path); !layered) return fail(layered.error().message);
  if (args.engine.model_path.empty()) return fail("--model is required (or model = \"...\" in the config file)");
  if (!std::filesystem::is_regular_file(args.engine.model_path)) return fail(args.engine.model_path + ": no such file");
  auto url = parse_coordinator_url(args.coordinator);
  if (!url) return fail(url.error().message);
  auto key_config = signer_config(args.key);
  if (!key_config) return fail(key_config.error().message);
  crypto::initialize();

  // The identity key first: a TPM policy failure or a locked token is reported before the long load.
  auto signer = attest::make_signer(*key_config);
  if (!signer) return fail(signer.error().message);
  const attest::SignerInfo key_info = (*signer)->info();
  std::fprintf(stderr, "identity key: %s%s\n", key_info.key_ref.c_str(),
               key_info.degraded_reason.empty() ? "" : (" (degraded: " + key_info.degraded_reason + ")").c_str());
  std::fprintf(stderr, "posture: %s\n", attest::describe(attest::probe_posture()).c_str());

  std::fprintf(stderr, "loading %s...\n", args.engine.model_path.c_str());
  auto engine = engine::Engine::load(args.engine);
  if (!engine) return fail(engine.error().message);
  const std::string model_id = args.model_id.empty() ? default_model_id(args.engine.model_path) : args.model_id;
  std::fprintf(stderr, "measuring speed and hashing weights...\n");
  auto facts = provider::measure_model(**engine, args.engine.model_path, model_id);
  if (!facts) return fail(facts.error().message);
  std::fprintf(stderr, "serving '%s' (%s, prefill %.0f tok/s, decode %.1f tok/s) to %s\n", model_id.c_str(),
               facts->info.quantization.c_str(), facts->prefill_tps, facts->decode_tps, args.coordinator.c_str());

  provider::AgentOptions options;
  options.coordinator_host = std::get<0>(*url);
  options.coordinator_port = std::get<1>(*url);
  options.coordinator_path = std::get<2>(*url);
  options.engine = args.engine;
  options.model_id = model_id;
  options.max_concurrency = args.max_concurrency > 0 ? args.max_concurrency : args.engine.max_batch;
  options.account_token = args.account_token;
  options.idle_unload_after = std::chrono::milliseconds(static_cast<int64_t>(args.idle_timeout_mins * 60000.0));
  options.rotation_file = args.rotation_file.empty() ? default_rotation_file() : args.rotation_file;

  net::asio::io_context io;
  auto agent =
      std::make_shared<provider::ProviderAgent>(io.get_executor(), options, std::move(*engine), std::move(*facts),
                                                std::shared_ptr<attest::AttestationSigner>(std::move(*signer)));
  net::asio::co_spawn(io, agent->run(), [&](std::exception_ptr failure) {
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        log::error("provider agent failed: {}", e.what());
      }
    }
    io.stop();
  });
  net::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const http::error_code&, int) {
    agent->stop();
    io.stop();
  });
  io.run();
  agent->release_engine();  // while the io_context still exists for the engine's last reports
  return 0;
}

int run_serve(const ServeArgs& args) {
  crypto::initialize();
  // The io_context outlives the engine: an engine stopped at exit still reports to queues on it.
  net::asio::io_context io;
  auto engine = engine::Engine::load(args.engine);
  if (!engine) return fail(engine.error().message);
  const std::string model_id = args.model_id.empty() ? default_model_id(args.engine.model_path) : args.model_id;
  provider::LocalServer server(io.get_executor(), **engine, model_id);
  auto port = server.listen(args.host, static_cast<uint16_t>(args.port));
  if (!port) return fail(port.error().message);
  std::printf("darkbloom serve: '%s' at http://%s:%u/v1\n", model_id.c_str(), args.host.c_str(),
              static_cast<unsigned>(*port));
  std::fflush(stdout);
  net::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const http::error_code&, int) {
    server.stop();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace

void register_provider_commands(CLI::App& app, CommandRunner* runner) {
  auto start = std::make_shared<StartArgs>();
  CLI::App* start_cmd = app.add_subcommand(
      "start",
      "Run the provider agent: serve a model to a coordinator (dials out; opens no port). Options can also be\n"
      "set as DARKBLOOM_<OPTION> or in ~/.config/darkbloom/provider.toml");
  start_cmd->add_option("--coordinator", start->coordinator, "coordinator URL, ws://HOST:PORT")->capture_default_str();
  start_cmd->add_option("-m,--model", start->engine.model_path, "GGUF model file");
  start_cmd->add_option("--model-id", start->model_id, "name clients use for the model (default: file name)");
  start_cmd->add_option("-t,--threads", start->engine.threads, "compute threads (0 = one per hardware thread)")
      ->check(CLI::Range(0, 1024));
  start_cmd->add_option("-c,--ctx", start->engine.context, "context length (0 = model's, capped at 4096)")
      ->check(CLI::Range(0, 1 << 20));
  start_cmd
      ->add_option("--max-concurrency", start->max_concurrency,
                   "requests accepted at once, more wait at the coordinator (0 = --max-batch, the rows the "
                   "engine runs together)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  start_cmd->add_option("--account-token", start->account_token,
                        "API key of your account at the coordinator: payouts for this provider's work go there "
                        "(also DARKBLOOM_ACCOUNT_TOKEN)");
  start_cmd
      ->add_option("--idle-timeout-mins", start->idle_timeout_mins,
                   "unload the model after this long unused (0 = never)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  start_cmd
      ->add_option("--config", start->config_file, "TOML settings file (default ~/.config/darkbloom/provider.toml)")
      ->check(CLI::ExistingFile);
  start_cmd->add_option(
      "--rotation-file", start->rotation_file,
      "key-rotation statement from `darkbloom keys rotate` (default ~/.config/darkbloom/rotation.json)");
  add_batching_options(start_cmd, &start->engine);
  add_key_options(start_cmd, &start->key);
  start_cmd->callback(
      [runner, start, start_cmd] { *runner = [start, start_cmd] { return run_start(start_cmd, *start); }; });

  auto serve = std::make_shared<ServeArgs>();
  CLI::App* serve_cmd = app.add_subcommand("serve", "Serve a model alone behind the OpenAI API on a local port");
  add_engine_options(serve_cmd, &serve->engine);
  serve_cmd->add_option("--host", serve->host, "address to listen on")->capture_default_str();
  serve_cmd->add_option("--port", serve->port, "port (0 picks a free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  serve_cmd->add_option("--model-id", serve->model_id, "name clients use for the model (default: file name)");
  serve_cmd->callback([runner, serve] { *runner = [serve] { return run_serve(*serve); }; });
}

}  // namespace darkbloom::apps
