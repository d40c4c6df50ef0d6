// A private redis-server for the tests that compare shmcast with Redis or talk to it (the CLI,
// the bridge, the comparison programs), and the temporary directory it lives in.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/run_command.hpp"
#include "support/ports.hpp"

namespace shmcast::test {

/// Whether `program` is an executable in one of PATH's directories.
inline bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

inline bool redis_available() {
  return on_path("redis-server") && on_path("redis-cli");
}

/// A directory of its own under /tmp, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test") {
    std::string name = fmt::format("/tmp/shmcast-{}-{}-XXXXXX", tag, getpid());
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = name;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Connects a stream socket to the unix socket at `path`: the descriptor, or -1.
inline int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  path.copy(address.sun_path, sizeof address.sun_path - 1);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    return fd;
  }
  if (fd >= 0) ::close(fd);
  return -1;
}

using testing::free_tcp_port;

/// A private redis-server on a unix socket in a directory of its own (nobody else can put a
/// socket of that name in the way), with nothing written to disk, stopped by its pid when
/// destroyed. `extra` arguments go after the defaults (a later one wins: `--port` for TCP too);
/// files the server writes (a cluster's node file) go into its directory. It can be killed and
/// started again on the same socket.
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {})
      : dir_("redis"), socket_(dir_.path() + "/redis.sock"), extra_(std::move(extra)) {
    start();
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  /// Starts the server and returns once its socket accepts connections.
  void start() {
    std::vector<std::string> argv{
        "redis-server", "--port", "0", "--unixsocket", socket_, "--unixsocketperm",
        "700",          "--save", "",  "--appendonly", "no",    "--dir",
        dir_.path()};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    server_ = std::make_unique<Command>(std::move(argv));
    server_->close_stdin();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const int fd = connect_unix(socket_);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string out = server_->out();
    server_.reset();
    throw std::runtime_error("redis-server did not start: " + out);
  }
  void kill_now() {
    server_->signal(SIGKILL);
    EXPECT_EQ(server_->wait(std::chrono::seconds(10)), 128 + SIGKILL);
    server_.reset();
  }
  /// SIGSTOP: connections stay open but nothing is answered, as with a peer that vanished.
  void freeze() { server_->signal(SIGSTOP); }
  void thaw() { server_->signal(SIGCONT); }

  [[nodiscard]] bool running() const { return server_ != nullptr; }
  [[nodiscard]] const std::string& socket() const { return socket_; }
  [[nodiscard]] std::string url() const { return "unix://" + socket_; }

 private:
  TempDir dir_;
  std::string socket_;
  std::vector<std::string> extra_;
  std::unique_ptr<Command> server_;  // destroyed first: SIGTERM, then SIGKILL if need be
};

}  // namespace shmcast::test
