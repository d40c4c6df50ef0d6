// Seccomp filters for tests: a thread that may make only the system calls a test allows.
#pragma once

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace shmcast::testing {

#if defined(__x86_64__)
inline constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
inline constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
inline constexpr std::uint32_t kAuditArch = 0;  // no filter written for this architecture
#endif

/// Offsets into seccomp_data for BPF_LD | BPF_W | BPF_ABS.
inline constexpr auto kSeccompNr = static_cast<std::uint32_t>(offsetof(seccomp_data, nr));
inline constexpr auto kSeccompArch = static_cast<std::uint32_t>(offsetof(seccomp_data, arch));
/// The low half of args[0]: both architectures above are little-endian.
inline constexpr auto kSeccompFirstArg = static_cast<std::uint32_t>(offsetof(seccomp_data, args));

/// Installs `program` on the calling thread only (no SECCOMP_FILTER_FLAG_TSYNC), so the rest of
/// the test process runs unfiltered. False if the kernel or a container refuses it.
inline bool filter_this_thread(std::span<sock_filter> program) {
  const sock_fprog filter{static_cast<unsigned short>(program.size()), program.data()};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) == 0;
}

}  // namespace shmcast::testing
