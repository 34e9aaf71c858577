// One running agent per state directory: a write lock (fcntl) on DIR/agent.pid, held for the life
// of the process (the kernel drops it when the process dies, however it dies). Others ask the
// kernel who holds it (F_GETLK) without taking it, so they never get in a starting agent's way and
// always learn the holder's real PID, never a stale one from the file.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "base/result.h"

namespace darkbloom::apps {

class InstanceLock {
 public:
  // Creates DIR (mode 0700) if needed, refuses a DIR or PID file that is a symbolic link, not
  // ours, or writable by others, and takes the lock; a second taker gets an error naming the PID
  // that holds it.
  static Result<InstanceLock> acquire(const std::string& dir);
  InstanceLock(InstanceLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  InstanceLock& operator=(InstanceLock&&) = delete;
  ~InstanceLock();

 private:
  explicit InstanceLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The PID of the agent holding DIR's lock, or nullopt when none runs there.
std::optional<pid_t> running_instance(const std::string& dir);

// The state directory when --state-dir is not given: /var/lib/darkbloom for root (as the system
// service uses), else $XDG_STATE_HOME/darkbloom, else ~/.local/state/darkbloom.
std::string default_state_dir();

}  // namespace darkbloom::apps
