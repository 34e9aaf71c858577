// `darkbloom start` (the provider agent) and `darkbloom serve` (the engine behind a local
// OpenAI server). Wiring only: the work lives in the provider library.
#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "apps/common/config_layers.h"
#include "apps/common/instance_lock.h"
#include "apps/common/secrets.h"
#include "apps/common/service.h"
#include "apps/darkbloom/commands.h"
#include "apps/darkbloom/coordinator_link.h"
#include "apps/darkbloom/key_options.h"
#include "attest/attestation_document.h"
#include "attest/posture.h"
#include "base/json.h"
#include "base/log.h"
#include "base/metrics.h"
#include "crypto/sealed_box.h"
#include "http/metrics_endpoint.h"
#include "http/server.h"
#include "http/tls.h"
#include "provider/agent.h"
#include "provider/local_server.h"

namespace darkbloom::apps {
namespace {

struct StartArgs {
  engine::EngineOptions engine;
  std::string coordinator = "ws://127.0.0.1:8080";
  std::string coordinator_ca;
  std::string coordinator_pin;
  bool allow_plaintext = false;
  std::string model_id;
  int max_concurrency = 0;  // 0: the engine's --max-batch
  std::string account_token;
  std::string account_token_file;
  double idle_timeout_mins = 60;
  std::string config_file;
  KeyArgs key;
  std::string rotation_file;
  std::string state_dir;
  double drain_timeout_s = 30;
  std::string metrics_listen;
};

struct ServeArgs {
  engine::EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model_id;
  std::string api_key_file;
};

// The model id a provider announces: --model-id, or the file name without ".gguf".
std::string default_model_id(const std::string& path) {
  return std::filesystem::path(path).stem().string();
}

// The agent's status as JSON in STATE_DIR/status.json, replaced whole (write, then rename) so a
// reader never sees half of it; `darkbloom status` prints it.
struct StatusFile {
  std::string dir;
  std::string coordinator;
  std::string model_id;

