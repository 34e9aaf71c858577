#include "base/json.h"

namespace darkbloom::json {

Result<bj::value> parse(std::string_view text, std::string_view what) {
  boost::system::error_code error;
  bj::parse_options options;
  options.max_depth = 64;
  bj::value value = bj::parse(text, error, {}, options);
  if (error) return make_error(Errc::bad_format, std::string(what) + ": invalid JSON: " + error.message());
  return value;
}

std::string dump(const bj::value& value) {
  return bj::serialize(value);
}

}  // namespace darkbloom::json
