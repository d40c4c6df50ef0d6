// How a subscriber waits for its next frame.
#pragma once

#include <cstdint>

namespace shmcast {

/// How Subscriber::receive() and Subscriber::listen() wait while the subscriber's ring is empty.
///
/// Whenever a subscriber sleeps, it sleeps until a publisher wakes it (or its timeout ends); it
/// also looks again every five seconds (a ring's wake-up word is shared memory a faulty process
/// may overwrite; every 500 ms on kernels before Linux 5.16, which lack futex_waitv) and a
/// millisecond after a publisher left a record half-written (its writer may be dead). While it
/// sleeps its thread runs as SCHED_BATCH, if it was SCHED_OTHER, so that being woken does not
/// preempt the publisher in the middle of its fan-out: the woken subscriber runs on an idle core
/// at once, or when the publisher's time slice ends, and then finds a batch of messages instead
/// of one.
enum class Wait : std::uint8_t {
  /// Never spins: sleeps on the ring's futex as soon as the ring is empty. The least CPU (about
  /// 5-10 us of CPU per wake-up on a 2-core VM, and none while idle); each message that finds
  /// the subscriber asleep costs its publisher one futex wake-up (a system call, shared by all
  /// messages published before the subscriber runs again) and the subscriber the time to be
  /// scheduled (tens of microseconds on a VM).
  sleep,
  /// Busy-polls the ring and never sleeps. The lowest latency (a few hundred nanoseconds) and no
  /// wake-up for the publisher to pay, at the price of one core kept busy for as long as it
  /// waits. For a latency-critical subscriber on a core of its own.
  spin,
  /// The default, which picks one of four ways for each wait:
  ///
  /// - Spins (up to 30 us) while spinning pays: while one of the last few waits ended within
  ///   100 us, and only while the machine has a core to spare (at most twice as many runnable
  ///   threads as CPUs, from /proc/loadavg; never with one CPU). Back-to-back messages get
  ///   `spin`'s latency (under a microsecond).
  /// - Keeps time with a steady stream: when the messages that end its waits come at a steady
  ///   pace (the last eight fit a period from 100 us to 1 s to within an eighth of it) and a core
  ///   is spare, it sleeps until just before the next is due, by as much as its timer has been
  ///   late (at most 30 us), then spins through a window around the due time (at most 40 us, and
  ///   1/16 of the period). Such a message finds it awake and costs its publisher no wake-up: a
  ///   message every millisecond was read 0.7 us after its publish at the median on a 2-core VM,
  ///   against 3.4 us for a bare futex hand-off and 44 us for a Unix socket, for less CPU per
  ///   message than a socket. A message that comes early still wakes it; one that misses the
  ///   window ends the paced wait, which sleeps as `sleep` does until the pace is steady again.
  /// - Naps when no core is spare and messages keep coming (many subscribers on few cores):
  ///   sleeps without asking to be woken, 0.2 to 20 ms by the number of runnable threads, and
  ///   reads a batch per nap. No wake-up for the publisher to pay, at the price of up to one nap
  ///   of latency under such load. From one nap to the next its thread stays SCHED_BATCH (if it
  ///   was SCHED_OTHER), also while the caller handles what it read, since the naps' wake-ups
  ///   must not preempt the publisher either. It is SCHED_OTHER again after a wait that finds a
  ///   core to spare, after a wait that ends with no message, and once the Subscriber is
  ///   destroyed on that thread. A policy the caller sets meanwhile is kept.
  /// - Otherwise sleeps at once, as `sleep` does: irregular sparse messages and idle subscribers
  ///   cost what `sleep` costs.
  adaptive,
};

}  // namespace shmcast
