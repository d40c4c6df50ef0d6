// Other processes for the integration tests. A Child is a forked process that runs a function
// and talks to the test through two pipes; a RemoteSubscriber is a Subscriber that lives in such
// a child, so a test drives a client in another process the way Redis's tests drive a deferring
// client, and can SIGKILL it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "shmcast/shmcast.hpp"
#include "support/process.hpp"

namespace shmcast::test {

/// Builds a binary frame for a Link: unsigned integers and length-prefixed byte strings.
class FrameWriter {
 public:
  FrameWriter& u64(std::uint64_t v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  FrameWriter& str(std::string_view s) {
    u64(s.size());
    out_.append(s);
    return *this;
  }
  [[nodiscard]] const std::string& frame() const { return out_; }

 private:
  std::string out_;
};

/// Reads a frame built by FrameWriter; throws on a short frame, which is a bug in a test.
class FrameReader {
 public:
  explicit FrameReader(std::string_view in) : in_(in) {}
  std::uint64_t u64() {
    std::uint64_t v = 0;
    take(&v, sizeof v);
    return v;
  }
  std::string str() {
    std::string s(u64(), '\0');
    take(s.data(), s.size());
    return s;
  }

 private:
  void take(void* to, std::size_t n) {
    if (n > in_.size()) throw std::runtime_error("short frame on a test link");
    std::memcpy(to, in_.data(), n);
    in_.remove_prefix(n);
  }
  std::string_view in_;
};

/// A plain struct (a child's tally of counters) as one frame, and back. Parent and child are
/// the same program, so its bytes mean the same on both ends.
template <class T>
[[nodiscard]] std::string frame_of(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(&value), sizeof value);
}
template <class T>
[[nodiscard]] T from_frame(std::string_view frame) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (frame.size() != sizeof(T)) throw std::runtime_error("frame of the wrong size on a test link");
  T value;
  std::memcpy(&value, frame.data(), sizeof value);
  return value;
}

/// One end of a two-way link between the test and a child: length-prefixed frames, so any
/// bytes pass. Writing to a child that died fails instead of raising SIGPIPE.
class Link {
 public:
  Link(int in, int out, bool tracked) : in_(in), out_(out), tracked_(tracked) {
    if (tracked_) tracked_fds().insert({in_, out_});
  }
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;
  ~Link() {
    close_fd(in_);
    close_fd(out_);
  }

  /// Sends one frame; false if the other side is gone.
  bool send(std::string_view frame) {
    const std::uint64_t n = frame.size();
    return write_all(&n, sizeof n) && write_all(frame.data(), frame.size());
  }

  /// The next frame, waiting at most `timeout` (negative: no limit); nullopt on timeout or
  /// when the other side closed its end.
  std::optional<std::string> receive(std::chrono::milliseconds timeout) {
    const auto deadline = timeout.count() < 0 ? std::chrono::steady_clock::time_point::max()
                                              : std::chrono::steady_clock::now() + timeout;
    std::uint64_t n = 0;
    if (!read_all(&n, sizeof n, deadline)) return std::nullopt;
    std::string frame(n, '\0');
    if (!read_all(frame.data(), n, deadline)) return std::nullopt;
    return frame;
  }

  /// The test's ends of every child's link: a new child closes them, or a sibling would keep
  /// another child's pipe open and that child would never see the end-of-file meant for it.
  static std::set<int>& tracked_fds() {
    static std::set<int> fds;
    return fds;
  }

 private:
  void close_fd(int& fd) {
    if (fd < 0) return;
    if (tracked_) tracked_fds().erase(fd);
    ::close(fd);
    fd = -1;
  }

