#include "apps/common/config_layers.h"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>

namespace darkbloom::apps {
namespace {

std::string key_name(const std::string& long_name) {
  std::string key = long_name;
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

Result<std::map<std::string, std::string>> read_toml(const std::string& path) {
  std::map<std::string, std::string> values;
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return make_error(Errc::bad_format,
                      fmt::format("{}: {} (line {})", path, std::string(e.description()), e.source().begin.line));
  }
  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    if (auto s = node.value<std::string>(); s && node.is_string()) {
      values[name] = *s;
    } else if (node.is_integer()) {
      values[name] = std::to_string(*node.value<int64_t>());
    } else if (node.is_floating_point()) {
      values[name] = fmt::format("{}", *node.value<double>());
    } else if (node.is_boolean()) {
      values[name] = *node.value<bool>() ? "true" : "false";
    } else {
      return make_error(Errc::bad_format,
                        fmt::format("{}: setting '{}' must be a string, number or boolean", path, name));
    }
  }
  return values;
}

Status apply(CLI::Option* option, const std::string& value, const std::string& source) {
  try {
    option->add_result(value);
    option->run_callback();
  } catch (const CLI::Error& e) {
    return make_error(Errc::invalid_argument, fmt::format("{}: {}", source, e.what()));
  }
  return {};
}

}  // namespace

std::string config_file_path(const std::string& flag_value, const std::string& fallback) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("DARKBLOOM_CONFIG"); env != nullptr && *env != '\0') return env;
  return fallback;
}

std::string environment_name(const std::string& long_name) {
  std::string name = "DARKBLOOM_" + key_name(long_name);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

Status apply_config_layers(CLI::App& command, const std::string& config_path) {
  std::map<std::string, std::string> file_values;
  if (!config_path.empty()) {
    auto values = read_toml(config_path);
    if (!values) return values.error();
    file_values = std::move(*values);
  }
  std::map<std::string, bool> known;
  for (CLI::Option* option : command.get_options()) {
    if (option->get_lnames().empty()) continue;
    const std::string long_name = option->get_lnames().front();
    known[key_name(long_name)] = true;
    // Options that act rather than set (help, version) and the config file itself are not layered.
    if (option->count() > 0 || long_name == "help" || long_name == "version" || long_name == "config") continue;
    if (const char* env = std::getenv(environment_name(long_name).c_str()); env != nullptr && *env != '\0') {
      DARKBLOOM_RETURN_IF_ERROR(apply(option, env, environment_name(long_name)));
      continue;
    }
    if (const auto it = file_values.find(key_name(long_name)); it != file_values.end()) {
      DARKBLOOM_RETURN_IF_ERROR(apply(option, it->second, fmt::format("{}: {}", config_path, it->first)));
    }
  }
  for (const auto& [name, value] : file_values) {
    if (!known.count(name))
      return make_error(Errc::invalid_argument, fmt::format("{}: unknown setting '{}'", config_path, name));
  }
  return {};
}

}  // namespace darkbloom::apps
