#include "apps/common/service.h"

#include <fmt/format.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <functional>
#include <utility>

namespace darkbloom::apps {

void notify_ready(const std::string& status) {
  sd_notify(0, fmt::format("READY=1\nSTATUS={}", status).c_str());
}

void notify_status(const std::string& status) {
  sd_notify(0, ("STATUS=" + status).c_str());
}

void notify_stopping() {
  sd_notify(0, "STOPPING=1");
}

std::shared_ptr<void> run_every(net::asio::any_io_executor executor, std::chrono::milliseconds period,
                                std::function<void()> work) {
  struct Loop {
    net::asio::steady_timer timer;
    std::function<void()> work;
  };
  auto loop = std::make_shared<Loop>(Loop{net::asio::steady_timer(executor), std::move(work)});
  auto tick = std::make_shared<std::function<void()>>();
  // The pending wait holds the loop only weakly: dropping the returned handle ends it.
  *tick = [weak = std::weak_ptr<Loop>(loop), period, weak_tick = std::weak_ptr<std::function<void()>>(tick)] {
    auto live = weak.lock();
    if (!live) return;
    live->work();
    live->timer.expires_after(period);
    live->timer.async_wait([weak_tick](const net::error_code& error) {
      if (error) return;
      if (auto next = weak_tick.lock()) (*next)();
    });
  };
  (*tick)();
  return std::make_shared<std::pair<std::shared_ptr<Loop>, std::shared_ptr<std::function<void()>>>>(loop, tick);
}

std::shared_ptr<void> feed_watchdog(net::asio::any_io_executor executor) {
  uint64_t interval_us = 0;
  if (sd_watchdog_enabled(0, &interval_us) <= 0 || interval_us == 0) return nullptr;
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::microseconds(interval_us / 2));
  return run_every(std::move(executor), std::max(period, std::chrono::milliseconds(1)),
                   [] { sd_notify(0, "WATCHDOG=1"); });
}

std::string quote_argument(const std::string& argument) {
  std::string escaped;
  for (const char c : argument) {
    if (c == '%') {
      escaped += "%%";
    } else if (c == '"' || c == '\\') {
      escaped += '\\';
      escaped += c;
    } else {
      escaped += c;
    }
  }
  return argument.find_first_of(" \t\"\\'") == std::string::npos ? escaped : "\"" + escaped + "\"";
}

std::string systemd_unit(const UnitOptions& options) {
  std::string unit = fmt::format(
      "[Unit]\n"
      "Description={}\n"
      "Wants=network-online.target\n"
      "After=network-online.target\n"
      "\n"
      "[Service]\n"
      "Type=notify\n"
      "NotifyAccess=main\n"
      "ExecStart={}\n"
      "Restart=on-failure\n"
      "RestartSec=5\n"
      "WatchdogSec=30\n"
      "TimeoutStopSec={}\n",
      options.description, options.exec_start, options.stop_timeout);
  if (!options.required_file.empty()) {
    // In [Unit], before its dependencies.
    unit.insert(unit.find("Wants="), fmt::format("ConditionPathExists={}\n", options.required_file));
  }
  if (options.reloads) unit += "ExecReload=/bin/kill -HUP $MAINPID\n";
  if (!options.start_timeout.empty()) unit += fmt::format("TimeoutStartSec={}\n", options.start_timeout);
  if (!options.user.empty() && !options.user_unit) {
    unit += fmt::format("User={}\n", options.user);
    if (options.tpm_device) unit += "SupplementaryGroups=tss\n";  // /dev/tpmrm0 is root:tss 0660
  }
  if (!options.state_directory.empty()) {
    unit += fmt::format("StateDirectory={}\nStateDirectoryMode=0700\n", options.state_directory);
  }
  unit +=
      "LimitNOFILE=65536\n"
      "LimitCORE=0\n"
      "UMask=0077\n"
      "NoNewPrivileges=yes\n"
      "ProtectSystem=strict\n"
      "ProtectHome=read-only\n"
      "PrivateTmp=yes\n"
      "ProtectKernelTunables=yes\n"
      "ProtectKernelModules=yes\n"
      "ProtectKernelLogs=yes\n"
      "ProtectControlGroups=yes\n"
      "ProtectClock=yes\n"
      "ProtectHostname=yes\n"
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"
      "RestrictNamespaces=yes\n"
      "RestrictRealtime=yes\n"
      "RestrictSUIDSGID=yes\n"
      "LockPersonality=yes\n"
      "MemoryDenyWriteExecute=yes\n"
      "SystemCallArchitectures=native\n";
  if (options.binds_low_ports && !options.user_unit) {
    unit += "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n";
  } else {
    unit += "CapabilityBoundingSet=\n";
  }
  if (!options.user_unit) {
    // Devices: none but the TPM's resource manager, where the identity key lives.
    unit += "DevicePolicy=closed\n";
    if (options.tpm_device) unit += "DeviceAllow=/dev/tpmrm0 rw\n";
  }
  unit += fmt::format("\n[Install]\nWantedBy={}\n", options.user_unit ? "default.target" : "multi-user.target");
  return unit;
}

}  // namespace darkbloom::apps
