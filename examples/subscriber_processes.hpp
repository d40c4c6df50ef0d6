// What the examples with several subscriber processes share: forking them, publishing only once
// every one listens, and collecting their exit statuses.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

namespace example {

/// `count` processes forked from this one, each running `body(index, ready_fd)` with index 1 to
/// count. The body connects on its own (a connection is not shared across fork()), subscribes,
/// writes one byte to `ready_fd` once it listens, and returns the process's exit status. The
/// constructor returns once every process listens, or one failed first.
class SubscriberProcesses {
 public:
  SubscriberProcesses(int count, const std::string& name,
                      const std::function<int(int index, int ready_fd)>& body) {
    int ready[2];
    if (pipe(ready) != 0) return;
    for (int i = 1; i <= count; ++i) {
      const pid_t pid = fork();
      if (pid < 0) break;
      if (pid == 0) {
        close(ready[0]);
        int status = 1;
        try {
          status = body(i, ready[1]);
        } catch (const shmcast::Error& e) {
          std::cerr << name << " " << i << ": " << e.what() << std::endl;
        }
        _exit(status);
      }
      pids_.push_back(pid);
    }
    close(ready[1]);
    // A message reaches only the subscribers that exist already: publish once all listen.
    int listening = 0;
    for (char c; listening < count && read(ready[0], &c, 1) == 1;) ++listening;
    close(ready[0]);
    listening_ = listening == count;
  }

  /// True if every process listens (false if one failed before it did).
  [[nodiscard]] bool listening() const { return listening_; }

  /// Waits for every process to exit; true if each exited with status 0.
  [[nodiscard]] bool succeeded() {
    bool ok = true;
    for (const pid_t pid : pids_) {
      int status = 0;
      waitpid(pid, &status, 0);
      ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    pids_.clear();
    return ok;
  }

 private:
  std::vector<pid_t> pids_;
  bool listening_ = false;
};

}  // namespace example
