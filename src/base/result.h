// Result<T>: the value of an operation that can fail in an expected way (bad input, missing file,
// peer gone), carrying an error code and a message a user can act on. Not for broken invariants:
// those throw.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace darkbloom {

enum class Errc {
  invalid_argument,  // the caller passed something malformed or out of range
  not_found,         // a file, key, model or record does not exist
  io_error,          // the operating system refused a read, write or map
  bad_format,        // bytes that do not follow the format they claim (GGUF, JSON, ...)
  unsupported,       // well-formed but not something this build can handle
  out_of_range,      // a size or count beyond a limit (context, memory budget)
  cancelled,
  unavailable,         // a device or peer that is absent or busy
  permission_denied,   // the caller may not do this (a policy refused, a wrong PIN)
  resource_exhausted,  // not enough of something to spend (a balance, a quota)
  already_exists,      // a record that may be written once is already there
  internal,
};

struct Error {
  Errc code = Errc::internal;
  std::string message;

  // Prefixes the message with context, e.g. the file name: "model.gguf: truncated header".
  Error with_context(const std::string& context) const& { return {code, context + ": " + message}; }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : state_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(state_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(state_);
  }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Error make_error(Errc code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace darkbloom

// Returns the error of a failed Result<...> expression from the enclosing function.
#define DARKBLOOM_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                         \
    if (auto darkbloom_status_ = (expr); !darkbloom_status_) return darkbloom_status_.error(); \
  } while (0)
