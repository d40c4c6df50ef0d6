// Futex wait/wake on a word in shared memory: process-shared (no FUTEX_PRIVATE_FLAG).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shmcast::detail {

/// Sleeps while `*word == expected`, at most `timeout` (negative: no limit). Returns early on
/// a wake, a signal, or a value change; callers re-check their condition.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept;

/// The default `fallback_timeout` of futex_wait_either: how late, without futex_waitv, a sleeper
/// sees a change of its second word.
inline constexpr std::chrono::nanoseconds kWaitvFallbackStep = std::chrono::milliseconds(500);

/// A second word to sleep on beside the first: `word` points at a 32-bit futex word (it may be
/// the low half of a wider counter), `seen` is the value it had.
struct FutexAlso {
  const void* word;
  std::uint32_t seen;
};

/// As futex_wait, but also returns once `also` is woken or no longer holds `also.seen`
/// (futex_waitv). Where the kernel lacks futex_waitv (before Linux 5.16) or refuses it (a
/// seccomp filter), it sleeps on `word` alone, at most `fallback_timeout` at a time.
void futex_wait_either(std::atomic<std::uint32_t>* word, std::uint32_t expected, FutexAlso also,
                       std::chrono::nanoseconds timeout,
                       std::chrono::nanoseconds fallback_timeout) noexcept;

/// Rings a doorbell: moves `word` on and wakes whoever sleeps on it. A sleeper that read the
/// word before it looked for work and waits for that value cannot miss a ring.
void futex_ring(std::atomic<std::uint32_t>* word) noexcept;

/// Wakes up to `count` sleepers on `word`.
void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

/// Wakes every sleeper on the 32-bit futex word at `word` (see FutexAlso).
void futex_wake_all(const void* word) noexcept;

/// A pause instruction for spin loops: yields the core's pipeline to the sibling thread.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace shmcast::detail
