// Settings from three places for every command-line option: the flag itself, a DARKBLOOM_*
// environment variable, and a TOML config file, in that order of precedence. `--min-trust` is
// DARKBLOOM_MIN_TRUST in the environment and `min_trust = "..."` in the file.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "base/result.h"

namespace darkbloom::apps {

// Call after app.parse(): fills every option of `command` that the command line left unset
// from the environment, then from the TOML file at `config_path` (skipped when empty; an error
// when given but unreadable or malformed, or when it names an unknown setting).
Status apply_config_layers(CLI::App& command, const std::string& config_path);

// The config file to read: the --config value, else DARKBLOOM_CONFIG, else `fallback`.
std::string config_file_path(const std::string& flag_value, const std::string& fallback = {});

// The environment variable for an option's long name: "min-trust" → "DARKBLOOM_MIN_TRUST".
std::string environment_name(const std::string& long_name);

}  // namespace darkbloom::apps
