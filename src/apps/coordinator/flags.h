// darkbloom-coordinator's command line: each flag bound to its field of CoordinatorConfig, with
// the field's value as the default --help shows.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "base/result.h"
#include "coordinator/config.h"

namespace darkbloom::apps {

// Flags whose text becomes a config value only after parsing.
struct CoordinatorFlags {
  std::string listen = "127.0.0.1:8080";
  std::string config_file;
  std::string log_level = "info";
  std::string min_trust = "self_signed";
};

void add_coordinator_flags(CLI::App& app, coordinator::CoordinatorConfig& config, CoordinatorFlags& flags);
// After parsing and config layers: --listen and --min-trust into `config`.
Status finish_coordinator_config(const CoordinatorFlags& flags, coordinator::CoordinatorConfig& config);

}  // namespace darkbloom::apps
