// How a subscriber waits for its next frame.
#pragma once

#include <cstdint>

namespace shmcast {

/// How Subscriber::receive() and Subscriber::listen() wait while the subscriber's ring is empty.
enum class Wait : std::uint8_t {
  /// Polls briefly, then sleeps on the ring's futex until a publisher wakes it. Costs no CPU
  /// while idle; a message that finds the subscriber asleep costs its publisher one futex
  /// wake-up (a system call) and the subscriber a few microseconds to be scheduled again. The
  /// default: right for most subscribers, and whenever there are more of them than cores.
  sleep,
  /// Busy-polls the ring and never sleeps. The lowest latency (a few hundred nanoseconds) and no
  /// wake-up for the publisher to pay, at the price of one core kept busy for as long as it
  /// waits. For a latency-critical subscriber on a core of its own.
  spin,
};

}  // namespace shmcast
