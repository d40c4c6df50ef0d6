// futex_wait_either when the kernel refuses futex_waitv: it must still sleep, on the first word
// alone, never return at once (a subscriber would then spin through its sleeps).
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "futex.hpp"

namespace shmcast {
namespace {

#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
constexpr std::uint32_t kAuditArch = 0;  // no filter written for this architecture
#endif

constexpr std::uint32_t kFutexWaitv = 449;  // the same number on every architecture

// Makes futex_waitv fail with EPERM in the calling thread only, as a seccomp policy that denies
// calls it does not know does (systemd's SystemCallErrorNumber=EPERM, container profiles).
bool refuse_futex_waitv() {
  constexpr auto kNr = static_cast<std::uint32_t>(offsetof(seccomp_data, nr));
  constexpr auto kArch = static_cast<std::uint32_t>(offsetof(seccomp_data, arch));
  sock_filter program[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArch),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kFutexWaitv, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog filter{static_cast<unsigned short>(std::size(program)), program};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) == 0;
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
