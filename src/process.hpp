// Facts about processes and clocks that shmcast reads from the kernel.
#pragma once

#include <cstdint>

namespace shmcast::detail {

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), 0 if the
/// process does not exist or is a zombie. With the pid it names a process uniquely.
[[nodiscard]] std::uint64_t process_start_ticks(std::int32_t pid) noexcept;

/// True if process `pid` started at `start_ticks` is still running.
[[nodiscard]] bool process_alive(std::int32_t pid, std::uint64_t start_ticks) noexcept;

[[nodiscard]] std::uint64_t monotonic_ns() noexcept;
[[nodiscard]] std::uint64_t realtime_ns() noexcept;

}  // namespace shmcast::detail
