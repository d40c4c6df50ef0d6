#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <thread>
#include <utility>

extern char** environ;

namespace shmcast::testing {

namespace {

using Clock = std::chrono::steady_clock;

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The environment a program starts with: this process's, with `env` added or replacing. Built
// before fork, because the child of a process with threads may only make async-signal-safe
// calls until exec.
std::vector<std::string> environment_with(const std::vector<std::string>& env) {
  std::vector<std::string> all;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const std::string& setting : env) replaced = replaced || setting.starts_with(name);
    if (!replaced) all.emplace_back(entry);
  }
  all.insert(all.end(), env.begin(), env.end());
  return all;
}

std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace

Options output_to(std::string log) {
  Options options;
  options.out = Stream::log;
  options.err = Stream::log;
  options.log = std::move(log);
  return options;
}

Process::Process(const std::vector<std::string>& argv, const Options& options) {
  std::vector<std::string> args = argv;
  std::vector<std::string> env = environment_with(options.env);
  std::vector<char*> arg_pointers = pointers_to(args);
  std::vector<char*> env_pointers = pointers_to(env);
  start(options, [&] {
    ::execvpe(arg_pointers[0], arg_pointers.data(), env_pointers.data());
    ::_exit(127);
  });
}

Process::Process(const std::function<int()>& body, const Options& options) {
  start(options, [&] {
    int rc = 101;
    try {
      for (const std::string& setting : options.env) {
        const auto eq = setting.find('=');
        ::setenv(setting.substr(0, eq).c_str(), setting.substr(eq + 1).c_str(), 1);
      }
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
    } catch (...) {
      std::fprintf(stderr, "child %d: an exception that is not a std::exception\n", ::getpid());
    }
    ::_exit(rc);
  });
}

void Process::start(const Options& options, const std::function<void()>& run) {
  if (options.in == Stream::pipe && ::signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    // A child that exits without reading its stdin must not kill this process with SIGPIPE.
    throw std::runtime_error("cannot ignore SIGPIPE");
  }
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  const auto make_pipe = [&](Stream stream, int(&fds)[2]) {
    if (stream == Stream::pipe && ::pipe2(fds, O_CLOEXEC) != 0) {
      for (int* fd : {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]}) close_fd(*fd);
      throw std::runtime_error("pipe2 failed");
    }
  };
  make_pipe(options.in, in);
  make_pipe(options.out, out);
  make_pipe(options.err, err);
  // What stdio holds unwritten would otherwise be written again by the child.
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    for (int* fd : {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]}) close_fd(*fd);
    throw std::runtime_error("fork failed");
  }
  if (pid_ == 0) {
    if (options.own_process_group) ::setpgid(0, 0);
    // The parent may have died before prctl took effect.
    if (::prctl(PR_SET_PDEATHSIG, options.parent_death_signal) != 0 || ::getppid() != parent) {
      ::_exit(127);
    }
    int log = -1;
    if (options.out == Stream::log || options.err == Stream::log) {
      log = ::open(options.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (log < 0) ::_exit(126);
    }
    const auto connect = [&](Stream stream, int pipe_end, int target) {
      if (stream == Stream::pipe) ::dup2(pipe_end, target);
      if (stream == Stream::log) ::dup2(log, target);
      if (stream == Stream::discard) {
        const int null = ::open("/dev/null", target == STDIN_FILENO ? O_RDONLY : O_WRONLY);
        if (null >= 0) ::dup2(null, target);
      }
    };
    connect(options.in, in[0], STDIN_FILENO);
    connect(options.out, out[1], STDOUT_FILENO);
    connect(options.err, err[1], STDERR_FILENO);
    run();
    ::_exit(127);
  }
  close_fd(in[0]);
  close_fd(out[1]);
  close_fd(err[1]);
  in_ = in[1];
  out_ = out[0];
  err_ = err[0];
  for (const int fd : {in_, out_, err_}) {
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
}

Process::~Process() {
  close_pipes();
  if (pid_ > 0 && !reaped_) stop();
}

int Process::exit_code() const {
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

bool Process::running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) status_ = status;
  if (r == pid_ || (r < 0 && errno != EINTR)) reaped_ = true;
  return !reaped_;
}

void Process::signal(int sig) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

void Process::kill(int sig) {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, sig);
  while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
}

bool Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (running()) {
    if (Clock::now() > deadline) return false;
    if (piped()) {
      collect(std::chrono::milliseconds(5));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  while ((out_ >= 0 || err_ >= 0) && Clock::now() < deadline) collect(std::chrono::milliseconds(5));
  return true;
}

int Process::stop(std::chrono::milliseconds grace) {
  signal(SIGTERM);
  // A shmcast client killed outright leaves its slot to be reaped, and a coordinator stopped
  // before that reap keeps the bus in /dev/shm for the next one: SIGKILL only as a last resort.
  if (!wait(grace)) kill(SIGKILL);
  return status_;
}

pid_t Process::release() {
  return std::exchange(pid_, -1);
}

void Process::feed(std::string_view bytes) {
  pending_ += bytes;
}

void Process::close_stdin() {
  close_after_input_ = true;
  if (pending_.empty()) close_fd(in_);
}

void Process::close_stdout() {
  close_fd(out_);
}

void Process::close_pipes() {
  for (int* fd : {&in_, &out_, &err_}) close_fd(*fd);
}

void Process::collect(std::chrono::milliseconds wait) {
  pollfd fds[3];
  nfds_t n = 0;
  if (out_ >= 0) fds[n++] = {out_, POLLIN, 0};
  if (err_ >= 0) fds[n++] = {err_, POLLIN, 0};
  if (in_ >= 0 && !pending_.empty()) fds[n++] = {in_, POLLOUT, 0};
  if (n == 0) {
    std::this_thread::sleep_for(wait);
    return;
  }
  if (::poll(fds, n, static_cast<int>(wait.count())) <= 0) return;
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

int kill_and_reap(pid_t pid, int sig) {
  if (pid <= 0) return 0;
  ::kill(pid, sig);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

bool pause(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  int status = 0;
  return ::waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status);
}

}  // namespace shmcast::testing
