// The provider's security posture on Linux: hardening it applies to itself at start (not
// dumpable, no core dumps, loader variables scrubbed) and facts it can only report (Secure Boot,
// kernel lockdown, Yama ptrace scope, an attached tracer). Reported in the attestation document
// and in every challenge answer; the coordinator distrusts a provider whose posture regresses.
#pragma once

#include <string>

namespace darkbloom::attest {

struct Posture {
  bool secure_boot = false;          // UEFI SecureBoot variable is 1
  bool kernel_lockdown = false;      // /sys/kernel/security/lockdown is integrity or confidentiality
  bool ptrace_restricted = false;    // Yama ptrace_scope >= 1
  bool core_dumps_disabled = false;  // RLIMIT_CORE is 0 and the process is not dumpable
  bool not_traced = false;           // TracerPid is 0
  bool env_clean = false;            // no LD_PRELOAD and friends in the environment, now or at start
};

// Applies what a process can do for itself: PR_SET_DUMPABLE 0, RLIMIT_CORE 0, and removes
// LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT and similar variables. Call first thing at start.
void harden_process();

// Reads the current posture (cheap: a few small files under /proc and /sys).
Posture probe_posture();

// "secure_boot=false kernel_lockdown=false ..." for logs and `doctor`.
std::string describe(const Posture& posture);

}  // namespace darkbloom::attest