  void write(const provider::AgentStatus& status, const std::string& state = {}) const {
    json::bj::object object;
    object["pid"] = static_cast<int64_t>(::getpid());
    object["coordinator"] = coordinator;
    object["model"] = model_id;
    object["state"] = state.empty() ? status.state : state;
    object["provider_id"] = status.provider_id;
    object["trust_level"] = status.trust_level;
    object["trust_reason"] = status.trust_reason;
    object["requests_served"] = status.requests_served;
    object["tokens_generated"] = status.tokens_generated;
    object["in_flight"] = static_cast<uint64_t>(status.in_flight);
    object["earned_micro_usd"] = status.earned_micro_usd;
    object["last_error"] = status.last_error;
    object["updated"] = attest::rfc3339(std::chrono::system_clock::now());
    const std::string path = (std::filesystem::path(dir) / "status.json").string();
    const std::string temporary = path + ".tmp";
    const std::string text = json::bj::serialize(object) + "\n";
    // Not through a symbolic link someone left in the directory.
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    std::string why;
    if (fd < 0) {
      why = std::strerror(errno);
    } else {
      const ssize_t n = ::write(fd, text.data(), text.size());
      if (n < 0) why = std::strerror(errno);
      if (n >= 0 && static_cast<size_t>(n) != text.size()) why = "short write";
      ::close(fd);
    }
    if (!why.empty()) {
      log::warn("cannot write {}: {}", temporary, why);
      return;
    }
    std::error_code error;
    std::filesystem::rename(temporary, path, error);
    if (error) log::warn("cannot replace {}: {}", path, error.message());
  }
};

// What a provider shows Prometheus: requests by outcome and the engine's batch, cache and token
// counters (read at scrape time on the network thread, like the heartbeat).
void register_agent_metrics(metrics::Registry& registry, const std::shared_ptr<provider::ProviderAgent>& agent) {
  registry.counter("darkbloom_provider_requests_total", "requests by outcome", agent->outcomes());
  registry.gauge("darkbloom_provider_registered", "1 while registered with the coordinator", {},
                 [agent] { return agent->status().state == "registered" ? 1.0 : 0.0; });
  registry.gauge("darkbloom_provider_in_flight", "requests running now", {},
                 [agent] { return static_cast<double>(agent->status().in_flight); });
  using Read = double (*)(const engine::EngineStats&);
  const auto engine_value = [agent](Read read) {
    return [agent, read] {
      const auto stats = agent->engine_stats();
      return stats ? read(*stats) : 0.0;
    };
  };
  registry.gauge("darkbloom_engine_batch_size", "requests in the engine's running batch", {},
                 engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.running); }));
  registry.gauge("darkbloom_engine_waiting", "requests waiting for a place in the batch", {},
                 engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.waiting); }));
  registry.gauge("darkbloom_engine_kv_blocks_used", "KV-cache blocks held by running requests", {},
                 engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.kv_blocks_used); }));
  registry.gauge("darkbloom_engine_kv_blocks_total", "KV-cache blocks in all", {},
                 engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.kv_blocks_total); }));
  registry.counter(
      "darkbloom_engine_tokens_total", "tokens computed (since the model was loaded)", {{"phase", "prefill"}},
      engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.prompt_tokens_computed); }));
  registry.counter("darkbloom_engine_tokens_total", "tokens computed (since the model was loaded)",
                   {{"phase", "decode"}},
                   engine_value([](const engine::EngineStats& s) { return static_cast<double>(s.tokens_generated); }));
  registry.gauge("darkbloom_engine_tokens_per_second", "speed of the last engine step of each kind",
                 {{"phase", "prefill"}},
                 engine_value([](const engine::EngineStats& s) { return s.last_prefill_tokens_per_second; }));
  registry.gauge("darkbloom_engine_tokens_per_second", "speed of the last engine step of each kind",
                 {{"phase", "decode"}},
                 engine_value([](const engine::EngineStats& s) { return s.last_decode_tokens_per_second; }));
}

std::string default_config_path() {
  const char* home = std::getenv("HOME");
  if (home == nullptr) return {};
  const std::string path = std::string(home) + "/.config/darkbloom/provider.toml";
  return std::filesystem::exists(path) ? path : std::string();
}

