// What the tests of the `shmcast` command line client share: how to run it on a bus or
// redis-cli on a redis-server with the same arguments, and the lines a subscriber prints.
#pragma once

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {

/// `shmcast --bus BUS args...`
inline std::vector<std::string> shm(const std::string& bus, std::vector<std::string> args) {
  std::vector<std::string> argv{bin_dir() + "/shmcast", "--bus", bus};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

/// Prints stdout of `shmcast --bus BUS args...`, which must succeed silently.
inline std::string shm_out(const std::string& bus, std::vector<std::string> args,
                           std::string_view input = {}) {
  const Result r = run(shm(bus, std::move(args)), input);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  return r.out;
}

/// What a subscriber prints (raw) when it subscribes to `names` with `kind` (subscribe or
/// psubscribe) on a fresh connection.
inline std::string confirmations(std::string_view kind, const std::vector<std::string>& names) {
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i) {
    text += fmt::format("{}\n{}\n{}\n", kind, names[i], i + 1);
  }
  return text;
}

inline std::string message(std::string_view channel, std::string_view payload) {
  return fmt::format("message\n{}\n{}\n", channel, payload);
}

inline std::string pmessage(std::string_view pattern, std::string_view channel,
                            std::string_view payload) {
  return fmt::format("pmessage\n{}\n{}\n{}\n", pattern, channel, payload);
}

/// `text`'s lines in sorted order: the canonical form of a reply whose order Redis leaves open.
inline std::string sorted_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

// What a test runs: shmcast on a bus, or redis-cli on a server. Options go before the command
// in both; `--count` of a subscriber exists in shmcast alone.
struct Target {
  std::vector<std::string> base;
  bool redis = false;

  [[nodiscard]] std::vector<std::string> argv(std::vector<std::string> args) const {
    std::vector<std::string> all = base;
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }
  /// `[options...] subscribe|psubscribe NAMES...`, ending by itself after `count` messages for
  /// shmcast (count 0: running until stopped); a redis-cli subscriber is stopped by finish().
  [[nodiscard]] std::vector<std::string> subscriber(std::vector<std::string> options,
                                                    const std::string& command,
                                                    const std::vector<std::string>& names,
                                                    int count) const {
    if (!redis && count > 0) {
      options.push_back("--count");
      options.push_back(std::to_string(count));
    }
    options.push_back(command);
    options.insert(options.end(), names.begin(), names.end());
    return argv(options);
  }
  /// The subscriber's whole output, once it holds `expected_size` bytes.
  std::string finish(Command& sub, std::size_t expected_size) const {
    EXPECT_TRUE(sub.read_until_size(expected_size)) << sub.out();
    if (redis) {
      sub.signal(SIGTERM);
      (void)sub.wait(std::chrono::seconds(10));
    } else {
      EXPECT_EQ(sub.wait(std::chrono::seconds(10)), 0)
          << "a shmcast subscriber with --count exits 0 by itself";
    }
    return sub.out();
  }
};

inline Target shmcast_target(const std::string& bus) {
  return {{bin_dir() + "/shmcast", "--bus", bus}, false};
}
inline Target redis_target(const std::string& socket) {
  return {{"redis-cli", "-s", socket}, true};
}

}  // namespace shmcast::test
