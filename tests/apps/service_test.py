#!/usr/bin/python3
"""Running as a service: the systemd units both programs write (checked by `systemd-analyze
verify`), readiness, status and watchdog told to a NOTIFY_SOCKET the test listens on, the
agent's instance lock on its state directory, `darkbloom status`, and `darkbloom stop` draining a
request in flight."""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

DARKBLOOM = None
COORDINATOR = None
ADMIN_TOKEN = "admin-token-for-service-tests-0123456789"


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket read all the time (as systemd
    does; a full queue would block the sender) and what it was told."""

    def __init__(self, path):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(path)
        self.messages = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                message = self.socket.recv(4096).decode()
            except OSError:
                return
            with self.lock:
                self.messages.append(message)

    def told(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.told():
                if re.search(pattern, message):
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} among {self.told()[-20:]}")

    def close(self):
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


def api(port, path, token, body=None, method=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Units(unittest.TestCase):
    def verify(self, text, name):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(text)
            result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            # Warnings about this unit (other units of the host may have their own).
            self.assertEqual([line for line in result.stderr.splitlines() if name in line], [], result.stderr)

    def test_both_units_verify_and_are_sandboxed(self):
        provider = subprocess.run([DARKBLOOM, "service", "install", "--print"], capture_output=True, text=True,
                                  check=True).stdout
        coordinator = subprocess.run([COORDINATOR, "--print-systemd-unit"], capture_output=True, text=True,
                                     check=True).stdout
        self.verify(provider, "darkbloom.service")
        self.verify(coordinator, "darkbloom-coordinator.service")
        for unit in (provider, coordinator):
            for line in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                         "DevicePolicy=closed"):
                self.assertIn(line, unit)
        self.assertIn("DeviceAllow=/dev/tpmrm0 rw", provider)
        # The agent may take minutes to load and has no reload; the coordinator reloads its
        # certificate and may bind :443.
        self.assertIn("TimeoutStartSec=infinity", provider)
        self.assertNotIn("ExecReload", provider)
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", coordinator)
        self.assertIn("AmbientCapabilities=CAP_NET_BIND_SERVICE", coordinator)
        self.assertIn("CapabilityBoundingSet=\n", provider)
        self.assertIn(f"ExecStart={os.path.realpath(DARKBLOOM)} start", provider)

    def test_install_writes_the_unit_where_asked(self):
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run([DARKBLOOM, "service", "install", "--user", "--unit-dir", tmp, "--config",
                                     os.path.join(tmp, "provider.toml")], capture_output=True, text=True, check=True)
            self.assertIn("systemctl --user daemon-reload", result.stdout)
            with open(os.path.join(tmp, "darkbloom.service")) as f:
                unit = f.read()
            self.assertIn("WantedBy=default.target", unit)
            self.assertNotIn("DevicePolicy", unit)  # a user manager cannot apply it


class RunningAgent(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = cls.path("service-model.gguf")
        # Big enough that a 3000-token answer takes about a second: still running when the stop comes.
        subprocess.run([DARKBLOOM, "models", "synth", "-o", cls.model, "--layers", "4", "--embd", "512", "--heads", "8",
                        "--kv-heads", "4", "--ffn", "1408", "--vocab", "4000", "--seed", "3"], check=True,
                       capture_output=True)
        cls.notify = NotifySocket(cls.path("coordinator.notify"))
        cls.coordinator = subprocess.Popen(
            [COORDINATOR, "--listen", "127.0.0.1:0", "--data-dir", cls.path("data"), "--log-level", "warn"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "DARKBLOOM_ADMIN_TOKEN": ADMIN_TOKEN, "NOTIFY_SOCKET": cls.notify.path,
                 "WATCHDOG_USEC": "200000"})
        cls.port = int(re.search(r"127\.0\.0\.1:(\d+)", cls.coordinator.stdout.readline()).group(1))
        account = api(cls.port, "/v1/admin/keys", ADMIN_TOKEN, body={})
        api(cls.port, "/v1/admin/credit", ADMIN_TOKEN, body={"account_id": account["account_id"],
                                                             "amount_micro_usd": 1_000_000_000})
        cls.api_key = account["api_key"]
        # The agent's operator: payouts, and what `status` says they earned, go there.
        cls.operator_token = cls.path("operator-token")
        with open(os.open(cls.operator_token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(api(cls.port, "/v1/admin/keys", ADMIN_TOKEN, body={})["api_key"] + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.coordinator.kill()
        cls.coordinator.wait()
        cls.coordinator.stdout.close()
        cls.coordinator.stderr.close()
        cls.notify.close()
        cls.tmp.cleanup()

    @classmethod
    def path(cls, name):
        return os.path.join(cls.tmp.name, name)

    def start_agent(self, state_dir, notify=None):
        env = {**os.environ, "WATCHDOG_USEC": "200000"}
        if notify:
            env["NOTIFY_SOCKET"] = notify.path
        process = subprocess.Popen([DARKBLOOM, "start", "--coordinator", f"ws://127.0.0.1:{self.port}", "--model",
                                    self.model, "--threads", "1", "--state-dir", state_dir, "--drain-timeout", "20",
                                    "--account-token-file", self.operator_token],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(lambda: (process.kill(), process.wait(), process.stderr.close()))
        return process

    def darkbloom(self, *args):
        return subprocess.run([DARKBLOOM, *args], capture_output=True, text=True, timeout=60)

    def test_the_coordinator_tells_systemd_it_is_ready_and_feeds_the_watchdog(self):
        self.notify.wait_for(r"READY=1\nSTATUS=listening on 127\.0\.0\.1:\d+")
        watchdog = self.notify.told().count("WATCHDOG=1")
        deadline = time.monotonic() + 30
        while self.notify.told().count("WATCHDOG=1") < watchdog + 2:
            self.assertLess(time.monotonic(), deadline, "the watchdog is not fed")
            time.sleep(0.05)

    def test_one_agent_per_state_directory_status_and_a_draining_stop(self):
        state = self.path("agent-state")
        notify = NotifySocket(self.path("agent.notify"))
        self.addCleanup(notify.close)
        agent = self.start_agent(state, notify)
        notify.wait_for(r"READY=1\nSTATUS=serving service-model")
        notify.wait_for(r"STATUS=registered as prov_")
        notify.wait_for(r"^WATCHDOG=1$")
        # A second agent on the same directory refuses to start, naming the first one's PID.
        second = self.start_agent(state)
        self.assertEqual(second.wait(timeout=30), 1)
        self.assertIn(f"another darkbloom agent (PID {agent.pid}) runs on the state directory {state}",
                      second.stderr.read())
        # Status, from the running agent's state directory.
        deadline = time.monotonic() + 10
        while True:
            status = self.darkbloom("status", "--state-dir", state)
            if "registered" in status.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn(f"PID {agent.pid}", status.stdout)
        self.assertRegex(status.stdout, r"connection\s+registered as prov_")
        self.assertIn(f"ws://127.0.0.1:{self.port}", status.stdout)
        self.assertRegex(status.stdout, r"model\s+service-model")
        # Routable once its first challenge passed.
        deadline = time.monotonic() + 30
        while api(self.port, "/health", self.api_key)["routable"] < 1:
            self.assertLess(time.monotonic(), deadline, "the agent never became routable")
            time.sleep(0.1)
        # One answer: the coordinator tells the agent what it earned the operator, and status shows it.
        api(self.port, "/v1/completions", self.api_key, body={"model": "service-model", "prompt": "Hi", "max_tokens": 4})
        deadline = time.monotonic() + 15
        while json.loads(self.darkbloom("status", "--state-dir", state, "--json").stdout)["earned_micro_usd"] <= 0:
            self.assertLess(time.monotonic(), deadline, "no earnings in the status")
            time.sleep(0.2)
        self.assertRegex(self.darkbloom("status", "--state-dir", state).stdout, r"earnings\s+0\.\d{6} USD this run")
        # A request in flight when the stop comes is finished, then the agent exits.
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/completions", method="POST",
            data=json.dumps({"model": "service-model", "prompt": "Once", "max_tokens": 3000, "ignore_eos": True,
                             "stream": True}).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            first = response.readline()
            self.assertTrue(first.startswith(b"data: "), first)
            stopper = subprocess.Popen([DARKBLOOM, "stop", "--state-dir", state], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            # Draining, it tells the coordinator at once: nothing new is routed to it.
            deadline = time.monotonic() + 20
            while api(self.port, "/health", self.api_key)["routable"] != 0:
                self.assertLess(time.monotonic(), deadline, "the draining agent is still routable")
                time.sleep(0.05)
            self.assertIsNone(agent.poll(), "the agent exited instead of draining")
            rest = response.read().decode()
        self.assertTrue('"finish_reason":"length"' in rest and '"error"' not in rest, rest[-400:])
        self.assertTrue(rest.rstrip().endswith("data: [DONE]"), rest[-200:])
        _, stop_errors = stopper.communicate(timeout=60)
        self.assertEqual(stopper.returncode, 0, stop_errors)
        self.assertEqual(agent.wait(timeout=30), 0)
        notify.wait_for(r"STOPPING=1")
        stopped = self.darkbloom("status", "--state-dir", state)
        self.assertEqual(stopped.returncode, 3)
        self.assertIn("no agent running", stopped.stdout)
        self.assertIn('"state":"stopped"', stopped.stdout)
        self.assertIn('"requests_served":2', stopped.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--darkbloom", required=True)
    parser.add_argument("--coordinator", required=True)
    args, rest = parser.parse_known_args()
    DARKBLOOM = os.path.abspath(args.darkbloom)
    COORDINATOR = os.path.abspath(args.coordinator)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
