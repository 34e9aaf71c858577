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
  std::string metrics_listen;
  std::string config_file;
  std::string log_level = "info";
  std::string min_trust = "self_signed";
  std::string admin_token_file;
  std::string database_url_file;
  // Secrets typed on the command line (set right after parsing): kept, with a warning.
  bool admin_token_typed = false;
  bool database_url_typed = false;
};

// An admin token shorter than this is refused: it guards the money.
inline constexpr size_t kMinAdminTokenLength = 32;

void add_coordinator_flags(CLI::App& app, coordinator::CoordinatorConfig& config, CoordinatorFlags& flags);
// After parsing and config layers: --listen and --min-trust into `config`, the secret files
// read, and the TLS and plaintext rules checked.
Status finish_coordinator_config(const CoordinatorFlags& flags, coordinator::CoordinatorConfig& config);

}  // namespace darkbloom::apps
