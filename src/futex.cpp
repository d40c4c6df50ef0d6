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

// futex_waitv(2) (Linux 5.16), declared here so that older kernel and libc headers build too:
// its system call number is the same on every architecture, and its entry layout is fixed.
constexpr long kSysFutexWaitv = 449;
constexpr std::uint32_t kFutex32 = 2;
struct WaitvEntry {
  std::uint64_t val;
  std::uint64_t uaddr;
  std::uint32_t flags;
  std::uint32_t reserved;
};
static_assert(sizeof(WaitvEntry) == 24);

// Set once futex_waitv failed for a reason other than a wake-up, a timeout or a signal (ENOSYS
// on an old kernel, EPERM under a seccomp filter, ...): from then on only the first word is
// waited on. Without it, such a failure would return at once from every sleep: a busy loop.
std::atomic<bool> g_no_waitv{false};

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
  if (!g_no_waitv.load(std::memory_order_relaxed)) {
    WaitvEntry waiters[2]{};
    waiters[0].val = expected;
    waiters[0].uaddr = reinterpret_cast<std::uintptr_t>(word);
    waiters[0].flags = kFutex32;
    waiters[1].val = also.seen;
    waiters[1].uaddr = reinterpret_cast<std::uintptr_t>(also.word);
    waiters[1].flags = kFutex32;
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
    if (syscall(kSysFutexWaitv, waiters, 2, 0, dp, CLOCK_MONOTONIC) >= 0 || errno == EAGAIN ||
        errno == ETIMEDOUT || errno == EINTR) {
      return;
    }
    g_no_waitv.store(true, std::memory_order_relaxed);
  }
  futex_wait(word, expected,
             timeout.count() < 0 ? fallback_timeout : std::min(timeout, fallback_timeout));
}

void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr,
          0);
}

void futex_ring(std::atomic<std::uint32_t>* word) noexcept {
  word->fetch_add(1, std::memory_order_seq_cst);
  futex_wake(word, INT_MAX);
}

void futex_wake_all(const void* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace shmcast::detail
