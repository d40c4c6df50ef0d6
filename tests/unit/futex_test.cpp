// futex_wait_either when the kernel refuses futex_waitv: it must still sleep, on the first word
// alone, never return at once (a subscriber would then spin through its sleeps).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "futex.hpp"
#include "support/seccomp.hpp"

namespace shmcast {
namespace {

using testing::kAuditArch;

constexpr std::uint32_t kFutexWaitv = 449;  // the same number on every architecture

// Makes futex_waitv fail with EPERM in the calling thread only, as a seccomp policy that denies
// calls it does not know does (systemd's SystemCallErrorNumber=EPERM, container profiles).
bool refuse_futex_waitv() {
  sock_filter program[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, testing::kSeccompArch),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, testing::kSeccompNr),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kFutexWaitv, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  return testing::filter_this_thread(program);
}

TEST(FutexWaitEither, SleepsOnTheFirstWordWhenFutexWaitvIsRefused) {
  if (kAuditArch == 0) GTEST_SKIP() << "no seccomp filter written for this architecture";
  std::atomic<std::uint32_t> word{1};
  std::atomic<std::uint32_t> also{5};
  bool filtered = false;
  std::chrono::steady_clock::duration slept{};
  // A thread of its own: the filter stays with it and ends with it.
  std::thread sleeper([&] {
    filtered = refuse_futex_waitv();
    if (!filtered) return;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
      detail::futex_wait_either(&word, 1, detail::FutexAlso{&also, 5},
                                std::chrono::milliseconds(500), std::chrono::milliseconds(40));
    }
    slept = std::chrono::steady_clock::now() - start;
  });
  sleeper.join();
  if (!filtered) GTEST_SKIP() << "cannot install a seccomp filter here";
  // Three sleeps of the fallback step (40 ms each), not three calls that return at once.
  EXPECT_GE(slept, std::chrono::milliseconds(100));
  EXPECT_LT(slept, std::chrono::milliseconds(1400)) << "the fallback step bounds each sleep";
}

}  // namespace
}  // namespace shmcast
