#include <fmt/format.h>

#include <sstream>

#include "apps/darkbloom/commands.h"
#include "base/file.h"

namespace darkbloom::apps {

Status for_each_jsonl_object(const std::string& path,
                             const std::function<Status(const json::bj::object& object, int line)>& each) {
  auto input = read_file(path);
  if (!input) return input.error();
  std::istringstream lines(*input);
  std::string line;
  int line_number = 0;
  while (std::getline(lines, line)) {
    ++line_number;
    if (line.empty()) continue;
    auto parsed = json::parse(line, fmt::format("{} line {}", path, line_number));
    if (!parsed) return parsed.error();
    if (!parsed->is_object()) {
      return make_error(Errc::bad_format, fmt::format("{} line {}: needs a JSON object", path, line_number));
    }
    DARKBLOOM_RETURN_IF_ERROR(each(parsed->as_object(), line_number));
  }
  return {};
}

}  // namespace darkbloom::apps
