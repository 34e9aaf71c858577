#include "apps/common/instance_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace darkbloom::apps {
namespace {

std::string pid_file(const std::string& dir) {
  return (std::filesystem::path(dir) / "agent.pid").string();
}

std::optional<pid_t> read_pid(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return std::nullopt;
  char* end = nullptr;
  const long pid = std::strtol(text, &end, 10);
  if (pid <= 0 || end == text) return std::nullopt;
  return static_cast<pid_t>(pid);
}

}  // namespace

Result<InstanceLock> InstanceLock::acquire(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    return make_error(Errc::io_error, fmt::format("cannot create state directory {}: {}", dir, error.message()));
  ::chmod(dir.c_str(), 0700);
  const std::string path = pid_file(dir);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(Errc::io_error, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  InstanceLock lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const auto holder = read_pid(fd);
    return make_error(Errc::already_exists,
                      fmt::format("another darkbloom agent{} runs on the state directory {}; stop it (darkbloom stop "
                                  "--state-dir {}) or give this one its own --state-dir",
                                  holder ? fmt::format(" (PID {})", *holder) : std::string(), dir, dir));
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return make_error(Errc::io_error, fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  return lock;
}

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

std::optional<pid_t> running_instance(const std::string& dir) {
  const int fd = ::open(pid_file(dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<pid_t> pid;
  // Free to take: nobody holds it, nobody runs. Taken: the holder's PID is in the file.
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) pid = read_pid(fd);
  ::close(fd);
  return pid;
}

std::string default_state_dir() {
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && state[0] == '/') {
    return std::string(state) + "/darkbloom";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return std::string(home) + "/.local/state/darkbloom";
  }
  return "/var/lib/darkbloom";
}

}  // namespace darkbloom::apps
