// Errors of shmcast's setup and control calls. The publish and receive paths report status in
// their return values instead, except for misuse (a name or payload over a limit).
#pragma once

#include <stdexcept>
#include <string>

#include "shmcast/export.hpp"

namespace shmcast {

/// What went wrong. Every Error also carries a one-line message that says what to do.
enum class Errc {
  invalid_bus_name,        ///< bus names are [A-Za-z0-9_.-]{1,64}
  no_coordinator,          ///< no coordinator ran within the request timeout: start shmcastd
  coordinator_running,     ///< shmcastd: another live coordinator owns the bus
  coordinator_gone,        ///< the coordinator died or did not answer within the request timeout
  version_mismatch,        ///< the bus was made by a shmcast of another layout version
  permission_denied,       ///< the bus's segments are not readable and writable by this user
  bad_segment,             ///< a segment of the bus's name is not a valid shmcast segment
  payload_too_large,       ///< over the bus's max_payload limit
  channel_too_long,        ///< over the bus's max_channel limit
  pattern_too_long,        ///< over the bus's max_pattern limit
  too_many_subscriptions,  ///< over the bus's max_subscriptions (per client) limit
  too_many_clients,        ///< the bus's client table (max_clients) is full
  registry_full,           ///< the bus's channel, pattern or subscription table is full
  system,                  ///< any other system error
  invalid_setting,         ///< shmcastd: a flag, variable or --config line holds no valid value
  pool_full,               ///< Bus::loan: the connection's pool (pool_bytes) has no room now
  too_many_holds,          ///< Subscriber::keep: the connection holds max_holds payloads
};

class SHMCAST_EXPORT Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace shmcast
