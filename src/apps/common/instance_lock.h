// One running agent per state directory: an flock on DIR/agent.pid, held for the life of the
// process (the kernel drops it when the process dies, however it dies), with the PID written in
// the file so a second start, `darkbloom status` and `darkbloom stop` can name the first one.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "base/result.h"

namespace darkbloom::apps {

class InstanceLock {
 public:
  // Creates DIR (mode 0700) if needed and takes the lock; a second taker gets an error naming the
  // PID that holds it.
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

// The state directory when --state-dir is not given: $XDG_STATE_HOME/darkbloom, else
// ~/.local/state/darkbloom; /var/lib/darkbloom for root without a home.
std::string default_state_dir();

}  // namespace darkbloom::apps
