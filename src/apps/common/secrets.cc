#include "apps/common/secrets.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "apps/common/config_layers.h"
#include "base/log.h"

namespace darkbloom::apps {
namespace {

constexpr size_t kMaxSecretBytes = 64 * 1024;

struct Descriptor {
  int fd = -1;
  ~Descriptor() {
    if (fd >= 0) ::close(fd);
  }
};

Status check_mode(const std::string& path, const struct stat& info, bool allow_group) {
  const mode_t too_open = allow_group ? S_IRWXO : (S_IRWXG | S_IRWXO);
  if ((info.st_mode & too_open) != 0) {
    return make_error(
        Errc::permission_denied,
        fmt::format("{} may be read by {} (mode {:04o}); make it private: chmod 600 {}", path,
                    (info.st_mode & S_IRWXO) != 0 ? "every user" : "its group", info.st_mode & 07777, path));
  }
  return {};
}

}  // namespace

Status check_private_file_mode(const std::string& path, bool allow_group) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    return make_error(Errc::not_found, fmt::format("{}: {}", path, std::strerror(errno)));
  }
  return check_mode(path, info, allow_group);
}

Result<std::string> read_secret_file(const std::string& path, bool allow_group) {
  Descriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};  // a FIFO must not block
  if (file.fd < 0) return make_error(Errc::not_found, fmt::format("{}: {}", path, std::strerror(errno)));
  struct stat info {};
  if (::fstat(file.fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return make_error(Errc::invalid_argument, fmt::format("{}: not a regular file", path));
  }
  if (auto private_enough = check_mode(path, info, allow_group); !private_enough) return private_enough.error();
  if (static_cast<size_t>(info.st_size) > kMaxSecretBytes) {
    return make_error(Errc::invalid_argument, fmt::format("{}: larger than {} bytes", path, kMaxSecretBytes));
  }
  std::string secret(static_cast<size_t>(info.st_size), '\0');
  size_t filled = 0;
  while (filled < secret.size()) {
    const ssize_t n = ::read(file.fd, secret.data() + filled, secret.size() - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    filled += static_cast<size_t>(n);
  }
  secret.resize(filled);
  while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back()))) secret.pop_back();
  if (secret.empty()) return make_error(Errc::invalid_argument, fmt::format("{}: empty", path));
  return secret;
}

bool typed_on_command_line(const CLI::App& app, const std::string& option) {
  const CLI::Option* found = app.get_option_no_throw(option);
  return found != nullptr && found->count() > 0;
}

Status load_secret(const std::string& option, std::string& value, const std::string& file) {
  if (file.empty()) return {};
  if (!value.empty()) {
    return make_error(Errc::invalid_argument, fmt::format("{} and {}-file are both set; give one", option, option));
  }
  auto secret = read_secret_file(file);
  if (!secret) return secret.error().with_context(option + "-file");
  value = std::move(*secret);
  return {};
}

void warn_if_typed(const std::string& option, bool typed) {
  if (!typed) return;
  log::warn("{} on the command line can be read by every local user (ps, /proc); use {}-file or {} instead", option,
            option, environment_name(option.substr(2)));
}

}  // namespace darkbloom::apps
