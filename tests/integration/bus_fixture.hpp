// Integration tests run a real shmcastd per test, on a bus named after the test's pid and
// a counter, so tests run in parallel and never touch a bus a user runs.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "shmcast/shmcast.hpp"
#include "support/process.hpp"

namespace shmcast::test {

/// build/bin/, where every program of the build lands (SHMCAST_BIN_DIR is set by CMake).
inline std::string bin_dir() {
  return SHMCAST_BIN_DIR;
}

/// A bus name no other test or user has: "t<pid>-<n>-<tag>".
inline std::string unique_bus(const std::string& tag = "bus") {
  static int counter = 0;
  return fmt::format("t{}-{}-{}", getpid(), ++counter, tag);
}

/// Starts a program from build/bin with `args`; stdout/stderr go to `log` if given. It gets
/// SIGTERM if the test process dies first (a crashed test leaves no coordinator running).
inline pid_t spawn(const std::string& program, const std::vector<std::string>& args,
                   const std::string& log = {}) {
  std::vector<std::string> argv{bin_dir() + "/" + program};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::Process(argv, log.empty() ? testing::Options{} : testing::output_to(log))
      .release();
}

/// Stops a child of this process with SIGSTOP and returns true once it is stopped: nothing it
/// does lands after that (kill alone returns before the signal takes effect).
inline bool pause_child(pid_t pid) {
  return testing::pause(pid);
}

/// Stops a process by its pid and reaps it; returns its wait status.
inline int stop(pid_t pid, int sig = SIGTERM) {
  return testing::kill_and_reap(pid, sig);
}

/// Calls `call`, which must throw Error(code) with `needle` in its message; returns how long
/// it took.
template <class F>
std::chrono::steady_clock::duration expect_error(Errc code, const std::string& needle, F&& call) {
  const auto start = std::chrono::steady_clock::now();
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  return std::chrono::steady_clock::now() - start;
}

/// The whole content of a file ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A dead coordinator leaves its segments behind by design (a new one adopts them); a test that
// kills one removes them itself.
/// Removes every segment of `bus` when it goes out of scope.
struct RemoveSegments {
  std::string bus;
  ~RemoveSegments() {
    const std::string prefix = "shmcast." + bus + ".";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
      if (entry.path().filename().string().rfind(prefix, 0) == 0) {
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
};

/// Runs shmcastd with `args` to its end; returns its exit status (-1 if it did not exit within
/// a minute) and what it printed.
inline std::pair<int, std::string> run_daemon(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string log = fmt::format("/tmp/shmcastd-run-{}-{}.log", getpid(), ++counter);
  std::vector<std::string> argv{bin_dir() + "/shmcastd"};
  argv.insert(argv.end(), args.begin(), args.end());
  int status = -1;
  {
    testing::Process daemon(argv, testing::output_to(log));
    if (daemon.wait(std::chrono::minutes(1)) && WIFEXITED(daemon.status())) {
      status = WEXITSTATUS(daemon.status());
    }
  }
  std::string out = read_file(log);
  ::unlink(log.c_str());
  return {status, out};
}

/// Waits up to 5 s until `bus` has `n` clients; true if it has. The coordinator frees a slot
/// just after answering its detach, so the slot of Daemon's start-up check may outlive the
/// constructor a moment.
inline bool wait_for_clients(const std::string& bus, std::size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (inspect(bus).clients.size() != n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// A coordinator for one test: started in the constructor (waits until the bus accepts
/// clients), stopped with SIGTERM in the destructor.
class Daemon {
 public:
  explicit Daemon(std::string bus = unique_bus(), std::vector<std::string> extra = {})
      : bus_(std::move(bus)) {
    std::vector<std::string> args{"--bus", bus_};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = spawn("shmcastd", args, fmt::format("/tmp/shmcastd-{}.log", bus_));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      try {
        (void)Bus::connect(bus_);
        return;
      } catch (const Error&) {
        if (std::chrono::steady_clock::now() > deadline) {
          stop(pid_, SIGKILL);
          throw std::runtime_error("shmcastd did not start on bus " + bus_);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  }
  ~Daemon() {
    if (pid_ > 0) stop(pid_);
    ::unlink(fmt::format("/tmp/shmcastd-{}.log", bus_).c_str());
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  [[nodiscard]] const std::string& bus() const { return bus_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  /// Stops the coordinator with SIGTERM and returns its wait status; its log stays until the
  /// Daemon is destroyed.
  int terminate() {
    const int status = stop(pid_);
    pid_ = 0;
    return status;
  }
  /// Kills the coordinator now (SIGKILL) and forgets it.
  void kill_now() {
    stop(pid_, SIGKILL);
    pid_ = 0;
  }

 private:
  std::string bus_;
  pid_t pid_ = 0;
};

}  // namespace shmcast::test
