#include "waiter.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <mutex>

namespace shmcast::detail {

namespace {

using Clock = std::chrono::steady_clock;

// The recent waits Wait::adaptive weighs: it spins while any of them paid.
constexpr std::uint32_t kPayingMemory = 0xf;

// CPUs this process may use, counted once.
int usable_cpus() noexcept {
  static const int cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return std::max(1, CPU_COUNT(&set));
  }();
  return cpus;
}

// Threads runnable on the machine now (the fourth field of /proc/loadavg, "running/total"),
// or -1 if unknown.
int runnable_threads() noexcept {
  static const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[128];
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  if (n <= 0) return -1;
  const std::string_view line(text, static_cast<std::size_t>(n));
  std::size_t field = 0;
  for (int spaces = 0; spaces < 3; ++spaces) {
    field = line.find(' ', field);
    if (field == std::string_view::npos) return -1;
    ++field;
  }
  int running = -1;
  const auto [end, ec] = std::from_chars(line.data() + field, line.data() + line.size(), running);
  if (ec != std::errc() || end == line.data() + line.size() || *end != '/') return -1;
  return running;
}

// Set while this thread stays SCHED_BATCH from one nap to the next (stay_batch()).
thread_local bool t_stays_batch = false;

// Runs SCHED_BATCH while it lives, if the thread ran SCHED_OTHER: a woken SCHED_BATCH thread
// does not preempt the thread that woke it (the kernel leaves its turn to the tick), so a
// publisher waking many subscribers finishes its fan-out, and each subscriber, when it runs,
// finds a batch of messages instead of one. A thread of any other policy is left alone. A
// thread that stays SCHED_BATCH between naps is taken over: it returns to SCHED_OTHER when the
// sleep ends.
class BatchWhileAsleep {
 public:
  BatchWhileAsleep() noexcept {
    if (t_stays_batch) {
      t_stays_batch = false;
      batch_ = sched_getscheduler(0) == SCHED_BATCH;  // unless the caller chose another since
      return;
    }
    const sched_param param{};
    batch_ =
        sched_getscheduler(0) == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &param) == 0;
  }
  ~BatchWhileAsleep() {
    if (!batch_) return;
    const sched_param param{};
    sched_setscheduler(0, SCHED_OTHER, &param);
  }
  BatchWhileAsleep(const BatchWhileAsleep&) = delete;
  BatchWhileAsleep& operator=(const BatchWhileAsleep&) = delete;

 private:
  bool batch_ = false;
};

// Makes the thread SCHED_BATCH, if it ran SCHED_OTHER, and leaves it so after the nap: naps
// follow one another while no core is spare, and switching for each cost two system calls a
// nap (a third of the machine's time at a fan-out to a thousand subscribers). leave_batch()
// ends it.
void stay_batch() noexcept {
  if (t_stays_batch) return;
  const sched_param param{};
  t_stays_batch =
      sched_getscheduler(0) == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &param) == 0;
}

// Gives the thread a timer slack of a microsecond while it lives. The kernel may end a timed
// sleep up to the thread's slack late, 50 us by default: longer than a paced wait's lead.
class FineTimerSlack {
 public:
  FineTimerSlack() noexcept {
    constexpr int kFine = 1000;
    const int slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack > kFine && ::prctl(PR_SET_TIMERSLACK, kFine, 0, 0, 0) == 0) restore_ = slack;
  }
  ~FineTimerSlack() {
    if (restore_ > 0) ::prctl(PR_SET_TIMERSLACK, restore_, 0, 0, 0);
  }
  FineTimerSlack(const FineTimerSlack&) = delete;
  FineTimerSlack& operator=(const FineTimerSlack&) = delete;

 private:
  int restore_ = 0;
};

std::int64_t ticks(Clock::time_point t) noexcept {
  return std::chrono::nanoseconds(t.time_since_epoch()).count();
}

// When the record that ended a sleep from `slept` to `woke` came: when the producer that woke
// the ring stamped it, if that was during the sleep; otherwise (the record was there before the
// sleep began, or it came while the sleeper was up for another reason) at the end.
std::int64_t arrival(const RingConsumer& ring, std::int64_t slept, std::int64_t woke) noexcept {
  const std::int64_t stamp = ring.woken_at();
  return stamp >= slept && stamp <= woke ? stamp : woke;
}

std::atomic<int> g_runnable{0};

}  // namespace

void leave_batch() noexcept {
  if (!t_stays_batch) return;
  t_stays_batch = false;
  if (sched_getscheduler(0) != SCHED_BATCH) return;  // the caller chose another since
  const sched_param param{};
  sched_setscheduler(0, SCHED_OTHER, &param);
}

int runnable_seen() noexcept {
  return g_runnable.load(std::memory_order_relaxed);
}

