// uds-bench: shmcast-bench's scenarios over plain Unix domain sockets, to show what the sockets
// alone cost. It starts a minimal fan-out server of its own (a child process, one thread, epoll,
// like Redis's event loop): publishers write framed messages to it, and it writes each one to
// every socket subscribed to the message's channel. The server never drops: when a subscriber's
// socket is full, it blocks, and the publishers wait behind it.
//
// Every frame is a header, then the channel name, then the payload:
//
//   +----------------+-----------------+---------+---------+
//   | channel_bytes  | payload_bytes   | channel | payload |
//   | u32            | u32             |         |         |
//   +----------------+-----------------+---------+---------+
//
// The first frame on a connection says what it is: a non-empty channel and no payload subscribes
// it to that channel (the server answers with an empty frame once the subscription holds), an
// empty channel makes it a publisher. Every later frame from a publisher is a message.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "pubsub_harness.hpp"

namespace {

using namespace std::chrono_literals;
using pubsub_bench::Stopped;
using pubsub_bench::Wait;
using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = 50ms;
constexpr auto kConnectTimeout = 10s;
constexpr std::size_t kReadChunk = 64 * 1024;

struct FrameHeader {
  std::uint32_t channel_bytes;
  std::uint32_t payload_bytes;
};
static_assert(sizeof(FrameHeader) == 8);

std::runtime_error os_error(std::string_view what) {
  return std::runtime_error(fmt::format("{}: {}", what, std::strerror(errno)));
}

void append_frame(std::string& out, std::string_view channel, std::string_view payload) {
  const FrameHeader h{static_cast<std::uint32_t>(channel.size()),
                      static_cast<std::uint32_t>(payload.size())};
  out.append(reinterpret_cast<const char*>(&h), sizeof h);
  out.append(channel);
  out.append(payload);
}

// The frame at the start of `bytes`, if it is complete: its channel, payload and total size.
struct Frame {
  std::string_view channel;
  std::string_view payload;
  std::size_t size;
};
std::optional<Frame> parse_frame(std::string_view bytes) {
  if (bytes.size() < sizeof(FrameHeader)) return std::nullopt;
  FrameHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  const std::size_t size = sizeof h + std::size_t{h.channel_bytes} + h.payload_bytes;
  if (bytes.size() < size) return std::nullopt;
  return Frame{bytes.substr(sizeof h, h.channel_bytes),
               bytes.substr(sizeof h + h.channel_bytes, h.payload_bytes), size};
}

// Writes all of `bytes` to a blocking socket; false if the peer is gone.
bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw std::runtime_error(fmt::format("socket path too long: {}", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// ---- the fan-out server ---------------------------------------------------------------------

class FanoutServer {
 public:
  explicit FanoutServer(int listen_fd) : listen_fd_(listen_fd) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) throw os_error("epoll_create1");
    watch(listen_fd_);
  }

  [[noreturn]] void run() {
    std::vector<epoll_event> events(256);
    std::string chunk(kReadChunk, '\0');
    for (;;) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw os_error("epoll_wait");
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<std::size_t>(i)].data.fd;
        if (fd == listen_fd_) {
          accept_all();
        } else {
          serve(fd, chunk);
        }
      }
      flush();
    }
  }

 private:
  struct Connection {
    std::string in;
    std::string out;
    bool greeted = false;
    std::string channel;  // a subscriber's; empty for a publisher
  };

  void watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) throw os_error("epoll_ctl");
  }

  // The listening socket is non-blocking: takes every connection waiting.
  void accept_all() {
    for (;;) {
      // Blocking sockets: the server reads only what epoll reported, and a full subscriber
      // holds it back rather than losing messages.
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      connections_[fd];
      watch(fd);
    }
  }

  void serve(int fd, std::string& chunk) {
    Connection& c = connections_.at(fd);
    const ssize_t n = read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) return;
    if (n <= 0) {
      drop(fd);
      return;
    }
    c.in.append(chunk.data(), static_cast<std::size_t>(n));
    std::string_view rest = c.in;
    while (const std::optional<Frame> f = parse_frame(rest)) {
      if (!c.greeted) {
        c.greeted = true;
        c.channel = f->channel;
        if (!c.channel.empty()) {
          channels_[c.channel].insert(fd);
          append_frame(c.out, {}, {});
          dirty_.push_back(fd);
        }
      } else {
        route(rest.substr(0, f->size), f->channel);
      }
      rest.remove_prefix(f->size);
    }
    c.in.erase(0, c.in.size() - rest.size());
  }

  void route(std::string_view frame, std::string_view channel) {
    const auto it = channels_.find(std::string(channel));
    if (it == channels_.end()) return;
    for (const int fd : it->second) {
      Connection& s = connections_.at(fd);
      if (s.out.empty()) dirty_.push_back(fd);
      s.out.append(frame);
    }
  }

  // One write per subscriber for everything routed to it since the last flush.
  void flush() {
    std::vector<int> gone;
    for (const int fd : dirty_) {
      const auto it = connections_.find(fd);
      if (it == connections_.end() || it->second.out.empty()) continue;
      if (!write_all(fd, it->second.out)) gone.push_back(fd);
      it->second.out.clear();
    }
    dirty_.clear();
    for (const int fd : gone) {
      if (connections_.count(fd) != 0) drop(fd);
    }
  }

  void drop(int fd) {
    const Connection& c = connections_.at(fd);
    if (!c.channel.empty()) {
      const auto it = channels_.find(c.channel);
      it->second.erase(fd);
      if (it->second.empty()) channels_.erase(it);
    }
    connections_.erase(fd);
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
  }

  int listen_fd_;
  int epoll_ = -1;
  std::unordered_map<int, Connection> connections_;
  std::unordered_map<std::string, std::unordered_set<int>> channels_;
  std::vector<int> dirty_;
};

