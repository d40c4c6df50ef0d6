#include "waiter.hpp"

#include <fcntl.h>
#include <sched.h>
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

// Runs SCHED_BATCH while it lives, if the thread ran SCHED_OTHER: a woken SCHED_BATCH thread
// does not preempt the thread that woke it (the kernel leaves its turn to the tick), so a
// publisher waking many subscribers finishes its fan-out, and each subscriber, when it runs,
// finds a batch of messages instead of one. A thread of any other policy is left alone.
class BatchWhileAsleep {
 public:
  BatchWhileAsleep() noexcept {
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

}  // namespace

namespace {
std::atomic<int> g_runnable{0};
}  // namespace

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

void Waiter::wait(RingConsumer& ring, Wait policy, std::chrono::nanoseconds limit,
                  FutexAlso deaths) {
  switch (policy) {
    case Wait::spin:
      // Polls the head's header only, which costs no shared line of the producers'; the caller
      // looks at the tail between rounds, for a record whose writer stalled.
      for (int n = 0; n < 256 && !ring.ready(); ++n) cpu_relax();
      return;
    case Wait::sleep: sleep(ring, limit, deaths); return;
    case Wait::adaptive: break;
  }
  const auto start = Clock::now();
  const bool spare = cores_to_spare();
  if (spare && (paying_ & kPayingMemory) != 0) {
    const auto spin_until = start + std::min(limit, kSpinWindow);
    for (std::uint32_t n = 1;; ++n) {
      if (ring.ready()) {
        paying_ = (paying_ << 1) | 1;
        live_ = true;
        return;
      }
      cpu_relax();
      if (n % 32 == 0 && Clock::now() >= spin_until) break;
    }
    if (limit <= kSpinWindow) return;  // the caller's time is up: not a verdict on spinning
    limit -= kSpinWindow;
  } else if (!spare && live_) {
    const BatchWhileAsleep batch;
    const auto nap =
        std::min(limit, std::clamp<std::chrono::nanoseconds>(runnable_seen() * kNapPerRunnable,
                                                             kShortestNap, kLongestNap));
    const timespec ts{static_cast<time_t>(nap.count() / 1'000'000'000),
                      static_cast<long>(nap.count() % 1'000'000'000)};
    ::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
    live_ = ring.ready();
    return;
  }
  sleep(ring, limit, deaths);
  live_ = ring.ready();
  const bool paid = live_ && Clock::now() - start <= kPayingWait;
  paying_ = (paying_ << 1) | (paid ? 1 : 0);
}

}  // namespace shmcast::detail
