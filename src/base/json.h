// JSON: the project uses Boost.JSON; this header is the one place that includes it, plus
// helpers that turn parse failures into Result errors.
#pragma once

#include <boost/json.hpp>

#include <string>
#include <string_view>

#include "base/result.h"

namespace darkbloom::json {

namespace bj = boost::json;

// Parses a complete JSON text; `what` names the source in error messages.
Result<bj::value> parse(std::string_view text, std::string_view what);

// Compact serialisation.
std::string dump(const bj::value& value);

}  // namespace darkbloom::json
