// darkbloom: the provider agent and every user-side tool. This file wires subcommands; the work
// lives in the libraries.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>

#include "apps/darkbloom/commands.h"
#include "attest/posture.h"
#include "base/log.h"

namespace darkbloom::apps {

int fail(const std::string& message) {
  std::fprintf(stderr, "darkbloom: error: %s\n", message.c_str());
  return 1;
}

double median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? 0 : samples[samples.size() / 2];
}

}  // namespace darkbloom::apps

int main(int argc, char** argv) {
  using namespace darkbloom;
  // Before anything else reads memory worth protecting: not dumpable, no core files, loader
  // variables (LD_PRELOAD and friends) gone from the environment.
  attest::harden_process();
  CLI::App app{"darkbloom: sell LLM inference from your machine (start), or run models locally (serve, generate, ...)",
               "darkbloom"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "darkbloom 0.1.0");
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "debug, info, warn, error or off")->capture_default_str();

  apps::CommandRunner runner;
  apps::register_generate(app, &runner);
  apps::register_perplexity(app, &runner);
  apps::register_models(app, &runner);
  apps::register_bench(app, &runner);
  apps::register_tokenize(app, &runner);
  apps::register_chat_template(app, &runner);
  apps::register_provider_commands(app, &runner);
  apps::register_proxy_command(app, &runner);
  apps::register_service_commands(app, &runner);
  apps::register_keys(app, &runner);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "darkbloom: error: %s (see --help)\n", e.what());
    return 2;
  }
  log::Level level;
  if (!log::parse_level(log_level, &level)) {
    std::fprintf(stderr, "darkbloom: error: --log-level must be debug, info, warn, error or off\n");
    return 2;
  }
  log::set_level(level);
  if (!runner) {
    std::fprintf(stderr, "darkbloom: error: missing subcommand (see --help)\n");
    return 2;
  }
  try {
    return runner();
  } catch (const std::exception& e) {
    return apps::fail(e.what());
  }
}
