// A snapshot of a bus for inspection (shm-stat): coordinator, limits, registry, clients.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shmcast/limits.hpp"

namespace shmcast {

struct ChannelStat {
  std::string name;
  std::uint32_t subscribers = 0;
};

struct PatternStat {
  std::string pattern;
  std::uint32_t subscribers = 0;
};

struct ClientStat {
  std::uint32_t slot = 0;
  std::int32_t pid = 0;
  std::uint32_t subscriptions = 0;  ///< channels + patterns
  std::uint64_t ring_bytes = 0;     ///< 0 for a publish-only client
  std::uint64_t ring_used = 0;      ///< bytes written and not yet read
  std::uint64_t delivered = 0;      ///< records the client has read from its ring
  std::uint64_t dropped = 0;        ///< records refused because its ring was full
  std::uint32_t holds = 0;          ///< loaned payloads it keeps (Subscriber::keep)
};

/// A payload pool (Bus::loan): one per connection that loaned, kept after it left until no
/// subscriber references a chunk of it.
struct PoolStat {
  std::uint32_t slot = 0;     ///< the client slot of its publisher
  std::uint32_t pool_id = 0;  ///< names it with the slot: shmcast.<bus>.pool.<slot>.<id>
  std::int32_t owner_pid = 0;
  bool owner_attached = false;      ///< its publisher is still a client of the bus
  std::uint64_t bytes = 0;          ///< the pool's size (Limits::pool_bytes when made)
  std::uint64_t chunks_in_use = 0;  ///< published chunks still referenced by a ring or a hold
  std::uint64_t bytes_in_use = 0;   ///< those chunks' bytes, and loans not yet published
};

struct BusStats {
  std::string bus;
  std::int32_t coordinator_pid = 0;
  bool coordinator_alive = false;
  std::uint64_t uptime_ms = 0;  ///< since the coordinator started
  std::uint64_t routing_version = 0;
  std::uint64_t reaped = 0;          ///< clients removed because their process died
  std::uint64_t registry_bytes = 0;  ///< control segment size
  std::uint64_t bytes_per_channel = 0;
  std::uint64_t bytes_per_subscription = 0;
  Limits limits;
  std::vector<ChannelStat> channels;
  std::vector<PatternStat> patterns;
  std::vector<ClientStat> clients;
  std::vector<PoolStat> pools;
};

}  // namespace shmcast