// ---- the clients ----------------------------------------------------------------------------

// A connected socket that has sent its first frame, non-blocking from then on.
int connect_and_greet(const std::string& path, std::string_view channel) {
  const sockaddr_un addr = address_of(path);
  const auto deadline = Clock::now() + kConnectTimeout;
  for (;;) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw os_error("socket");
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      std::string hello;
      append_frame(hello, channel, {});
      if (!write_all(fd, hello)) {
        close(fd);
        throw os_error("greeting the fan-out server");
      }
      return fd;
    }
    // Many subscribers connecting at once can fill the accept backlog; that passes.
    const int err = errno;
    close(fd);
    if (err != EAGAIN || Clock::now() > deadline) {
      errno = err;
      throw os_error(fmt::format("connect to {}", path));
    }
    std::this_thread::sleep_for(10ms);
  }
}

void set_nonblocking(int fd) {
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) throw os_error("fcntl");
}

class UdsSubscription final : public pubsub_bench::Subscription {
 public:
  UdsSubscription(const std::string& path, const std::string& channel)
      : fd_(connect_and_greet(path, channel)), buf_(kReadChunk) {
    set_nonblocking(fd_);
    // The server's empty frame: the subscription holds.
    const auto deadline = Clock::now() + kConnectTimeout;
    std::optional<std::string_view> ack;
    while (!(ack = next_frame(Wait::block, kPollInterval))) {
      if (Clock::now() > deadline) throw std::runtime_error("the fan-out server did not answer");
    }
  }
  ~UdsSubscription() override { close(fd_); }
  UdsSubscription(const UdsSubscription&) = delete;
  UdsSubscription& operator=(const UdsSubscription&) = delete;

  std::optional<std::string_view> receive(Wait wait, std::chrono::milliseconds timeout) override {
    return next_frame(wait, timeout);
  }

 private:
  // The payload of the next frame, or nullopt if none arrived within `timeout`.
  std::optional<std::string_view> next_frame(Wait wait, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const std::string_view have(buf_.data() + begin_, end_ - begin_);
      if (const std::optional<Frame> f = parse_frame(have)) {
        begin_ += f->size;
        return f->payload;
      }
      // Keep the partial frame and make room after it.
      std::memmove(buf_.data(), buf_.data() + begin_, have.size());
      end_ = have.size();
      begin_ = 0;
      if (buf_.size() - end_ < kReadChunk) buf_.resize(end_ + kReadChunk);
      const ssize_t n = read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
        continue;
      }
      if (n == 0) throw std::runtime_error("the fan-out server closed the connection");
      if (errno != EAGAIN && errno != EINTR) throw os_error("read");
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      if (wait != Wait::spin) {  // block, and the default: sleep in poll
        pollfd p{fd_, POLLIN, 0};
        (void)poll(&p, 1, static_cast<int>(left.count()));
      } else {
        // Spinning, but the server needs a core too: give it this one if it waits for it.
        sched_yield();
      }
    }
  }

  int fd_;
  std::vector<char> buf_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

