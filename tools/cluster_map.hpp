// What the bridge knows of a Redis Cluster: which primary serves each hash slot (from CLUSTER
// SLOTS), and where a MOVED or ASK answer points.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crc16.hpp"
#include "redis_link.hpp"

struct redisReply;

namespace shmcast::bridge {

// The primary that serves each slot.
class SlotMap {
 public:
  // From a CLUSTER SLOTS reply given by `asked` (whose host stands in for an empty one, and
  // whose credentials every node shares). Throws std::runtime_error when the reply is not a
  // slot map or leaves a slot without a primary: the bridge could not place every channel.
  static SlotMap parse(const redisReply* reply, const RedisAddress& asked);

  [[nodiscard]] const RedisAddress& primary_of(int slot) const {
    return primaries_[owner_[static_cast<std::size_t>(slot)]];
  }
  [[nodiscard]] const std::vector<RedisAddress>& primaries() const { return primaries_; }

 private:
  std::vector<RedisAddress> primaries_;
  std::array<std::uint16_t, kClusterSlots> owner_{};
};

// Asks each of `nodes` in turn for the slot map and returns the first complete one. Throws
// std::runtime_error naming each node's reason when none gives one.
SlotMap discover_slots(const std::vector<RedisAddress>& nodes);

// A MOVED or ASK error: the slot is served by `node` for good, or (ASK) for the next command
// after ASKING only.
struct Redirect {
  bool ask = false;
  int slot = 0;
  RedisAddress node;  // with the credentials of `from`
};

// The redirection `error` names, or nothing for any other error.
std::optional<Redirect> parse_redirect(std::string_view error, const RedisAddress& from);

}  // namespace shmcast::bridge
