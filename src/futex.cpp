#include "futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace shmcast::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "a futex word must be a plain 32-bit integer in memory");

namespace {

#ifdef SYS_futex_waitv
// Set once a futex_waitv call failed with ENOSYS; from then on only the first word is waited on.
std::atomic<bool> g_no_waitv{false};
#endif

timespec timespec_of(std::chrono::nanoseconds t) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(t.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(t.count() % 1'000'000'000);
  return ts;
}

}  // namespace

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts = timespec_of(timeout);
    tsp = &ts;
  }
  // Not FUTEX_PRIVATE_FLAG: the word lives in memory shared with other processes.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, tsp, nullptr, 0);
}

void futex_wait_either(std::atomic<std::uint32_t>* word, std::uint32_t expected, FutexAlso also,
                       std::chrono::nanoseconds timeout,
                       std::chrono::nanoseconds fallback_timeout) noexcept {
#ifdef SYS_futex_waitv
  if (!g_no_waitv.load(std::memory_order_relaxed)) {
    futex_waitv waiters[2]{};
    waiters[0].val = expected;
    waiters[0].uaddr = reinterpret_cast<std::uintptr_t>(word);
    waiters[0].flags = FUTEX_32;
    waiters[1].val = also.seen;
    waiters[1].uaddr = reinterpret_cast<std::uintptr_t>(also.word);
    waiters[1].flags = FUTEX_32;
    // futex_waitv takes an absolute time only.
    timespec deadline{};
    timespec* dp = nullptr;
    if (timeout.count() >= 0) {
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      deadline = timespec_of(std::chrono::seconds(now.tv_sec) +
                             std::chrono::nanoseconds(now.tv_nsec) + timeout);
      dp = &deadline;
    }
    if (syscall(SYS_futex_waitv, waiters, 2, 0, dp, CLOCK_MONOTONIC) >= 0 || errno != ENOSYS) {
      return;
    }
    g_no_waitv.store(true, std::memory_order_relaxed);
  }
#else
  (void)also;
#endif
  futex_wait(word, expected,
             timeout.count() < 0 ? fallback_timeout : std::min(timeout, fallback_timeout));
}

void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr,
          0);
}

void futex_wake_all(const void* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace shmcast::detail