bool cores_to_spare() noexcept {
  if (usable_cpus() < 2) return false;
  static std::atomic<std::int64_t> checked_ns{0};  // the steady clock is far past 0 by now
  static std::atomic<bool> spare{false};
  const std::int64_t now = Clock::now().time_since_epoch().count();
  const std::int64_t last = checked_ns.load(std::memory_order_relaxed);
  constexpr std::int64_t kRecheck = std::chrono::nanoseconds(std::chrono::milliseconds(1)).count();
  if (now - last < kRecheck) return spare.load(std::memory_order_relaxed);
  // One thread looks; the others keep the last answer meanwhile.
  std::int64_t expected = last;
  if (!checked_ns.compare_exchange_strong(expected, now, std::memory_order_relaxed)) {
    return spare.load(std::memory_order_relaxed);
  }
  const int running = runnable_threads();
  g_runnable.store(std::max(running, 0), std::memory_order_relaxed);
  const bool answer = running < 0 || running <= 2 * usable_cpus();
  spare.store(answer, std::memory_order_relaxed);
  return answer;
}

void Waiter::sleep(RingConsumer& ring, std::chrono::nanoseconds limit, FutexAlso deaths) {
  if (ring.ready()) return;  // spares the policy switches below
  const BatchWhileAsleep batch;
  ring.sleep(std::min(limit, kLongestSleep), deaths);
}

bool Waiter::paced_wait(RingConsumer& ring, const Pacer::Plan& plan, std::chrono::nanoseconds limit,
                        FutexAlso deaths) {
  const std::int64_t start = ticks(Clock::now());
  const std::int64_t deadline = start + limit.count();
  std::int64_t now = start;
  if (plan.wake_ns > now) {
    const std::int64_t asked = std::min(plan.wake_ns, deadline);
    {
      const FineTimerSlack fine;
      ring.sleep(std::chrono::nanoseconds(asked - now), deaths);
    }
    now = ticks(Clock::now());
    if (ring.ready()) {
      pacer_.arrived(arrival(ring, start, now));
      return true;
    }
    if (now >= deadline) return true;
    if (now >= asked) pacer_.woke(asked, now);
  }
  const std::int64_t until = std::min(plan.spin_until_ns, deadline);
  for (std::uint32_t n = 1;; ++n) {
    if (ring.ready()) {
      pacer_.arrived(ticks(Clock::now()));
      return true;
    }
    cpu_relax();
    if (n % 32 == 0) {
      now = ticks(Clock::now());
      if (now >= until) return now >= deadline;
    }
  }
}

void Waiter::wait(RingConsumer& ring, Wait policy, std::chrono::nanoseconds limit,
                  FutexAlso deaths) {
  switch (policy) {
    case Wait::spin:
      leave_batch();
      // Polls the head's header only, which costs no shared line of the producers'; the caller
      // looks at the tail between rounds, for a record whose writer stalled.
      for (int n = 0; n < 256 && !ring.ready(); ++n) cpu_relax();
      return;
    case Wait::sleep: sleep(ring, limit, deaths); return;
    case Wait::adaptive: break;
  }
  const auto start = Clock::now();
  const bool spare = cores_to_spare();
  bool missed_pace = false;
  if (spare) {
    leave_batch();
    if (const auto plan = pacer_.plan(ticks(start))) {
      paying_ <<= 1;  // a paced record is a millisecond or so apart: spinning would not pay
      live_ = true;
      if (paced_wait(ring, *plan, limit, deaths)) return;
      // The window passed without a record: the pace is broken. Sleep until it comes; the
      // producer's stamp tells the pace anew, and a late record is no sign that spinning pays.
      limit -= Clock::now() - start;
      if (limit <= std::chrono::nanoseconds(0)) return;
      missed_pace = true;
    }
  }
  if (spare && !missed_pace && (paying_ & kPayingMemory) != 0) {
    const auto spin_until = start + std::min(limit, kSpinWindow);
    for (std::uint32_t n = 1;; ++n) {
      if (ring.ready()) {
        paying_ = (paying_ << 1) | 1;
        live_ = true;
        // Records this close together are the spinning path's, not a pace to keep: no clock
        // read for them on the way to the caller.
        pacer_.arrived(std::nullopt);
        return;
      }
      cpu_relax();
      if (n % 32 == 0 && Clock::now() >= spin_until) break;
    }
    if (limit <= kSpinWindow) return;  // the caller's time is up: not a verdict on spinning
    limit -= kSpinWindow;
  } else if (!spare && live_) {
    stay_batch();
    const auto nap =
        std::min(limit, std::clamp<std::chrono::nanoseconds>(runnable_seen() * kNapPerRunnable,
                                                             kShortestNap, kLongestNap));
    const timespec ts{static_cast<time_t>(nap.count() / 1'000'000'000),
                      static_cast<long>(nap.count() % 1'000'000'000)};
    ::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
    live_ = ring.ready();
    pacer_.arrived(std::nullopt);  // when the records of a nap came is not known
    return;
  }
  const std::int64_t slept = ticks(Clock::now());
  if (t_stays_batch) {
    // Between naps (no core is spare): the thread stays SCHED_BATCH through the sleep, and
    // after it if the stream goes on.
    if (!ring.ready()) ring.sleep(std::min(limit, kLongestSleep), deaths);
    if (!ring.ready()) leave_batch();
  } else {
    sleep(ring, limit, deaths);
  }
  live_ = ring.ready();
  const auto woke = Clock::now();
  if (live_) pacer_.arrived(arrival(ring, slept, ticks(woke)));
  if (missed_pace) return;
  const bool paid = live_ && woke - start <= kPayingWait;
  paying_ = (paying_ << 1) | (paid ? 1 : 0);
}

}  // namespace shmcast::detail
