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

// The PID holding a write lock on `fd`'s file, asked without taking any lock; nullopt when none.
std::optional<pid_t> lock_holder(int fd) {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  if (::fcntl(fd, F_GETLK, &probe) != 0 || probe.l_type == F_UNLCK) return std::nullopt;
  return probe.l_pid;
}

// Ours and not writable by others: nobody else can swap the files we lock and write.
Status check_owned(const std::string& path, const struct stat& info) {
  if (info.st_uid != ::geteuid()) {
    return make_error(Errc::permission_denied, fmt::format("{} belongs to another user (uid {})", path, info.st_uid));
  }
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return make_error(Errc::permission_denied, fmt::format("{} may be written by others (mode {:04o}); chmod 700 it",
                                                           path, info.st_mode & 07777));
  }
  return {};
}

}  // namespace

Result<InstanceLock> InstanceLock::acquire(const std::string& dir) {
  std::error_code error;
  const bool created = std::filesystem::create_directories(dir, error);
  if (error)
    return make_error(Errc::io_error, fmt::format("cannot create state directory {}: {}", dir, error.message()));
  if (created) ::chmod(dir.c_str(), 0700);
  struct stat dir_info {};
  if (::lstat(dir.c_str(), &dir_info) != 0 || !S_ISDIR(dir_info.st_mode)) {
    return make_error(Errc::invalid_argument, fmt::format("state directory {} is not a directory", dir));
  }
  DARKBLOOM_RETURN_IF_ERROR(check_owned(dir, dir_info));
  const std::string path = pid_file(dir);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(Errc::io_error, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  InstanceLock lock(fd);
  struct stat file_info {};
  if (::fstat(fd, &file_info) != 0 || !S_ISREG(file_info.st_mode)) {
    return make_error(Errc::invalid_argument, fmt::format("{} is not a regular file", path));
  }
  DARKBLOOM_RETURN_IF_ERROR(check_owned(path, file_info));
  struct flock whole {};
  whole.l_type = F_WRLCK;
  whole.l_whence = SEEK_SET;
  if (::fcntl(fd, F_SETLK, &whole) != 0) {
    const auto holder = lock_holder(fd);
    return make_error(Errc::already_exists,
                      fmt::format("another darkbloom agent{} runs on the state directory {}; stop it (darkbloom stop "
                                  "--state-dir {}) or give this one its own --state-dir",
                                  holder ? fmt::format(" (PID {})", *holder) : std::string(), dir, dir));
  }
  // For people reading the directory; the lock itself says who holds it.
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
  const int fd = ::open(pid_file(dir).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  const auto holder = lock_holder(fd);
  ::close(fd);
  return holder;
}

std::string default_state_dir() {
  if (::geteuid() == 0) return "/var/lib/darkbloom";
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && state[0] == '/') {
    return std::string(state) + "/darkbloom";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return std::string(home) + "/.local/state/darkbloom";
  }
  return "/var/lib/darkbloom";
}

}  // namespace darkbloom::apps
