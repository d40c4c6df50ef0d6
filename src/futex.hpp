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

/// Wakes up to `count` sleepers on `word`.
void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

/// A pause instruction for spin loops: yields the core's pipeline to the sibling thread.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace shmcast::detail
