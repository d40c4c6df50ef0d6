// A connection to a bus: publish, inspect, and make subscribers.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmcast/error.hpp"
#include "shmcast/export.hpp"
#include "shmcast/limits.hpp"
#include "shmcast/loan.hpp"
#include "shmcast/stats.hpp"

namespace shmcast {

namespace detail {
class BusState;
}
class Subscriber;

/// Options for Bus::connect.
struct ConnectOptions {
  /// How long a client waits for the coordinator, so a restart of it (`systemctl restart
  /// shmcastd`) goes unnoticed. Opening a Bus or a Subscriber while none runs (the stopped
  /// coordinator removed the unused bus, or the one recorded in it is dead) waits this long for
  /// one, then fails with Errc::no_coordinator. A registry request (subscribe, unsubscribe,
  /// attach) waits this long for the answer, then fails with Errc::coordinator_gone; it waits
  /// also while no coordinator runs, so a coordinator restarted meanwhile answers it.
  std::chrono::milliseconds request_timeout{5000};
};

/// The bus name a program uses when none is given: $SHMCAST_BUS, else "default".
[[nodiscard]] SHMCAST_EXPORT std::string default_bus_name();

/// Throws Error(invalid_bus_name) unless `name` matches [A-Za-z0-9_.-]{1,64}.
SHMCAST_EXPORT void check_bus_name(std::string_view name);

/// A connection to one bus. Cheap to copy (copies share the connection).
///
/// Thread safety: every member may be called from any number of threads at once.
class SHMCAST_EXPORT Bus {
 public:
  /// Connects to the bus `name` (empty: default_bus_name()), waiting up to
  /// options.request_timeout for its coordinator. Throws Error: invalid_bus_name,
  /// no_coordinator, version_mismatch, permission_denied, bad_segment, too_many_clients,
  /// coordinator_gone.
  static Bus connect(std::string_view name = {}, ConnectOptions options = {});

  /// Publishes `payload` on `channel` and returns the number of deliveries (Redis PUBLISH):
  /// subscribers of the channel plus, per matching pattern, its subscribers; a subscriber
  /// whose ring is full is skipped and not counted. Never blocks, never calls the
  /// coordinator. Throws Error(channel_too_long / payload_too_large) on a limit.
  std::size_t publish(std::string_view channel, std::span<const std::byte> payload);
  std::size_t publish(std::string_view channel, std::string_view payload) {
    return publish(channel, std::as_bytes(std::span<const char>(payload.data(), payload.size())));
  }

  /// Publishes each of `payloads` on `channel`, in order, as that many publish() calls would,
  /// and returns their deliveries summed. The payloads for one subscriber go into its ring as
  /// one batch (one claim instead of one per message, when they fit together) and it is woken
  /// once: at wide fan-out, where touching each ring costs more than copying into it, a batch of
  /// a few dozen messages costs a fraction of as many publish() calls. Throws as publish() does,
  /// before publishing any of them.
  std::size_t publish_batch(std::string_view channel, std::span<const std::string_view> payloads);

  /// Lends `bytes` of this connection's payload pool, for a message written once and read by
  /// every subscriber in place (zero copy): see Loan. The pool (Limits::pool_bytes, shared by
  /// all copies of this Bus) is made on the first loan. A chunk comes back once the loan is
  /// dropped unpublished, or once every subscriber it reached has read it and let go of it
  /// (Subscriber::keep holds it longer). If the pool has no room, waits up to `wait` for one,
  /// then throws Error(pool_full); throws Error(payload_too_large) if `bytes` exceeds the whole
  /// pool or the bus has no pools (pool_bytes 0), and Error (system) if the pool cannot be made.
  [[nodiscard]] Loan loan(std::size_t bytes,
                          std::chrono::nanoseconds wait = std::chrono::nanoseconds(0));

  /// Publishes a loan of this Bus (or a copy of it) on `channel`, as publish() does a copied
  /// payload: same return value, never waits for a subscriber, a full ring is skipped and
  /// counted, and so is a subscriber whose unread loaned messages already pin
  /// Limits::max_unread_loan_bytes. The rings carry a 24-byte descriptor instead of the bytes,
  /// so payloads of any size up to the pool's go without max_payload. It takes the pool's mutex
  /// (shared with loan()) for a moment, to hand the chunk back to it. The loan is spent (false)
  /// afterwards, delivered or not. Throws Error(channel_too_long), or std::invalid_argument for
  /// an empty loan or one of another bus.
  std::size_t publish(std::string_view channel, Loan&& loan);

  /// Creates a subscriber: a client with its own ring, waiting for the coordinator as connect()
  /// does. See Subscriber.
  [[nodiscard]] Subscriber subscriber();

  /// The registry reads below (channels, numsub, stats) never answer from a registry caught in
  /// the middle of an update: they read it again for up to ConnectOptions::request_timeout, then
  /// throw Error(coordinator_gone) (its coordinator died or stalled in the middle of a write).

  /// PUBSUB CHANNELS [pattern]: channels with at least one subscriber (matching `pattern` if
  /// given), in no particular order.
  [[nodiscard]] std::vector<std::string> channels() const;
  [[nodiscard]] std::vector<std::string> channels(std::string_view pattern) const;
  /// PUBSUB NUMSUB: subscriber counts, in argument order (pattern subscribers not counted).
  [[nodiscard]] std::vector<std::pair<std::string, std::size_t>> numsub(
      std::span<const std::string> channels) const;
  /// PUBSUB NUMPAT: distinct patterns with at least one subscriber.
  [[nodiscard]] std::size_t numpat() const;

  /// A snapshot of the whole bus for inspection.
  [[nodiscard]] BusStats stats() const;
  [[nodiscard]] const Limits& limits() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  /// True while the coordinator process is alive.
  [[nodiscard]] bool coordinator_alive() const;

 private:
  explicit Bus(std::shared_ptr<detail::BusState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::BusState> state_;
};

/// Reads a bus's state without attaching as a client (for inspection tools), without waiting
/// for a coordinator. Same errors as Bus::connect but never too_many_clients, and
/// coordinator_gone if the registry stays in the middle of an update for a second.
[[nodiscard]] SHMCAST_EXPORT BusStats inspect(std::string_view bus_name);

}  // namespace shmcast
