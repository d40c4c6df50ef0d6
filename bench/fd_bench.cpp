// What Subscriber::fd() costs next to a blocking receive(): one-way latency of sparse messages
// (each finds the subscriber asleep), the subscriber's CPU per message, and the CPU an idle
// wait uses. A publisher process sends stamped messages `--interval-us` apart; the subscriber
// waits either in receive(-1) (Wait::sleep) or in epoll_wait on fd() and drains with
// receive(0).
//
//   shmcast-fd-bench [--messages 2000] [--interval-us 1000] [--idle-seconds 2]
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "private_coordinator.hpp"
#include "shmcast/shmcast.hpp"

namespace {

using bench_support::now_ns;

// CPU time (user + system) of every thread of this process so far, in ns.
std::uint64_t cpu_ns() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (static_cast<std::uint64_t>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1'000'000 +
          static_cast<std::uint64_t>(u.ru_utime.tv_usec + u.ru_stime.tv_usec)) *
         1'000;
}

struct Options {
  std::uint64_t messages = 2000;
  std::uint64_t interval_us = 1000;
  std::uint64_t idle_seconds = 2;
};

// Waits for frames the way one mode does: in receive(-1), or in epoll_wait on fd().
class Waiter {
 public:
  Waiter(shmcast::Subscriber& sub, bool use_fd) : sub_(sub), use_fd_(use_fd) {
    if (!use_fd_) return;
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, sub.fd(), &ev);
  }
  ~Waiter() {
    if (epoll_ >= 0) close(epoll_);
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Hands every frame that comes within `timeout` (negative: until one comes) to `on_frame`,
  // as one wake-up would.
  template <class F>
  void wake_up(std::chrono::milliseconds timeout, F&& on_frame) {
    if (!use_fd_) {
      if (auto m = sub_.receive(timeout)) on_frame(*m);
      return;
    }
    epoll_event ev{};
    if (epoll_wait(epoll_, &ev, 1, static_cast<int>(timeout.count())) != 1) return;
    while (auto m = sub_.receive(std::chrono::nanoseconds(0))) on_frame(*m);
  }

 private:
  shmcast::Subscriber& sub_;
  bool use_fd_;
  int epoll_ = -1;
};

void run(const std::string& bus_name, const Options& o, bool use_fd) {
  auto bus = shmcast::Bus::connect(bus_name);
  shmcast::Subscriber sub = bus.subscriber();
  sub.subscribe({"sparse"});
  Waiter waiter(sub, use_fd);
  bool confirmed = false;
  while (!confirmed)
    waiter.wake_up(std::chrono::milliseconds(-1), [&](auto&) { confirmed = true; });

  const pid_t publisher = bench_support::fork_child("shmcast-fd-bench", [&] {
    auto own = shmcast::Bus::connect(bus_name);
    std::string payload(16, '\0');
    auto next = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < o.messages; ++i) {
      next += std::chrono::microseconds(o.interval_us);
      std::this_thread::sleep_until(next);
      bench_support::set_stamp(payload, now_ns());
      own.publish("sparse", payload);
    }
  });
  std::vector<std::uint64_t> latency;
  latency.reserve(o.messages);
  const std::uint64_t cpu_before = cpu_ns();
  while (latency.size() < o.messages) {
    waiter.wake_up(std::chrono::milliseconds(5000), [&](const shmcast::Message& m) {
      if (m.kind == shmcast::Kind::message) {
        latency.push_back(now_ns() - bench_support::stamp_of(m.payload));
      }
    });
  }
  const std::uint64_t busy = cpu_ns() - cpu_before;
  waitpid(publisher, nullptr, 0);

  // Idle: nothing is published; what does one long wait cost?
  const std::uint64_t idle_before = cpu_ns();
  waiter.wake_up(std::chrono::milliseconds(o.idle_seconds * 1000), [](auto&) {});
  const double idle_us_per_s =
      static_cast<double>(cpu_ns() - idle_before) / 1e3 / static_cast<double>(o.idle_seconds);

  std::sort(latency.begin(), latency.end());
  const auto us = [&](double q) {
    return static_cast<double>(bench_support::percentile(latency, q)) / 1e3;
  };
  fmt::print("{:<22} {:>8.1f} {:>8.1f} {:>8.1f} {:>14.1f} {:>14.1f}\n",
             use_fd ? "epoll on fd()" : "receive(-1), sleep", us(0.5), us(0.9), us(0.99),
             static_cast<double>(busy) / 1e3 / static_cast<double>(o.messages), idle_us_per_s);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Subscriber::fd() against a blocking receive(): latency and CPU"};
  Options o;
  app.add_option("--messages", o.messages, "messages per mode")->check(CLI::PositiveNumber);
  app.add_option("--interval-us", o.interval_us, "microseconds between two messages");
  app.add_option("--idle-seconds", o.idle_seconds, "how long each mode waits with no traffic")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const std::string bus = fmt::format("fdbench-{}", getpid());
  const pid_t coordinator = bench_support::start_private_coordinator(bus, {});
  int status = 0;
  try {
    fmt::print("{} messages {} us apart, one publisher process; latency in us\n", o.messages,
               o.interval_us);
    fmt::print("{:<22} {:>8} {:>8} {:>8} {:>14} {:>14}\n", "subscriber waits in", "p50", "p90",
               "p99", "cpu us/msg", "idle cpu us/s");
    run(bus, o, false);
    run(bus, o, true);
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmcast-fd-bench: {}\n", e.what());
    status = 1;
  }
  bench_support::stop_private_coordinator(coordinator);
  return status;
}
