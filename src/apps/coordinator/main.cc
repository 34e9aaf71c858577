// darkbloom-coordinator: the network's front door. Argument parsing and wiring only.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>

#include "apps/common/config_layers.h"
#include "base/log.h"
#include "coordinator/coordinator.h"
#include "crypto/sealed_box.h"
#include "http/server.h"

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "darkbloom-coordinator: error: %s\n", message.c_str());
  return 1;
}

std::chrono::milliseconds seconds_to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace darkbloom;
  CLI::App app{
      "darkbloom-coordinator: the OpenAI-compatible front door of a Darkbloom network. Consumers call\n"
      "/v1/chat/completions with an API key; providers dial /ws/provider. Every option can also be set\n"
      "as DARKBLOOM_<OPTION> in the environment or in a TOML file given with --config.",
      "darkbloom-coordinator"};
  app.set_version_flag("--version", "darkbloom-coordinator 0.1.0");
  std::string listen = "127.0.0.1:8080";
  std::string config_file;
  std::string log_level = "info";
  std::string min_trust = "self_signed";
  double queue_wait = 120, first_chunk_timeout = 10, heartbeat_timeout = 90, inference_timeout = 600;
  double challenge_interval = 300, challenge_timeout = 30, challenge_grace = 60, attestation_max_skew = 300;
  coordinator::CoordinatorConfig config;
  config.data_dir = "darkbloom-data";
  app.add_option("--listen", listen, "address to serve on, HOST:PORT (port 0 picks a free one)")->capture_default_str();
  app.add_option("--data-dir", config.data_dir, "directory for the database (coordinator.db)")->capture_default_str();
  app.add_option("--admin-token", config.admin_token, "token for /v1/admin/* (empty disables the admin API)");
  app.add_option("--database-url", config.database_url,
                 "PostgreSQL URL (postgresql://USER@HOST:PORT/DB) shared by several coordinators; empty = SQLite "
                 "in --data-dir");
  app.add_option("--hold-requests", config.billing.hold_requests,
                 "worst cases one escrow hold covers: a database transaction per that many reservations")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--coordinator-id", config.billing.coordinator_id,
                 "name of this coordinator's escrow accounts; give each coordinator on one database its own")
      ->check([](const std::string& id) {
        const bool ok = !id.empty() && id.size() <= 32 &&
                        id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
        return ok ? std::string() : std::string("1 to 32 of a-z, 0-9 and '-'");
      })
      ->capture_default_str();
  app.add_option("--min-trust", min_trust,
                 "lowest provider trust level that receives requests (none = open mode: unattested providers too)")
      ->check(CLI::IsMember({"none", "self_signed", "hardware"}))
      ->capture_default_str();
  app.add_option("--challenge-interval", challenge_interval, "seconds between attestation challenges to a provider")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--challenge-timeout", challenge_timeout, "seconds a provider has to answer a challenge")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--challenge-grace", challenge_grace,
                 "seconds beyond the interval a passed challenge keeps a provider routable")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--attestation-max-skew", attestation_max_skew,
                 "seconds an attestation's timestamp may be from the coordinator's clock")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  app.add_option("--queue-depth", config.queue_depth, "requests that may wait per model when all providers are busy")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  app.add_option("--queue-wait", queue_wait, "seconds a request may wait in the queue before a 429")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--max-attempts", config.max_attempts, "providers tried per request before giving up")
      ->check(CLI::Range(1, 10))
      ->capture_default_str();
  app.add_option("--first-chunk-timeout", first_chunk_timeout, "seconds a provider has to start answering")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--inference-timeout", inference_timeout, "seconds a streaming answer may fall silent before it fails")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--heartbeat-timeout", heartbeat_timeout, "seconds of silence after which a provider is evicted")
      ->check(CLI::Range(0.5, 86400.0))
      ->capture_default_str();
  app.add_option("--default-max-tokens", config.default_max_tokens, "max_tokens injected when a request sets none")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-body-bytes", config.limits.body_bytes, "largest request body accepted (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--config", config_file, "TOML file with settings (keys as option names, '-' → '_')")
      ->check(CLI::ExistingFile);
  app.add_option("--log-level", log_level, "debug, info, warn, error or off")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "darkbloom-coordinator: error: %s (see --help)\n", e.what());
    return 2;
  }
  if (auto layered = apps::apply_config_layers(app, apps::config_file_path(config_file)); !layered) {
    std::fprintf(stderr, "darkbloom-coordinator: error: %s\n", layered.error().message.c_str());
    return 2;
  }
  log::Level level;
  if (!log::parse_level(log_level, &level)) {
    std::fprintf(stderr, "darkbloom-coordinator: error: --log-level must be debug, info, warn, error or off\n");
    return 2;
  }
  log::set_level(level);
  auto address = http::parse_host_port(listen);
  if (!address) {
    std::fprintf(stderr, "darkbloom-coordinator: error: --listen: %s\n", address.error().message.c_str());
    return 2;
  }
  config.listen_host = address->first;
  config.listen_port = address->second;
  config.min_trust = *coordinator::parse_trust_level(min_trust);
  config.queue_wait = seconds_to_ms(queue_wait);
  config.challenge_interval = seconds_to_ms(challenge_interval);
  config.challenge_timeout = seconds_to_ms(challenge_timeout);
  config.challenge_grace = seconds_to_ms(challenge_grace);
  config.attestation_max_skew = std::chrono::seconds(static_cast<int64_t>(attestation_max_skew));
  config.first_chunk_timeout = seconds_to_ms(first_chunk_timeout);
  config.heartbeat_timeout = seconds_to_ms(heartbeat_timeout);
  config.inference_timeout = seconds_to_ms(inference_timeout);
  config.eviction_interval = std::min(std::chrono::milliseconds(30000),
                                      std::max(std::chrono::milliseconds(100), config.heartbeat_timeout / 3));

  try {
    crypto::initialize();
    // The coordinator outlives the io_context: destroying the io_context destroys suspended
    // request coroutines, whose clean-up returns reservations to the coordinator's ledger.
    std::unique_ptr<coordinator::Coordinator> owner;
    http::net::io_context io;
    auto created = coordinator::Coordinator::create(io.get_executor(), config);
    if (!created) return fail(created.error().message);
    owner = std::move(*created);
    auto port = owner->start();
    if (!port) return fail(port.error().message);
    if (config.min_trust == coordinator::TrustLevel::none) {
      log::warn("open mode (--min-trust none): providers without a verified attestation receive requests");
    }
    std::printf("darkbloom-coordinator listening on %s:%u\n", config.listen_host.c_str(), static_cast<unsigned>(*port));
    std::fflush(stdout);
    http::net::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const http::error_code&, int signal) {
      log::info("signal {}: shutting down", signal);
      owner->stop();
      io.stop();
    });
    io.run();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
