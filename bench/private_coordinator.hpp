// A private shmcastd for a benchmark run (shmcast-bench without --bus, shmcast-soak): the one
// built next to the running program, started on its own bus and stopped at the end.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "shmcast/shmcast.hpp"
#include "support/process.hpp"

namespace bench_support {

/// Starts the shmcastd next to this program with `--bus bus` and `flags`, and returns its pid
/// once the bus answers. Its stderr goes to /dev/null (it logs every attach and detach, which
/// would bury the results). It runs in a process group of its own, so a Ctrl-C at the terminal
/// reaches only the harness (shmcast-bench catches it and stops the coordinator last, once every
/// client is gone and the bus can be removed), and it gets SIGTERM if the harness dies first.
/// Throws if it is missing, exits, or does not come up.
inline pid_t start_private_coordinator(const std::string& bus,
                                       const std::vector<std::string>& flags) {
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
  const std::string exe = (self.parent_path() / "shmcastd").string();
  if (access(exe.c_str(), X_OK) != 0) {
    throw std::runtime_error(
        fmt::format("no shmcastd next to this program ({}); build it, or pass "
                    "--bus NAME of a running coordinator",
                    exe));
  }
  std::vector<std::string> args{exe, "--bus", bus};
  args.insert(args.end(), flags.begin(), flags.end());
  shmcast::testing::Options options;
  options.err = shmcast::testing::Stream::discard;
  options.own_process_group = true;
  shmcast::testing::Process coordinator(args, options);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    if (!coordinator.running()) {
      throw std::runtime_error(
          fmt::format("{} exited at start (status {}); run it by hand with these limits to see why",
                      exe, coordinator.status()));
    }
    try {
      if (shmcast::inspect(bus).coordinator_alive) return coordinator.release();
    } catch (const shmcast::Error&) {
    }
    if (std::chrono::steady_clock::now() > deadline) {
      coordinator.kill(SIGTERM);
      throw std::runtime_error(fmt::format("{} did not come up within 10 s", exe));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

/// Stops a coordinator started by start_private_coordinator (SIGTERM: it removes its bus once
/// no client is left) and reaps it. Does nothing for a pid of 0 or less.
inline void stop_private_coordinator(pid_t pid) {
  shmcast::testing::kill_and_reap(pid, SIGTERM);
}

}  // namespace bench_support
