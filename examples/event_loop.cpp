// A subscriber inside an event loop: one epoll set waits at once on the subscriber's fd, on a
// timerfd that ticks every 100 ms, and on stdin. Lines typed on stdin are published to "chat"
// and come back through the subscriber; a publisher thread sends numbered messages to "ticks"
// in bursts, as another process would.
//
//   example-event_loop --bus NAME [--count 2000]     (a shmcastd must be serving NAME)
//
// It exits 0 once it has received --count messages on "ticks", in order.
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

namespace {

int option(int argc, char** argv, std::string_view flag, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == flag) return std::stoi(argv[i + 1]);
  }
  return fallback;
}

// Adds `fd` to the epoll set for reading; false if epoll cannot watch it (stdin redirected from
// a regular file or /dev/null).
bool watch(int epoll, int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) == 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const int count = option(argc, argv, "--count", 2000);
  const std::string bus_name = example::bus_name(argc, argv);
  auto bus = shmcast::Bus::connect(bus_name);
  shmcast::Subscriber sub = bus.subscriber();
  sub.subscribe({"ticks", "chat"});

  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  const int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  const itimerspec every_100ms{{0, 100'000'000}, {0, 100'000'000}};
  timerfd_settime(timer, 0, &every_100ms, nullptr);
  // The subscriber's fd is readable while frames may wait; it stays so until a drain finds
  // nothing, so plain level-triggered EPOLLIN fits it.
  const int frames = sub.fd();
  watch(epoll, frames);
  watch(epoll, timer);
  watch(epoll, STDIN_FILENO);
  std::string typed;  // stdin read so far, up to its last full line

  std::jthread publisher([&bus_name, count] {
    auto own = shmcast::Bus::connect(bus_name);
    for (int i = 0; i < count; ++i) {
      own.publish("ticks", std::to_string(i));
      // Bursts of 100, then a pause: the loop sleeps in epoll_wait in between.
      if (i % 100 == 99) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  int received = 0;
  int ticks = 0;
  int wakeups = 0;
  while (received < count) {
    epoll_event events[3];
    const int n = epoll_wait(epoll, events, 3, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == frames) {
        ++wakeups;
        // Drain: read without waiting until nothing is left; the fd is then quiet until the
        // next frame.
        while (auto frame = sub.receive(std::chrono::nanoseconds(0))) {
          if (frame->kind == shmcast::Kind::subscribe) {
            std::cout << "subscribed to " << frame->channel << "\n";
          } else if (frame->channel == "chat") {
            std::cout << "chat: " << frame->payload << "\n";
          } else if (frame->kind == shmcast::Kind::message) {
            if (frame->payload != std::to_string(received)) {
              std::cerr << "event_loop: got " << frame->payload << ", expected " << received
                        << "\n";
              return 1;
            }
            ++received;
          }
        }
      } else if (fd == timer) {
        std::uint64_t expirations = 0;
        if (read(timer, &expirations, sizeof expirations) > 0) ++ticks;
        std::cout << "timer: " << received << " messages so far\n";
      } else if (fd == STDIN_FILENO) {
        char buffer[4096];
        const ssize_t got = read(STDIN_FILENO, buffer, sizeof buffer);
        if (got <= 0) {
          epoll_ctl(epoll, EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
          continue;
        }
        typed.append(buffer, static_cast<std::size_t>(got));
        for (auto end = typed.find('\n'); end != std::string::npos; end = typed.find('\n')) {
          bus.publish("chat", std::string_view(typed).substr(0, end));
          typed.erase(0, end + 1);
        }
      }
    }
  }
  std::cout << "event_loop: received all " << count << " messages in order in " << wakeups
            << " wake-ups, " << ticks << " timer ticks\n";
  close(timer);
  close(epoll);
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "event_loop: " << e.what() << "\n";
  return 1;
}
