#include "attest/posture.h"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace darkbloom::attest {
namespace {

// Variables that make the dynamic loader run foreign code or read foreign libraries.
constexpr const char* kLoaderVariables[] = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",        "LD_DEBUG",
                                            "LD_PROFILE", "LD_ORIGIN_PATH",  "LD_DYNAMIC_WEAK", "LD_BIND_NOT",
                                            "GCONV_PATH", "MALLOC_TRACE",    "LD_SHOW_AUXV"};

// Set by harden_process: the variables are gone from the environment by the time anyone probes,
// but whatever they loaded is still in the process.
bool loader_variables_at_start = false;

std::string read_small_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return content;
}

bool secure_boot_enabled() {
  // efivarfs files are 4 bytes of attributes followed by the value.
  const std::string value =
      read_small_file("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e98032b8c12b");
  return value.size() >= 5 && value[4] == 1;
}

bool kernel_locked_down() {
  // "none [integrity] confidentiality": the selected mode is in brackets.
  const std::string modes = read_small_file("/sys/kernel/security/lockdown");
  return modes.find("[integrity]") != std::string::npos || modes.find("[confidentiality]") != std::string::npos;
}

bool ptrace_restricted() {
  const std::string scope = read_small_file("/proc/sys/kernel/yama/ptrace_scope");
  return !scope.empty() && scope[0] >= '1' && scope[0] <= '3';
}

bool not_traced() {
  const std::string status = read_small_file("/proc/self/status");
  const size_t at = status.find("TracerPid:");
  if (at == std::string::npos) return false;
  return std::strtol(status.c_str() + at + 10, nullptr, 10) == 0;
}

}  // namespace

void harden_process() {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  for (const char* name : kLoaderVariables) {
    if (std::getenv(name) != nullptr) loader_variables_at_start = true;
    unsetenv(name);
  }
}

Posture probe_posture() {
  Posture posture;
  posture.secure_boot = secure_boot_enabled();
  posture.kernel_lockdown = kernel_locked_down();
  posture.ptrace_restricted = ptrace_restricted();
  rlimit core{};
  posture.core_dumps_disabled = getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_cur == 0 && core.rlim_max == 0 &&
                                prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0;
  posture.not_traced = not_traced();
  posture.env_clean = !loader_variables_at_start;
  for (const char* name : kLoaderVariables) {
    if (std::getenv(name) != nullptr) posture.env_clean = false;
  }
  return posture;
}

std::string describe(const Posture& p) {
  return fmt::format(
      "secure_boot={} kernel_lockdown={} ptrace_restricted={} core_dumps_disabled={} not_traced={} env_clean={}",
      p.secure_boot, p.kernel_lockdown, p.ptrace_restricted, p.core_dumps_disabled, p.not_traced, p.env_clean);
}

}  // namespace darkbloom::attest