class UdsPublisher final : public pubsub_bench::Publisher {
 public:
  explicit UdsPublisher(const std::string& path) : fd_(connect_and_greet(path, {})) {
    set_nonblocking(fd_);
  }
  ~UdsPublisher() override { close(fd_); }
  UdsPublisher(const UdsPublisher&) = delete;
  UdsPublisher& operator=(const UdsPublisher&) = delete;

  void queue(std::string_view channel, std::string_view payload) override {
    append_frame(out_, channel, payload);
  }

  std::optional<std::uint64_t> flush(const Stopped& stopped) override {
    std::string_view rest = out_;
    while (!rest.empty()) {
      const ssize_t n = write(fd_, rest.data(), rest.size());
      if (n > 0) {
        rest.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) throw os_error("write");
      if (stopped()) return std::nullopt;
      pollfd p{fd_, POLLOUT, 0};
      (void)poll(&p, 1, static_cast<int>(kPollInterval.count()));
    }
    out_.clear();
    // A socket does not say who received the message.
    return 0;
  }

 private:
  int fd_;
  std::string out_;
};

class UdsTransport final : public pubsub_bench::Transport {
 public:
  UdsTransport(std::string path, pid_t server) : path_(std::move(path)), server_(server) {}

  std::unique_ptr<pubsub_bench::Subscription> subscribe(
      const std::vector<std::string>& channels) override {
    return std::make_unique<UdsSubscription>(path_, pubsub_bench::one_channel(channels));
  }
  std::unique_ptr<pubsub_bench::Publisher> publisher() override {
    return std::make_unique<UdsPublisher>(path_);
  }
  bool counts_receivers() const override { return false; }
  bool has_server() const override { return true; }
  std::string name() const override { return "uds"; }
  std::vector<pid_t> servers() const override { return {server_}; }

 private:
  std::string path_;
  pid_t server_;
};

// The server in a child process, listening at `path` before this returns.
pid_t start_server(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw os_error("socket");
  const sockaddr_un addr = address_of(path);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, SOMAXCONN) != 0) {
    const auto e = os_error(fmt::format("listen on {}", path));
    close(fd);
    throw e;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw os_error("fork");
  if (pid == 0) {
    pubsub_bench::die_with_parent(parent);
    try {
      FanoutServer(fd).run();
    } catch (const std::exception& e) {
      fmt::print(stderr, "uds-bench server: {}\n", e.what());
    }
    _exit(1);
  }
  close(fd);
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "uds-bench: shmcast-bench's scenarios over Unix domain sockets, through a minimal fan-out "
      "server it starts itself, publishers and subscribers in separate processes."};
  pubsub_bench::Options opt;
  pubsub_bench::add_options(app, opt, pubsub_bench::common_scenarios());
  CLI11_PARSE(app, argc, argv);

  std::string dir = (std::filesystem::temp_directory_path() / "uds-bench.XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    fmt::print(stderr, "uds-bench: mkdtemp: {}\n", std::strerror(errno));
    return 1;
  }
  const std::string path = dir + "/fanout.sock";
  // The server writes to subscribers that leave when the run ends: that must fail the write
  // (and drop the subscriber), not kill the server.
  signal(SIGPIPE, SIG_IGN);
  int status = 1;
  pid_t server = -1;
  try {
    server = start_server(path);
    UdsTransport transport(path, server);
    status = pubsub_bench::run_and_report("uds-bench", opt, transport);
  } catch (const std::exception& e) {
    fmt::print(stderr, "uds-bench: {}\n", e.what());
  }
  if (server > 0) {
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return status;
}
