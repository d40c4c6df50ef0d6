// Programs the end-to-end tests run as they would run from a shell (shmcast, shm-stat,
// redis-cli, ...): a Command is one such child with pipes on its stdin, stdout and stderr, and
// run() runs one to the end.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace shmcast::test {

// A program run as a child with pipes on stdin, stdout and stderr. Output is collected while
// input is written, so neither side can fill a pipe and block the other.
class Command {
 public:
  explicit Command(std::vector<std::string> argv) {
    // A child that exits without reading its stdin must not kill the test with SIGPIPE.
    static const bool sigpipe_ignored = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
    EXPECT_TRUE(sigpipe_ignored);
    int in[2];
    int out[2];
    int err[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // SIGTERM if the test process dies first: a crashed test leaves nothing running.
      if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      execvp(args[0], args.data());
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    in_ = in[1];
    out_ = out[0];
    err_ = err[0];
    for (const int fd : {in_, out_, err_}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  ~Command() {
    for (int* fd : {&in_, &out_, &err_}) close_fd(*fd);
    // SIGTERM first: a shmcast subscriber killed outright leaves its slot to be reaped, and a
    // coordinator stopped before that reap keeps the bus in /dev/shm for the next one.
    if (pid_ > 0 && !wait_for_exit(SIGTERM, std::chrono::seconds(5))) {
      wait_for_exit(SIGKILL, std::chrono::seconds(5));
    }
  }
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& out() const { return out_text_; }
  [[nodiscard]] const std::string& err() const { return err_text_; }

  /// Queues `bytes` for the child's stdin; `close_stdin` sends EOF once they are written.
  void feed(std::string_view bytes) { pending_ += bytes; }
  void close_stdin() {
    close_after_input_ = true;
    if (pending_.empty()) close_fd(in_);
  }
  /// Closes our end of the child's stdout, as a reader that lost interest would.
  void close_stdout() { close_fd(out_); }
  void signal(int sig) const { ::kill(pid_, sig); }

  /// Collects output until stdout holds at least `size` bytes; false on timeout.
  bool read_until_size(std::size_t size,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return pump_until([&] { return out_text_.size() >= size; }, timeout);
  }
  /// Collects output until stdout contains `text`; false on timeout.
  bool read_until_text(std::string_view text,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return pump_until([&] { return out_text_.find(text) != std::string::npos; }, timeout);
  }
  /// Collects output until `done()`; false on timeout.
  bool pump_until(const std::function<bool()>& done,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      if (Clock::now() > deadline) return false;
      pump(10);
    }
    return true;
  }

  /// Collects whatever output is ready without waiting, so that the child never blocks on a
  /// full pipe while the test waits for something else.
  void collect() { pump(0); }

  /// Waits for the child to exit and for its output to end. Returns the exit status, or 128 +
  /// the signal that killed it, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0) {
      pump(5);
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      } else if (Clock::now() > deadline) {
        return std::nullopt;
      }
    }
    while ((out_ >= 0 || err_ >= 0) && Clock::now() < deadline) pump(5);
    return status_;
  }

 private:
  using Clock = std::chrono::steady_clock;

  bool wait_for_exit(int sig, std::chrono::milliseconds timeout) {
    ::kill(pid_, sig);
    const auto deadline = Clock::now() + timeout;
    while (waitpid(pid_, nullptr, WNOHANG) != pid_) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pid_ = 0;
    return true;
  }

  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  void pump(int timeout_ms) {
    pollfd fds[3];
    nfds_t n = 0;
    if (out_ >= 0) fds[n++] = {out_, POLLIN, 0};
    if (err_ >= 0) fds[n++] = {err_, POLLIN, 0};
    if (in_ >= 0 && !pending_.empty()) fds[n++] = {in_, POLLOUT, 0};
    if (n == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
      return;
    }
    if (poll(fds, n, timeout_ms) <= 0) return;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_) {
        const ssize_t w = ::write(in_, pending_.data(), pending_.size());
        if (w > 0) pending_.erase(0, static_cast<std::size_t>(w));
        if (w < 0 && errno != EAGAIN) pending_.clear();  // the child closed its stdin
        if (pending_.empty() && close_after_input_) close_fd(in_);
        continue;
      }
      int& fd = fds[i].fd == out_ ? out_ : err_;
      std::string& text = fds[i].fd == out_ ? out_text_ : err_text_;
      char buffer[65536];
      const ssize_t r = ::read(fd, buffer, sizeof buffer);
      if (r > 0) text.append(buffer, static_cast<std::size_t>(r));
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) close_fd(fd);
    }
  }

  pid_t pid_ = 0;
  int in_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::string pending_;
  bool close_after_input_ = false;
  std::string out_text_;
  std::string err_text_;
  int status_ = -1;
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
