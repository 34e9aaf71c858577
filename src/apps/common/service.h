// Running under a service manager: readiness, status and stopping told to systemd (sd_notify;
// nothing happens without $NOTIFY_SOCKET), the watchdog fed from the network thread so a stuck
// thread gets the process restarted, and the systemd units both programs print.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "net/asio.h"

namespace darkbloom::apps {

void notify_ready(const std::string& status);
void notify_status(const std::string& status);
void notify_stopping();

// Calls `work` now and then every `period` on `executor`'s thread, for as long as the returned
// handle lives.
std::shared_ptr<void> run_every(net::asio::any_io_executor executor, std::chrono::milliseconds period,
                                std::function<void()> work);

// Sends WATCHDOG=1 at half the interval systemd asks for (WatchdogSec=), from a timer on
// `executor`'s thread; returns nullptr (and does nothing) when no watchdog is configured.
std::shared_ptr<void> feed_watchdog(net::asio::any_io_executor executor);

struct UnitOptions {
  std::string description;
  std::string exec_start;        // the command line, absolute path first (quote_argument() the parts)
  std::string user;              // User=; empty: root (or the user manager's user with --user)
  bool user_unit = false;        // for `systemctl --user`: no User=, no device policy
  bool tpm_device = false;       // DeviceAllow=/dev/tpmrm0, and the tss group for a User=
  bool reloads = false;          // handles SIGHUP: ExecReload=
  bool binds_low_ports = false;  // keeps CAP_NET_BIND_SERVICE (a coordinator on :443)
  std::string start_timeout;     // TimeoutStartSec=; empty: systemd's default
  std::string stop_timeout = "45";
  std::string required_file;    // ConditionPathExists=: not started (rather than failing) without it
  std::string state_directory;  // StateDirectory= (under /var/lib), empty: none
};

// An argument for ExecStart=: quoted when it has spaces or quotes, '%' doubled (a specifier).
std::string quote_argument(const std::string& argument);

// A Type=notify unit with a watchdog, restart on failure and sandboxing (NoNewPrivileges,
// ProtectSystem=strict, PrivateTmp, ...).
std::string systemd_unit(const UnitOptions& options);

}  // namespace darkbloom::apps
