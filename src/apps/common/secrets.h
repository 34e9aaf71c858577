// Secrets kept off the command line (where every local user reads them in `ps`): each secret
// option has a `-file` twin, also settable as a DARKBLOOM_* variable or a TOML key. A file that
// group or others may read is refused, with the reason and the fix.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "base/result.h"

namespace darkbloom::apps {

// The contents of a secret file without trailing whitespace; refused when it is not a regular
// file, is readable by others (or, unless `allow_group`, by its group), is empty or over 64 KiB.
Result<std::string> read_secret_file(const std::string& path, bool allow_group = false);

// Refuses a file others may read (keys that must stay private but are not read here, e.g. TLS).
Status check_private_file_mode(const std::string& path, bool allow_group);

// True when `option` ("--admin-token") was typed on the command line: call after app.parse(),
// before the config layers fill the rest.
bool typed_on_command_line(const CLI::App& app, const std::string& option);

// After the config layers: loads `file` into `value` when set (both set is an error).
Status load_secret(const std::string& option, std::string& value, const std::string& file);

// Once the settings are checked (so an error stays one line): a secret typed on the command line
// is kept, with a warning naming the safer ways.
void warn_if_typed(const std::string& option, bool typed);

}  // namespace darkbloom::apps
