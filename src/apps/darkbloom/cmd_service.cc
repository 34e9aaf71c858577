// `darkbloom status`, `darkbloom stop` and `darkbloom service install`: the running agent seen
// and stopped through its state directory, and the systemd unit that runs it as a service.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "apps/common/instance_lock.h"
#include "apps/common/service.h"
#include "apps/darkbloom/commands.h"
#include "base/file.h"
#include "base/json.h"

namespace darkbloom::apps {
namespace {

struct StatusArgs {
  std::string state_dir;
  bool json = false;
};

struct StopArgs {
  std::string state_dir;
  double wait_s = 45;
};

struct InstallArgs {
  bool user = false;
  std::string run_as;
  std::string unit_dir;
  bool print = false;
  std::string config;
};

std::string field(const json::bj::object& object, const char* name) {
  const auto* value = object.if_contains(name);
  if (value == nullptr) return "-";
  if (value->is_string()) {
    const auto& text = value->as_string();
    return text.empty() ? "-" : std::string(text);
  }
  return json::bj::serialize(*value);
}

int run_status(const StatusArgs& args) {
  const std::string dir = args.state_dir.empty() ? default_state_dir() : args.state_dir;
  const auto pid = running_instance(dir);
  auto text = read_file((std::filesystem::path(dir) / "status.json").string());
  if (!pid) {
    std::printf("no agent running on %s\n", dir.c_str());
    if (text) std::printf("last status: %s", text->c_str());
    return 3;  // LSB: program is not running
  }
  if (!text) return fail(fmt::format("agent PID {} runs on {} but wrote no status yet", *pid, dir));
  if (args.json) {
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  auto parsed = json::parse(*text, "status.json");
  if (!parsed || !parsed->is_object()) return fail(dir + "/status.json is not a JSON object");
  const auto& status = parsed->as_object();
  std::printf("darkbloom agent, PID %d (state directory %s)\n", static_cast<int>(*pid), dir.c_str());
  std::printf("  coordinator  %s\n", field(status, "coordinator").c_str());
  std::printf("  connection   %s%s\n", field(status, "state").c_str(),
              field(status, "provider_id") == "-" ? "" : (" as " + field(status, "provider_id")).c_str());
  std::printf("  trust        %s (%s)\n", field(status, "trust_level").c_str(), field(status, "trust_reason").c_str());
  std::printf("  model        %s\n", field(status, "model").c_str());
  std::printf("  served       %s requests, %s tokens generated, %s in flight\n",
              field(status, "requests_served").c_str(), field(status, "tokens_generated").c_str(),
              field(status, "in_flight").c_str());
  std::string earned = field(status, "earned_micro_usd");
  if (earned != "-") earned = fmt::format("{:.6f} USD", std::strtod(earned.c_str(), nullptr) / 1e6);
  std::printf("  earnings     %s this run, paid to the --account-token account (its GET /v1/balance has them all)\n",
              earned.c_str());
  std::printf("  last error   %s\n", field(status, "last_error").c_str());
  std::printf("  updated      %s\n", field(status, "updated").c_str());
  return 0;
}

int run_stop(const StopArgs& args) {
  const std::string dir = args.state_dir.empty() ? default_state_dir() : args.state_dir;
  const auto pid = running_instance(dir);
  if (!pid) {
    std::printf("no agent running on %s\n", dir.c_str());
    return 0;
  }
  if (::kill(*pid, SIGTERM) != 0) return fail(fmt::format("cannot signal PID {}: {}", *pid, std::strerror(errno)));
  std::fprintf(stderr, "stopping the agent (PID %d): it finishes the requests in flight first\n",
               static_cast<int>(*pid));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(args.wait_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running_instance(dir)) {
      std::fprintf(stderr, "stopped\n");
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return fail(fmt::format("the agent (PID {}) is still running after {:.0f} s", *pid, args.wait_s));
}

std::string self_path() {
  std::error_code error;
  const auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string("/usr/bin/darkbloom") : path.string();
}

int run_install(const InstallArgs& args) {
  const char* home = std::getenv("HOME");
  const std::string config = !args.config.empty() ? args.config
                             : args.user ? std::string(home != nullptr ? home : "") + "/.config/darkbloom/provider.toml"
                                         : std::string("/etc/darkbloom/provider.toml");
  UnitOptions unit;
  unit.description = "Darkbloom provider agent (sells LLM inference to a coordinator)";
  // %S is the state root (/var/lib, or ~/.local/state for a user unit).
  unit.exec_start =
      fmt::format("{} start --config {} --state-dir %S/darkbloom", quote_argument(self_path()), quote_argument(config));
  unit.user_unit = args.user;
  unit.user = args.run_as;
  unit.tpm_device = true;
  // Loading, hashing and measuring a large model can take minutes before the agent is ready.
  unit.start_timeout = "infinity";
  unit.required_file = config;
  unit.state_directory = "darkbloom";
  const std::string text = systemd_unit(unit);
  if (args.print) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::string dir = args.unit_dir;
  if (dir.empty()) {
    dir = args.user ? std::string(home != nullptr ? home : "") + "/.config/systemd/user" : "/etc/systemd/system";
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  const std::string path = (std::filesystem::path(dir) / "darkbloom.service").string();
  if (auto written = write_file(path, text); !written) return fail(written.error().message);
  const std::string systemctl = args.user ? "systemctl --user" : "systemctl";
  std::printf(
      "wrote %s\nsettings go in %s (keys as option names: model = \"...\", coordinator = \"wss://...\",\n"
      "account_token_file = \"...\"); then:\n  %s daemon-reload && %s enable --now darkbloom\n",
      path.c_str(), config.c_str(), systemctl.c_str(), systemctl.c_str());
  return 0;
}

}  // namespace

void register_service_commands(CLI::App& app, CommandRunner* runner) {
  auto status = std::make_shared<StatusArgs>();
  CLI::App* status_cmd = app.add_subcommand("status",
                                            "Show the running agent: coordinator, connection, trust, "
                                            "work done, last error (exit 3 when none runs)");
  status_cmd->add_option("--state-dir", status->state_dir, "the agent's state directory (default as `start`)");
  status_cmd->add_flag("--json", status->json, "print the status file as JSON");
  status_cmd->callback([runner, status] { *runner = [status] { return run_status(*status); }; });

  auto stop = std::make_shared<StopArgs>();
  CLI::App* stop_cmd = app.add_subcommand(
      "stop", "Stop the running agent cleanly: requests in flight finish first (its --drain-timeout)");
  stop_cmd->add_option("--state-dir", stop->state_dir, "the agent's state directory (default as `start`)");
  stop_cmd->add_option("--wait", stop->wait_s, "seconds to wait for it to exit")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  stop_cmd->callback([runner, stop] { *runner = [stop] { return run_stop(*stop); }; });

  auto install = std::make_shared<InstallArgs>();
  CLI::App* service_cmd = app.add_subcommand("service", "Run the agent as a systemd service");
  service_cmd->require_subcommand(1);
  CLI::App* install_cmd =
      service_cmd->add_subcommand("install",
                                  "Write a systemd unit for `darkbloom start` (Type=notify, watchdog, "
                                  "sandboxed, TPM allowed)");
  install_cmd->add_flag("--user", install->user, "a user unit (systemctl --user) instead of a system one");
  install_cmd->add_option("--unit-dir", install->unit_dir,
                          "directory to write darkbloom.service to (default /etc/systemd/system, or "
                          "~/.config/systemd/user with --user)");
  install_cmd->add_flag("--print", install->print, "print the unit instead of writing it");
  install_cmd->add_option("--run-as", install->run_as,
                          "system unit: the user the agent runs as (User=, with the tss group for the TPM); the "
                          "model and secret files must be readable by it (default: root)");
  install_cmd->add_option("--config", install->config,
                          "settings file the service reads (default /etc/darkbloom/provider.toml, or "
                          "~/.config/darkbloom/provider.toml with --user)");
  install_cmd->callback([runner, install] { *runner = [install] { return run_install(*install); }; });
}

}  // namespace darkbloom::apps
