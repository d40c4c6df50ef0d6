// Subscriber::fd(): an eventfd that an event loop polls, and the thread that watches the ring
// for it. A futex cannot be polled, so the watcher sleeps on the ring's futex word in the
// consumer's place and turns a producer's wake-up into a write to the eventfd.
//
//   state_      owner (the subscriber's thread)              watcher thread
//   ---------   -----------------------------------------    ------------------------------------
//   armed       reads the ring; finds nothing: no-op         sleeps on the ring; a record: posting
//   posting     finds nothing: waits for signalled           writes the eventfd, then signalled
//   signalled   finds nothing: reads the eventfd, armed      sleeps on state_ until armed again
//
// The owner posts too, for confirmations. Only the side that moved armed -> posting writes the
// eventfd, and only the owner reads it, in signalled: so the eventfd holds a count exactly
// while the state is posting or signalled, and a drain that finds nothing leaves it unreadable
// until the watcher looks at the ring again.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "ring_watch.hpp"

namespace shmcast::detail {

class SubscriberFd {
 public:
  /// Opens the eventfd and starts the watcher, armed. Throws Error (system) if either fails.
  explicit SubscriberFd(const RingWatch& ring);
  /// Stops and joins the watcher, then closes the eventfd.
  ~SubscriberFd();
  SubscriberFd(const SubscriberFd&) = delete;
  SubscriberFd& operator=(const SubscriberFd&) = delete;

  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// The owner found nothing to read: makes the eventfd unreadable and has the watcher look at
  /// the ring again, so a record that came since still makes it readable. Costs one atomic
  /// load while the watcher is still armed. A record the watcher sees just before the owner
  /// reads it can still post once more: a wake-up that finds nothing, as the API allows.
  void rearm() noexcept;
  /// Frames wait outside the ring (confirmations): makes the eventfd readable.
  void post() noexcept;
  /// Waits until the eventfd is readable, at most `timeout` (negative: no limit).
  void wait(std::chrono::nanoseconds timeout) const noexcept;

 private:
  enum State : std::uint32_t { kArmed, kPosting, kSignalled, kStopping };

  void watch() noexcept;

  RingWatch ring_;
  int fd_ = -1;
  std::atomic<std::uint32_t> state_{kArmed};  // a futex word: the watcher sleeps on it
  std::thread watcher_;
};

}  // namespace shmcast::detail