// `args` is the object the options are bound to: the config layers below write into it.
int run_start(CLI::App* command, StartArgs& args) {
  const std::string config_path = config_file_path(args.config_file, default_config_path());
  const bool token_typed = typed_on_command_line(*command, "--account-token");
  if (auto layered = apply_config_layers(*command, config_path); !layered) return fail(layered.error().message);
  if (auto loaded = load_secret("--account-token", args.account_token, args.account_token_file); !loaded) {
    return fail(loaded.error().message);
  }
  if (args.engine.model_path.empty()) return fail("--model is required (or model = \"...\" in the config file)");
  if (!std::filesystem::is_regular_file(args.engine.model_path)) return fail(args.engine.model_path + ": no such file");
  auto url = parse_coordinator_url(args.coordinator);
  if (!url) return fail(url.error().message);
  auto tls = coordinator_tls(
      *url, CoordinatorTlsArgs{args.coordinator, args.coordinator_ca, args.coordinator_pin, args.allow_plaintext});
  if (!tls) return fail(tls.error().message);
  auto key_config = signer_config(args.key);
  if (!key_config) return fail(key_config.error().message);
  std::optional<std::pair<std::string, uint16_t>> metrics_address;
  if (!args.metrics_listen.empty()) {
    auto address = http::parse_host_port(args.metrics_listen);
    if (!address) return fail("--metrics-listen: " + address.error().message);
    if (!http::is_loopback_host(address->first)) {
      return fail("--metrics-listen " + args.metrics_listen +
                  " is not a loopback address: the provider opens no public port (scrape it through a local "
                  "Prometheus or an SSH tunnel)");
    }
    metrics_address = *address;
  }
  warn_if_typed("--account-token", token_typed);
  if (args.state_dir.empty()) args.state_dir = default_state_dir();
  // Before the long load: a second agent on this state directory stops here, naming the first.
  auto lock = InstanceLock::acquire(args.state_dir);
  if (!lock) return fail(lock.error().message);
  // No stale status from a previous run while the model loads.
  const std::string model_id = args.model_id.empty() ? default_model_id(args.engine.model_path) : args.model_id;
  const StatusFile status_file{args.state_dir, args.coordinator, model_id};
  status_file.write(provider::AgentStatus{}, "loading");
  // The metrics port too is taken before the long load, so a clash shows at once; its series
  // arrive with the agent.
  net::asio::io_context io;
  metrics::Registry registry;
  std::unique_ptr<http::Server> metrics_server;
  if (metrics_address) {
    uint16_t port = 0;
    auto served =
        http::serve_metrics_only(io.get_executor(), registry, metrics_address->first, metrics_address->second, &port);
    if (!served) return fail("--metrics-listen: " + served.error().message);
    metrics_server = std::move(*served);
    std::fprintf(stderr, "metrics at http://%s:%u/metrics\n", metrics_address->first.c_str(),
                 static_cast<unsigned>(port));
  }
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
  std::fprintf(stderr, "measuring speed and hashing weights...\n");
  auto facts = provider::measure_model(**engine, args.engine.model_path, model_id);
  if (!facts) return fail(facts.error().message);
  std::fprintf(stderr, "serving '%s' (%s, prefill %.0f tok/s, decode %.1f tok/s) to %s\n", model_id.c_str(),
               facts->info.quantization.c_str(), facts->prefill_tps, facts->decode_tps, args.coordinator.c_str());

  provider::AgentOptions options;
  options.coordinator_host = url->host;
  options.coordinator_port = url->port;
  options.coordinator_path = url->path;
  options.tls = *tls;
  options.engine = args.engine;
  options.model_id = model_id;
  options.max_concurrency = args.max_concurrency > 0 ? args.max_concurrency : args.engine.max_batch;
  options.account_token = args.account_token;
  options.idle_unload_after = std::chrono::milliseconds(static_cast<int64_t>(args.idle_timeout_mins * 60000.0));
  options.rotation_file = args.rotation_file.empty() ? default_rotation_file() : args.rotation_file;

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
  // SIGTERM or SIGINT (`darkbloom stop`, systemctl stop, Ctrl-C): drain, then the agent closes its
  // session and run() ends, which stops the loop. A second Ctrl-C exits at once; a repeated
  // SIGTERM changes nothing.
  net::asio::signal_set signals(io, SIGINT, SIGTERM);
  const auto drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(args.drain_timeout_s * 1000.0));
  std::function<void()> wait_for_second = [&] {
    signals.async_wait([&](const http::error_code& again, int signal) {
      if (again) return;
      if (signal == SIGINT) {
        io.stop();
      } else {
        wait_for_second();
      }
    });
  };
  signals.async_wait([&](const http::error_code& error, int) {
    if (error) return;
    notify_stopping();
    std::fprintf(stderr, "draining: finishing requests in flight (up to %.0f s)...\n", args.drain_timeout_s);
    // Connected, run() ends once the session's close completes; otherwise it may be waiting to
    // reconnect, and nothing is left to finish.
    net::asio::co_spawn(io, agent->drain(drain_timeout), [&](std::exception_ptr) {
      if (!agent->connected()) io.stop();
    });
    wait_for_second();
  });
  register_agent_metrics(registry, agent);
  // The status file every second; systemd's STATUS= when the connection state changes.
  std::string last_state;
  auto status_loop = run_every(io.get_executor(), std::chrono::seconds(1), [&] {
    const provider::AgentStatus status = agent->status();
    status_file.write(status);
    if (status.state != last_state) {
      last_state = status.state;
      notify_status(status.state + (status.provider_id.empty() ? "" : " as " + status.provider_id));
    }
  });
  notify_ready("serving " + model_id + " to " + args.coordinator);
  auto watchdog = feed_watchdog(io.get_executor());
  io.run();
  if (metrics_server) metrics_server->stop();
  agent->release_engine();  // while the io_context still exists for the engine's last reports
  status_file.write(agent->status(), "stopped");
  return 0;
}