  bool write_all(const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(out_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  bool read_all(void* data, std::size_t n, std::chrono::steady_clock::time_point deadline) {
    auto* p = static_cast<char*>(data);
    while (n > 0) {
      int wait_ms = -1;
      if (deadline != std::chrono::steady_clock::time_point::max()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() < 0) return false;
        wait_ms = static_cast<int>(left.count()) + 1;
      }
      pollfd pfd{in_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, wait_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      const ssize_t r = ::read(in_, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      p += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }

  int in_ = -1;
  int out_ = -1;
  bool tracked_ = false;
};

/// A forked child process that runs `body(link)` and exits with its result (101 if it threw).
/// The child never returns into GoogleTest: it leaves with _exit, so no fixture destructor of
/// the test (such as the Daemon's) runs twice. It dies with the test process.
class Child {
 public:
  explicit Child(const std::function<int(Link&)>& body) {
    // A write to a child that died must fail with EPIPE, not kill the test.
    ::signal(SIGPIPE, SIG_IGN);
    int down[2];
    int up[2];
    if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    testing::Options options;
    options.parent_death_signal = SIGKILL;
    process_.emplace(
        [&] {
          for (const int fd : Link::tracked_fds()) ::close(fd);
          ::close(down[1]);
          ::close(up[0]);
          Link link(down[0], up[1], false);
          return body(link);
        },
        options);
    ::close(down[0]);
    ::close(up[1]);
    link_ = std::make_unique<Link>(up[0], down[1], true);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  /// Closes the link, gives the child 10 s to leave on its own, then kills it.
  ~Child() {
    link_.reset();
    if (!wait(std::chrono::seconds(10))) kill(SIGKILL);
  }

  [[nodiscard]] pid_t pid() const { return process_->pid(); }
  [[nodiscard]] Link& link() { return *link_; }
  /// The exit status once reaped (see waitpid).
  [[nodiscard]] int status() const { return process_->status(); }
  /// True once the child exited with status 0.
  [[nodiscard]] bool exited_cleanly() const {
    return process_->reaped() && WIFEXITED(status()) && WEXITSTATUS(status()) == 0;
  }

  /// Waits at most `timeout` for the child to end and reaps it; false if it is still running.
  bool wait(std::chrono::milliseconds timeout) { return process_->wait(timeout); }

  /// Sends `sig` and, unless `reap` is false, waits until the child is dead and reaped.
  void kill(int sig, bool reap = true) {
    if (reap) {
      process_->kill(sig);
    } else {
      process_->signal(sig);
    }
  }

 private:
  std::optional<testing::Process> process_;
  std::unique_ptr<Link> link_;
};

/// A Subscriber in a child process, driven through its link. It has the Subscriber's calls and
/// rethrows the child's Error with its code. Destroying it closes the link: the child destroys
/// its Subscriber and Bus and exits, as a client that closes its connection.
class RemoteSubscriber {
 public:
  explicit RemoteSubscriber(const Bus& bus) : RemoteSubscriber(bus.name()) {}
  explicit RemoteSubscriber(const std::string& bus_name)
      : child_([bus_name](Link& link) { return serve(bus_name, link); }) {
    (void)call(FrameWriter().u64(kHello));
  }

  std::size_t subscribe(const std::vector<std::string>& names) { return names_call(kSub, names); }
  std::size_t psubscribe(const std::vector<std::string>& names) { return names_call(kPsub, names); }
  std::size_t unsubscribe(const std::vector<std::string>& names = {}) {
    return names_call(kUnsub, names);
  }
  std::size_t punsubscribe(const std::vector<std::string>& names = {}) {
    return names_call(kPunsub, names);
  }

  /// The next frame of the child's Subscriber::receive(timeout).
  std::optional<Message> receive(std::chrono::milliseconds timeout) {
    const auto reply = call(FrameWriter().u64(kReceive).u64(timeout.count()), timeout);
    FrameReader in(reply);
    if (in.u64() == 0) return std::nullopt;
    Message m;
    m.kind = static_cast<Kind>(in.u64());
    m.pattern = in.str();
    m.channel = in.str();
    m.payload = in.str();
    m.count = static_cast<std::int64_t>(in.u64());
    m.has_name = in.u64() != 0;
    return m;
  }

  std::size_t subscription_count() { return FrameReader(call(FrameWriter().u64(kCount))).u64(); }

  [[nodiscard]] pid_t pid() const { return child_.pid(); }
  [[nodiscard]] Child& process() { return child_; }

 private:
  enum : std::uint64_t { kHello, kSub, kPsub, kUnsub, kPunsub, kReceive, kCount };
  enum : std::uint64_t { kOk, kFailed };

  std::size_t names_call(std::uint64_t op, const std::vector<std::string>& names) {
    FrameWriter request;
    request.u64(op).u64(names.size());
    for (const auto& n : names) request.str(n);
    return FrameReader(call(request)).u64();
  }

  // Sends a request and returns the reply's body; rethrows the child's Error.
  std::string call(const FrameWriter& request,
                   std::chrono::milliseconds extra = std::chrono::milliseconds(0)) {
    if (!child_.link().send(request.frame())) {
      throw std::runtime_error(fmt::format("subscriber process {} is gone", child_.pid()));
    }
    auto reply = child_.link().receive(std::chrono::seconds(30) + extra);
    if (!reply) {
      throw std::runtime_error(fmt::format("subscriber process {} did not answer", child_.pid()));
    }
    FrameReader in(*reply);
    if (in.u64() == kFailed) {
      const auto code = static_cast<Errc>(in.u64());
      throw Error(code, in.str());
    }
    return reply->substr(sizeof(std::uint64_t));
  }

  // The child's side: one Bus, one Subscriber, requests served until the link closes.
  static int serve(const std::string& bus_name, Link& link) {
    std::optional<Bus> bus;
    std::optional<Subscriber> sub;
    while (auto request = link.receive(std::chrono::milliseconds(-1))) {
      FrameReader in(*request);
      FrameWriter out;
      try {
        const std::uint64_t op = in.u64();
        if (op == kHello) {
          bus.emplace(Bus::connect(bus_name));
          sub.emplace(bus->subscriber());
          out.u64(kOk);
        } else if (op == kReceive) {
          const auto m = sub->receive(std::chrono::milliseconds(in.u64()));
          out.u64(kOk).u64(m ? 1 : 0);
          if (m) {
            out.u64(static_cast<std::uint64_t>(m->kind)).str(m->pattern).str(m->channel);
            out.str(m->payload).u64(static_cast<std::uint64_t>(m->count)).u64(m->has_name);
          }
        } else if (op == kCount) {
          out.u64(kOk).u64(sub->subscription_count());
        } else {
          std::vector<std::string> names(in.u64());
          for (auto& n : names) n = in.str();
          std::size_t count = 0;
          if (op == kSub) count = sub->subscribe(names);
          if (op == kPsub) count = sub->psubscribe(names);
          if (op == kUnsub) count = sub->unsubscribe(names);
          if (op == kPunsub) count = sub->punsubscribe(names);
          out.u64(kOk).u64(count);
        }
      } catch (const Error& e) {
        out = FrameWriter();
        out.u64(kFailed).u64(static_cast<std::uint64_t>(e.code())).str(e.what());
      }
      if (!link.send(out.frame())) break;
    }
    return 0;
  }

  Child child_;
};

}  // namespace shmcast::test
