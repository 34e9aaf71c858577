// darkbloom-coordinator: the network's front door. Argument parsing and wiring only.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "apps/common/config_layers.h"
#include "apps/common/secrets.h"
#include "apps/common/service.h"
#include "apps/coordinator/flags.h"
#include "base/log.h"
#include "base/system_info.h"
#include "coordinator/coordinator.h"
#include "crypto/sealed_box.h"
#include "crypto/system_random.h"
#include "http/server.h"
#include "http/tls.h"

namespace {

using namespace darkbloom;

int fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "darkbloom-coordinator: error: %s\n", message.c_str());
  return code;
}

// Parses the command line, the environment and the config file into `config`; nullopt to go
// on, else the exit code.
std::optional<int> configure(int argc, char** argv, coordinator::CoordinatorConfig& config) {
  CLI::App app{
      "darkbloom-coordinator: the OpenAI-compatible front door of a Darkbloom network. Consumers call\n"
      "/v1/chat/completions with an API key; providers dial /ws/provider. Every option can also be set\n"
      "as DARKBLOOM_<OPTION> in the environment or in a TOML file given with --config.",
      "darkbloom-coordinator"};
  app.set_version_flag("--version", "darkbloom-coordinator 0.1.0");
  apps::CoordinatorFlags flags;
  apps::add_coordinator_flags(app, config, flags);
  bool print_unit = false;
  app.add_flag("--print-systemd-unit", print_unit,
               "print a systemd unit that runs this coordinator as a service (Type=notify, watchdog, sandboxed) "
               "and exit");
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
  if (print_unit) {
    apps::UnitOptions unit;
    unit.description = "Darkbloom coordinator (OpenAI-compatible front door of a Darkbloom network)";
    std::error_code error;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
    unit.exec_start = fmt::format("{} --config /etc/darkbloom/coordinator.toml --data-dir %S/darkbloom-coordinator",
                                  error ? std::string("/usr/bin/darkbloom-coordinator") : self.string());
    unit.reloads = true;  // SIGHUP reads the TLS certificate again
    unit.binds_low_ports = true;
    unit.required_file = "/etc/darkbloom/coordinator.toml";
    unit.state_directory = "darkbloom-coordinator";
    std::fputs(apps::systemd_unit(unit).c_str(), stdout);
    return 0;
  }
  flags.admin_token_typed = apps::typed_on_command_line(app, "--admin-token");
  flags.database_url_typed = apps::typed_on_command_line(app, "--database-url");
  if (auto layered = apps::apply_config_layers(app, apps::config_file_path(flags.config_file)); !layered) {
    return fail(layered.error().message, 2);
  }
  log::Level level;
  if (!log::parse_level(flags.log_level, &level)) {
    return fail("--log-level must be debug, info, warn, error or off", 2);
  }
  log::set_level(level);
  if (auto finished = apps::finish_coordinator_config(flags, config); !finished) {
    return fail(finished.error().message, 2);
  }
  return std::nullopt;
}

}  // namespace

// Connections (HTTP and WebSocket) take one descriptor each: the caps stay below the descriptor
// limit, raised to the hard limit first, with room for the database, logs and the rest.
static void size_connection_caps(coordinator::CoordinatorConfig& config) {
  const uint64_t descriptors = raise_descriptor_limit();
  if (descriptors == 0) return;
  const uint64_t reserve = std::min<uint64_t>(256, descriptors / 4);
  const size_t usable = static_cast<size_t>(std::min<uint64_t>(descriptors - reserve, SIZE_MAX));
  if (config.limits.max_connections > usable) {
    log::warn("connections capped at {} by the open-file limit ({}); raise it (ulimit -n) for more", usable,
              descriptors);
    config.limits.max_connections = usable;
  }
  config.max_providers = std::min(config.max_providers, config.limits.max_connections);
}

int main(int argc, char** argv) {
  coordinator::CoordinatorConfig config;
  if (auto exit_code = configure(argc, argv, config)) return *exit_code;
  try {
    crypto::initialize();
    size_connection_caps(config);
    net::Clock& clock = net::system_clock();
    RandomSource& random = crypto::system_random();
    // The coordinator outlives the io_context: destroying the io_context destroys suspended
    // request coroutines, whose clean-up returns reservations to the coordinator's ledger.
    std::unique_ptr<coordinator::Coordinator> owner;
    net::asio::io_context io;
    auto created = coordinator::Coordinator::create(io.get_executor(), config, clock, random);
    if (!created) return fail(created.error().message);
    owner = std::move(*created);
    // Signals are taken over before the port opens: from then on a SIGHUP (a reload) or a SIGTERM
    // is handled, never the default action that kills the process.
    net::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const net::error_code&, int signal) {
      apps::notify_stopping();
      log::info("signal {}: shutting down", signal);
      owner->stop();
      io.stop();
    });
    net::asio::signal_set reload(io, SIGHUP);
    std::function<void()> wait_for_reload = [&] {
      reload.async_wait([&](const net::error_code& error, int) {
        if (error) return;
        if (config.tls_cert_file.empty()) {
          log::info("SIGHUP: no TLS certificate to reload");
        } else if (auto reloaded = owner->reload_tls(); !reloaded) {
          log::error("SIGHUP: TLS certificate not reloaded, the old one stays in use: {}", reloaded.error().message);
        }
        wait_for_reload();
      });
    };
    wait_for_reload();
    auto port = owner->start();
    if (!port) return fail(port.error().message);
    if (config.tls_cert_file.empty() && !http::is_loopback_host(config.listen_host)) {
      log::warn(
          "serving plain HTTP on {} (--allow-plaintext): API keys and provider traffic cross the network "
          "in clear unless a TLS proxy stands in front",
          config.listen_host);
    }
    if (config.min_trust == coordinator::TrustLevel::none) {
      log::warn("open mode (--min-trust none): providers without a verified attestation receive requests");
    }
    std::printf("darkbloom-coordinator listening on %s:%u (%s)\n", config.listen_host.c_str(),
                static_cast<unsigned>(*port), config.tls_cert_file.empty() ? "http" : "https");
    std::fflush(stdout);
    apps::notify_ready(fmt::format("listening on {}:{}", config.listen_host, *port));
    auto watchdog = apps::feed_watchdog(io.get_executor());
    try {
      io.run();
    } catch (...) {
      owner->stop();  // the store's worker is joined while the io_context it answers to still exists
      throw;
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