int run_serve(const ServeArgs& args) {
  crypto::initialize();
  // The io_context outlives the engine: an engine stopped at exit still reports to queues on it.
  net::asio::io_context io;
  std::string api_key;
  if (!args.api_key_file.empty()) {
    auto key = read_secret_file(args.api_key_file);
    if (!key) return fail("--api-key-file: " + key.error().message);
    api_key = std::move(*key);
  }
  auto engine = engine::Engine::load(args.engine);
  if (!engine) return fail(engine.error().message);
  const std::string model_id = args.model_id.empty() ? default_model_id(args.engine.model_path) : args.model_id;
  provider::LocalServer server(io.get_executor(), **engine, model_id, {}, api_key);
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
  start_cmd
      ->add_option("--coordinator", start->coordinator,
                   "coordinator URL, wss://HOST:PORT (ws:// only to loopback unless --allow-plaintext)")
      ->capture_default_str();
  start_cmd
      ->add_option("--coordinator-ca", start->coordinator_ca,
                   "PEM file of the CA(s) that sign the coordinator's certificate (default: the system store)")
      ->check(CLI::ExistingFile);
  start_cmd->add_option("--coordinator-cert-sha256", start->coordinator_pin,
                        "also require the coordinator's certificate to have this SHA-256 (hex of its DER; ':' "
                        "allowed, as `openssl x509 -fingerprint -sha256` prints it)");
  start_cmd->add_flag("--allow-plaintext", start->allow_plaintext,
                      "allow a ws:// coordinator that is not on loopback (the account token and every request "
                      "cross the network in clear)");
  start_cmd->add_option("-m,--model", start->engine.model_path, "GGUF model file");
  start_cmd->add_option("--model-id", start->model_id, "name clients use for the model (default: file name)");
  add_chat_template_option(start_cmd, &start->engine);
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
  start_cmd->add_option("--account-token-file", start->account_token_file,
                        "file (mode 0600) holding the API key of your account at the coordinator: payouts for this "
                        "provider's work go there, bound to its identity key in the signed attestation");
  start_cmd->add_option("--account-token", start->account_token,
                        "the API key itself: prefer --account-token-file or DARKBLOOM_ACCOUNT_TOKEN, a flag shows in "
                        "ps");
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
  start_cmd->add_option("--metrics-listen", start->metrics_listen,
                        "serve Prometheus metrics at http://HOST:PORT/metrics, loopback only (the provider opens no "
                        "public port); off by default");
  start_cmd->add_option("--state-dir", start->state_dir,
                        "directory for this agent's lock, PID and status (default /var/lib/darkbloom for root, else "
                        "$XDG_STATE_HOME/darkbloom or ~/.local/state/darkbloom); one agent per directory");
  start_cmd
      ->add_option("--drain-timeout", start->drain_timeout_s,
                   "seconds a stop waits for requests in flight to finish (new ones go to other providers)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
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
  serve_cmd
      ->add_option("--api-key-file", serve->api_key_file,
                   "file holding the API key clients must send as \"Authorization: Bearer KEY\" (only you may\n"
                   "read it); without one any local client may use the server")
      ->check(CLI::ExistingFile);
  serve_cmd->callback([runner, serve] { *runner = [serve] { return run_serve(*serve); }; });
}

}  // namespace darkbloom::apps
