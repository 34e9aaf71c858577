// A private PostgreSQL server for one test process: `initdb` into a temporary directory, the
// server on a free 127.0.0.1 port (and a socket in that directory), stopped when the object dies.
// The server also gets SIGQUIT if the test process dies first (PR_SET_PDEATHSIG), so a crashed or
// timed-out test leaves nothing running. As root (CI), the server runs as the `postgres` user,
// because PostgreSQL refuses to run as root.
#pragma once

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace darkbloom::testing {

class PostgresServer {
 public:
  PostgresServer() {
    bin_ = find_bin_dir();
    if (geteuid() == 0) {
      const passwd* user = getpwnam("postgres");
      if (user == nullptr) throw std::runtime_error("running as root and there is no postgres user to run the server");
      uid_ = user->pw_uid;
      gid_ = user->pw_gid;
      std::filesystem::permissions(dir_.path(), std::filesystem::perms::owner_all);
      if (chown(dir_.path().c_str(), uid_, gid_) != 0) throw std::runtime_error("cannot hand the data dir to postgres");
    }
    const std::string data = dir_.file("data");
    const int status = run_and_wait({bin_ + "/initdb", "-D", data, "-U", "darkbloom", "--auth=trust", "-E", "UTF8",
                                     "--no-sync", "--no-instructions"},
                                    dir_.file("initdb.log"));
    if (status != 0) throw std::runtime_error("initdb failed: " + tail(dir_.file("initdb.log")));
    // The free port is free when asked, not when postgres binds it: another test process may
    // take it first. Readiness is asked of this server's own socket (in this process's directory),
    // never of the TCP port, which could be another process's server; a server that could not
    // bind exits, and another port is tried.
    for (int attempt = 1;; ++attempt) {
      port_ = free_port();
      pid_ = spawn({bin_ + "/postgres", "-D", data, "-p", std::to_string(port_), "-k", dir_.path().string(), "-c",
                    "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"},
                   dir_.file("server.log"), /*die_with_parent=*/true);
      if (wait_until_ready()) break;
      pid_ = -1;
      if (attempt == 5) throw std::runtime_error("postgres exited at start: " + tail(dir_.file("server.log")));
    }
  }

  ~PostgresServer() {
    if (pid_ <= 0) return;
    kill(pid_, SIGINT);  // fast shutdown
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& database = "postgres") const {
    return "postgresql://darkbloom@127.0.0.1:" + std::to_string(port_) + "/" + database;
  }

  // A new empty database; returns its URL.
  std::string create_database() {
    const std::string name = "test_" + std::to_string(++databases_);
    PGconn* connection = PQconnectdb(url().c_str());
    PGresult* result = PQexec(connection, ("CREATE DATABASE " + name).c_str());
    const bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
    const std::string message = PQerrorMessage(connection);
    PQclear(result);
    PQfinish(connection);
    if (!ok) throw std::runtime_error("CREATE DATABASE failed: " + message);
    return url(name);
  }

 private:
  // True once this server answers on its own socket; false when it exited first.
  bool wait_until_ready() {
    const std::string own_socket =
        "host=" + dir_.path().string() + " port=" + std::to_string(port_) + " user=darkbloom dbname=postgres";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (PQping(own_socket.c_str()) != PQPING_OK) {
      int child_status = 0;
      if (waitpid(pid_, &child_status, WNOHANG) == pid_) return false;
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("postgres did not accept connections in 60 s: " + tail(dir_.file("server.log")));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }

  static std::string find_bin_dir() {
    std::vector<std::filesystem::path> found;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ignored)) {
      if (std::filesystem::exists(entry.path() / "bin" / "postgres")) found.push_back(entry.path() / "bin");
    }
    if (found.empty()) throw std::runtime_error("no PostgreSQL server under /usr/lib/postgresql (./run deps)");
    std::sort(found.begin(), found.end());
    return found.back().string();
  }

  static int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      close(fd);
      throw std::runtime_error("no free loopback port");
    }
    close(fd);
    return ntohs(address.sin_port);
  }

  // Starts argv with stdout and stderr to `log`, as the postgres user when we are root.
  pid_t spawn(const std::vector<std::string>& argv, const std::string& log, bool die_with_parent) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (geteuid() == 0 && (setgid(gid_) != 0 || setuid(uid_) != 0)) _exit(126);
      // After the user change: a change of credentials clears the parent-death signal.
      if (die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || getppid() != parent)) _exit(125);
      std::vector<char*> args;
      for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    return pid;
  }

  int run_and_wait(const std::vector<std::string>& argv, const std::string& log) {
    const pid_t pid = spawn(argv, log, false);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  }

  static std::string tail(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    std::string all = text.str();
    return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
  }

  TempDir dir_;
  std::string bin_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
  int databases_ = 0;
};

}  // namespace darkbloom::testing
