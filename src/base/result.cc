#include "base/result.h"

namespace darkbloom {

const char* errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::not_found:
      return "not_found";
    case Errc::io_error:
      return "io_error";
    case Errc::bad_format:
      return "bad_format";
    case Errc::unsupported:
      return "unsupported";
    case Errc::out_of_range:
      return "out_of_range";
    case Errc::cancelled:
      return "cancelled";
    case Errc::unavailable:
      return "unavailable";
    case Errc::permission_denied:
      return "permission_denied";
    case Errc::resource_exhausted:
      return "resource_exhausted";
    case Errc::already_exists:
      return "already_exists";
    case Errc::internal:
      return "internal";
  }
  return "unknown";
}

}  // namespace darkbloom
