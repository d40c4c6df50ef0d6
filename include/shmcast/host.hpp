// The buses of this host as /dev/shm shows them, for operators (`shm-stat --all`): whether
// anything still uses each one, and the removal of those that nothing uses any more.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmcast/export.hpp"

namespace shmcast {

/// Whether anything still uses a bus found under /dev/shm.
enum class BusHealth {
  live,           ///< its coordinator runs (or is starting: it holds the bus's lock)
  orphaned,       ///< its coordinator is dead but a client runs: shmcastd --bus NAME adopts it
  dead,           ///< its coordinator and every client are dead: nothing uses it any more
  unreadable,     ///< this user may not open its control segment
  other_version,  ///< made by a shmcast of another layout version, which this one cannot read
  foreign,        ///< its control segment is not a shmcast control segment
};

/// "live", "orphaned", "dead", "unreadable", "other-version" or "foreign".
[[nodiscard]] SHMCAST_EXPORT const char* health_name(BusHealth health) noexcept;

/// A bus found on this host by its control segment, /dev/shm/shmcast.<bus>.ctl.
struct HostBus {
  std::string bus;
  BusHealth health = BusHealth::foreign;
  std::int32_t coordinator_pid = 0;  ///< as recorded in the bus; 0 if unknown
  bool coordinator_alive = false;    ///< other_version: a coordinator holds the bus's lock
  std::uint32_t clients_alive = 0;   ///< client slots whose process runs
  std::uint32_t clients_dead = 0;    ///< client slots whose process died or left, not yet reaped
  std::uint64_t bytes = 0;           ///< the sizes of its objects under /dev/shm, summed
  std::vector<std::string> objects;  ///< its objects: control segment, lock file, rings
  std::string problem;               ///< what is wrong with its control segment, if anything
};

/// Every bus on this host, by name; only `bus` if given (nothing if it has no control
/// segment). Reads each bus without attaching to it and changes nothing. Throws
/// Error(invalid_bus_name) for a bad `bus`, Error(system) if /dev/shm cannot be read.
[[nodiscard]] SHMCAST_EXPORT std::vector<HostBus> host_buses(std::string_view bus = {});

/// What remove_dead_buses() did with one bus.
struct BusRemoval {
  std::string bus;
  bool removed = false;              ///< its control segment is gone
  std::uint64_t bytes = 0;           ///< the sizes of the objects removed, summed
  std::vector<std::string> objects;  ///< the objects removed
  std::vector<std::string> kept;     ///< what was left in place, and why
};

/// Removes every dead bus (only `bus` if given): its rings, control segment and lock file. It
/// holds the bus's coordinator lock meanwhile and looks at the bus again under it, so a
/// shmcastd starting on the bus and the removal never interleave, and a bus that a coordinator
/// or a client took up since is kept. Never removes a live or orphaned bus, nor a bus of
/// another layout version (its clients cannot be told), nor an object that this user may not
/// read or that is not a shmcast segment of that bus (those are reported in `kept`). Returns one
/// entry per bus that is dead, unreadable, of another version or foreign. Throws as
/// host_buses().
SHMCAST_EXPORT std::vector<BusRemoval> remove_dead_buses(std::string_view bus = {});

}  // namespace shmcast
