// Programs and functions that the tests and the benchmarks run as child processes. Each child is
// tied to the process that started it (it gets a signal when that one dies, so a crashed test
// leaves nothing running) and is stopped by its pid, never by its name.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace shmcast::testing {

/// Where one of a child's standard streams goes.
enum class Stream {
  inherit,  // shared with this process
  pipe,     // a pipe to this process: Process::feed writes stdin, out() and err() collect output
  log,      // the file Options::log, created or truncated; stdout and stderr may share it
  discard,  // /dev/null
};

/// How a child starts.
struct Options {
  Stream in = Stream::inherit;  // inherit or pipe
  Stream out = Stream::inherit;
  Stream err = Stream::inherit;
  std::string log;
  /// NAME=VALUE settings added to the child's environment (a NAME it has already is replaced).
  std::vector<std::string> env;
  /// What the child gets when this process dies.
  int parent_death_signal = SIGTERM;
  /// In a process group of its own, a Ctrl-C at the terminal reaches only this process, which
  /// can then stop the child when it is ready to.
  bool own_process_group = false;
};

/// Options with the child's stdout and stderr in the file `log`.
[[nodiscard]] Options output_to(std::string log);

/// A child process, reaped by its owner. Destroying a Process that still runs stops it (see
/// stop). Not thread-safe.
class Process {
 public:
  /// Runs the program argv[0] (looked up in PATH unless it names a path) with `argv`. A program
  /// that cannot be run exits with 127, one whose log cannot be opened with 126. Throws
  /// std::runtime_error if the child cannot be created.
  explicit Process(const std::vector<std::string>& argv, const Options& options = {});
  /// Runs body() in a forked copy of this process, which leaves with body's result through
  /// _exit, so no destructor of the parent's objects runs twice; 101 if body threw (its message
  /// goes to stderr).
  explicit Process(const std::function<int()>& body, const Options& options = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  /// The wait status (see waitpid), once reaped.
  [[nodiscard]] int status() const { return status_; }
  /// The exit status, or 128 + the signal that ended it, once reaped.
  [[nodiscard]] int exit_code() const;
  [[nodiscard]] bool reaped() const { return reaped_; }
  /// False once the child has ended (and then it is reaped).
  [[nodiscard]] bool running();

  /// Sends `sig`; does nothing once the child is reaped, when its pid may belong to another.
  void signal(int sig) const;
  /// Sends `sig` and waits until the child has ended, then reaps it.
  void kill(int sig);
  /// Waits at most `timeout` for the child to end and reaps it, collecting piped output
  /// meanwhile and then until it ends (within the same time); false if the child still runs.
  bool wait(std::chrono::milliseconds timeout);
  /// SIGTERM, then SIGKILL if the child has not ended within `grace`; reaps it and returns its
  /// wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  /// Leaves the child to the caller, who stops and reaps it by the pid returned.
  pid_t release();

  /// Queues `bytes` for a piped stdin; written as the child reads, while output is collected.
  void feed(std::string_view bytes);
  /// Sends end-of-file on a piped stdin once the queued bytes are written.
  void close_stdin();
  /// Closes this end of a piped stdout, as a reader that lost interest would.
  void close_stdout();
  /// Writes queued input and collects output for at most `wait` (0: only what is ready), so the
  /// child never blocks on a full pipe.
  void collect(std::chrono::milliseconds wait);
  /// What the child wrote so far on a piped stdout and stderr.
  [[nodiscard]] const std::string& out() const { return out_text_; }
  [[nodiscard]] const std::string& err() const { return err_text_; }

 private:
  void start(const Options& options, const std::function<void()>& run);
  [[nodiscard]] bool piped() const { return in_ >= 0 || out_ >= 0 || err_ >= 0; }
  void close_pipes();

  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
  int in_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::string pending_;
  bool close_after_input_ = false;
  std::string out_text_;
  std::string err_text_;
};

/// Sends `sig` to the child `pid` and reaps it; returns its wait status. Does nothing (and
/// returns 0) for a pid of 0 or less.
int kill_and_reap(pid_t pid, int sig);

/// Stops the child `pid` with SIGSTOP and returns true once it is stopped: nothing it does
/// lands after that (kill alone returns before the signal takes effect).
bool pause(pid_t pid);

}  // namespace shmcast::testing
