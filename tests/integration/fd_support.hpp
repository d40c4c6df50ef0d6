// Pieces of the Subscriber::fd() tests: readiness as an event loop sees it, and an epoll loop
// that drains a subscriber and checks each publisher's messages arrive in order.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include <fmt/format.h>

#include "shmcast/shmcast.hpp"

namespace shmcast::test {

/// Does poll() report `fd` readable within `timeout`?
inline bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}

/// The payload of message `seq` of publisher `publisher`.
inline std::string numbered(int publisher, std::uint64_t seq) {
  return fmt::format("{}:{}", publisher, seq);
}

/// Counts frames drained from a subscriber and checks that each publisher's numbered messages
/// come in order, none missing.
struct InOrder {
  std::map<int, std::uint64_t> next;  // per publisher: the seq expected next
  std::uint64_t messages = 0;
  std::uint64_t confirmations = 0;
  std::uint64_t wrong = 0;  // out of order, missing before, unparsable, or a gap

  void operator()(const Message& m) {
    if (m.kind != Kind::message) {
      if (m.kind == Kind::subscribe || m.kind == Kind::unsubscribe) {
        ++confirmations;
      } else {
        ++wrong;
      }
      return;
    }
    int publisher = 0;
    std::uint64_t seq = 0;
    if (std::sscanf(m.payload.c_str(), "%d:%" SCNu64, &publisher, &seq) != 2 ||
        seq != next[publisher]) {
      ++wrong;
      return;
    }
    next[publisher] = seq + 1;
    ++messages;
  }
};

/// An epoll set watching one subscriber's fd.
class EpollLoop {
 public:
  explicit EpollLoop(Subscriber& sub) : sub_(sub), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = sub.fd();
    EXPECT_EQ(::epoll_ctl(epoll_, EPOLL_CTL_ADD, sub.fd(), &ev), 0);
  }
  ~EpollLoop() { ::close(epoll_); }
  EpollLoop(const EpollLoop&) = delete;
  EpollLoop& operator=(const EpollLoop&) = delete;

  /// Waits up to `timeout` for the fd; true if epoll reported it readable.
  bool wait(std::chrono::milliseconds timeout) {
    epoll_event ev{};
    return ::epoll_wait(epoll_, &ev, 1, static_cast<int>(timeout.count())) == 1;
  }

  /// Runs the loop until `tally` has `messages` messages, `frames` frames in all, or a
  /// wake-up does not come within `patience`. Each wake-up drains the subscriber as the fd's
  /// contract asks. Returns the number of wake-ups that found nothing at all.
  std::uint64_t run(InOrder& tally, std::uint64_t messages, std::chrono::milliseconds patience) {
    std::uint64_t empty = 0;
    while (tally.messages < messages) {
      if (!wait(patience)) {
        ADD_FAILURE() << "no wake-up within " << patience.count() << " ms after " << tally.messages
                      << " of " << messages << " messages";
        return empty;
      }
      std::uint64_t drained = 0;
      while (auto m = sub_.receive(std::chrono::nanoseconds(0))) {
        tally(*m);
        ++drained;
      }
      if (drained == 0) ++empty;
    }
    return empty;
  }

 private:
  Subscriber& sub_;
  int epoll_;
};

}  // namespace shmcast::test
