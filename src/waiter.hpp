// How a subscriber waits for its ring: the policies of shmcast::Wait.
#pragma once

#include <chrono>
#include <cstdint>

#include "futex.hpp"
#include "pacer.hpp"
#include "ring.hpp"
#include "shmcast/wait.hpp"

namespace shmcast::detail {

/// The longest a subscriber sleeps without looking at its ring: the bound on how late a wake-up
/// lost to an overwritten `sleeping` word is made up for. Long, so that idle subscribers cost
/// nothing noticeable however many there are (one wake-up each every five seconds: 1,000 idle
/// subscribers used 0.7% of a core together in one run of shmcast-bench --scenario idle).
inline constexpr std::chrono::nanoseconds kLongestSleep = std::chrono::seconds(5);

/// How long Wait::adaptive spins before it sleeps, and within how long of the ring running
/// empty a record must come for that wait to count as one that spinning pays for. A futex sleep
/// and wake-up costs both sides several microseconds of CPU and the reader tens of microseconds
/// of latency on a VM: a record that comes within about that time is cheaper to spin for.
inline constexpr std::chrono::nanoseconds kSpinWindow = std::chrono::microseconds(30);
inline constexpr std::chrono::nanoseconds kPayingWait = std::chrono::microseconds(100);

/// How long Wait::adaptive naps, without asking to be woken, while messages keep coming but no
/// core is spare for spinning (many subscribers on few cores). Publishers then make no wake-up
/// for it, and it reads a batch per nap instead of being woken once per message: at wide
/// fan-out those wake-ups, and the subscribers' turns on the cores, would crowd out the
/// publisher. A nap lasts about one turn of every runnable thread (kNapPerRunnable each, within
/// kShortestNap and kLongestNap), so a subscriber reads once per round of the scheduler. The
/// price: under such load a message waits up to a nap.
inline constexpr std::chrono::nanoseconds kNapPerRunnable = std::chrono::microseconds(20);
inline constexpr std::chrono::nanoseconds kShortestNap = std::chrono::microseconds(200);
inline constexpr std::chrono::nanoseconds kLongestNap = std::chrono::milliseconds(20);

/// One subscriber's waiting: the adaptive policy's memory of its recent waits.
class Waiter {
 public:
  /// Waits until a record may be ready in `ring`, at most `limit` (and never more than
  /// kLongestSleep at once), as `policy` says. `deaths` is the bus's count of dead clients as a
  /// futex word, which the coordinator wakes after each death.
  void wait(RingConsumer& ring, Wait policy, std::chrono::nanoseconds limit, FutexAlso deaths);

 private:
  void sleep(RingConsumer& ring, std::chrono::nanoseconds limit, FutexAlso deaths);
  // Waits for a record due at a steady pace: sleeps until just before it is due, then spins
  // through its window. true if the wait is over (a record, or `limit` spent), false if the
  // window passed without one.
  bool paced_wait(RingConsumer& ring, const Pacer::Plan& plan, std::chrono::nanoseconds limit,
                  FutexAlso deaths);

  // One bit per recent wait, the newest lowest: 1 if a record came within kPayingWait.
  // Starts as one paying wait, so a new subscriber tries spinning first.
  std::uint32_t paying_ = 1;
  // Did the last wait end with a record? While it does, the stream is live.
  bool live_ = false;
  // The pace of the records that ended the recent waits.
  Pacer pacer_;
};

/// Has the machine a core to spare for spinning: at most twice as many runnable threads (this
/// one included) as CPUs this thread may run on, and more than one CPU? Looked up at most once a
/// millisecond per process (/proc/loadavg), so asking costs nothing on the hot path.
[[nodiscard]] bool cores_to_spare() noexcept;

/// Returns the calling thread to SCHED_OTHER if Wait::adaptive left it SCHED_BATCH between
/// naps (and it is still SCHED_BATCH); nothing otherwise.
void leave_batch() noexcept;

/// Threads runnable on the machine when cores_to_spare() last looked (0 if unknown).
[[nodiscard]] int runnable_seen() noexcept;

}  // namespace shmcast::detail
