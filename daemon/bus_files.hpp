// The bus's objects in /dev/shm as its coordinator finds or makes them: the lock file that
// makes it the bus's only coordinator, and the control segment.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "coordinator.hpp"
#include "segment.hpp"
#include "shmcast/limits.hpp"

namespace shmcast::daemon {

/// The effective limits must fit together (a message must fit half a ring); throws
/// shmcast::Error naming the settings otherwise.
void check_limits(const Limits& limits);

/// Takes the coordinator lock of bus `bus`, the file `path` (made with `mode`'s owner and group
/// bits if missing), and returns its descriptor, which holds the lock until it is closed or the
/// process dies. Throws Error (coordinator_running) if another live coordinator holds it.
int take_bus_lock(const std::string& path, const std::string& bus, std::uint32_t mode);

/// The control segment of bus `bus` if one is there to adopt; nullopt if there is none (one
/// whose creator died before publishing it is removed). Throws Error if one is there but cannot
/// be used (another layout version, no permission, not a shmcast segment).
std::optional<detail::Segment> open_control(const std::string& bus);

/// Who coordinates a new bus, and since when.
struct CoordinatorStamp {
  std::uint64_t start_ticks;  // the coordinator's process start time
  std::uint64_t started_ns;   // realtime, when it started
  std::uint64_t created_ns;   // realtime, when it created the bus
};

/// Creates, fills and publishes the control segment of a new bus for `options`, showing its
/// coordinator (this process, `stamp`) from the moment it can be opened.
detail::Segment create_control(const CoordinatorOptions& options, const CoordinatorStamp& stamp);

}  // namespace shmcast::daemon
