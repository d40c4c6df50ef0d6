// Programs the end-to-end tests run as they would run from a shell (shmcast, shm-stat,
// redis-cli, ...): a Command is one such child with pipes on its stdin, stdout and stderr, and
// run() runs one to the end.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "support/process.hpp"

namespace shmcast::test {

// A program run as a child with pipes on stdin, stdout and stderr. Output is collected while
// input is written, so neither side can fill a pipe and block the other. Destroying it stops
// the program (SIGTERM, then SIGKILL) if it still runs.
class Command {
 public:
  explicit Command(const std::vector<std::string>& argv, std::vector<std::string> env = {})
      : process_(argv, piped(std::move(env))) {}

  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  [[nodiscard]] const std::string& out() const { return process_.out(); }
  [[nodiscard]] const std::string& err() const { return process_.err(); }

  /// Queues `bytes` for the child's stdin; `close_stdin` sends EOF once they are written.
  void feed(std::string_view bytes) { process_.feed(bytes); }
  void close_stdin() { process_.close_stdin(); }
  /// Closes our end of the child's stdout, as a reader that lost interest would.
  void close_stdout() { process_.close_stdout(); }
  void signal(int sig) const { process_.signal(sig); }

  /// Collects output until stdout holds at least `size` bytes; false on timeout.
  bool read_until_size(std::size_t size,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return pump_until([&] { return out().size() >= size; }, timeout);
  }
  /// Collects output until stdout contains `text`; false on timeout.
  bool read_until_text(std::string_view text,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return pump_until([&] { return out().find(text) != std::string::npos; }, timeout);
  }
  /// Collects output until `done()`; false on timeout.
  bool pump_until(const std::function<bool()>& done,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      process_.collect(std::chrono::milliseconds(10));
    }
    return true;
  }

  /// Collects whatever output is ready without waiting, so that the child never blocks on a
  /// full pipe while the test waits for something else.
  void collect() { process_.collect(std::chrono::milliseconds(0)); }

  /// Waits for the child to exit and for its output to end. Returns the exit status, or 128 +
  /// the signal that killed it, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (!process_.wait(timeout)) return std::nullopt;
    return process_.exit_code();
  }

 private:
  static testing::Options piped(std::vector<std::string> env) {
    testing::Options options;
    options.in = options.out = options.err = testing::Stream::pipe;
    options.env = std::move(env);
    return options;
  }

  testing::Process process_;
};

struct Result {
  std::string out;
  std::string err;
  int status = -1;  // exit status, 128 + signal, or -1 if it did not finish in time
};

/// `argv` as one line, for messages.
inline std::string join(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& a : argv) text += (text.empty() ? "" : " ") + a;
  return text;
}

/// Runs `argv` to the end with `input` on its stdin.
inline Result run(const std::vector<std::string>& argv, std::string_view input = {}) {
  Command command(argv);
  command.feed(input);
  command.close_stdin();
  const auto status = command.wait();
  if (!status) ADD_FAILURE() << "did not finish within 20 s: " << join(argv);
  return {command.out(), command.err(), status.value_or(-1)};
}

}  // namespace shmcast::test
