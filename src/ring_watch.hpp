// A ring seen by a thread that waits on its consumer's behalf (Subscriber::fd()'s watcher).
//
// It reads only the ring's shared words (head, tail, the header at the head) and takes part in
// the sleep handshake as the consumer would: it announces that it sleeps on `sleeping`, and a
// producer that commits after the announcement wakes it. It never touches RingConsumer's own
// state, so it runs beside the consumer's thread without a lock. The handshake is
// RingConsumer::announce_sleep()'s: a change to one is a change to both. Like a sleeping
// consumer, it also wakes when a client of the bus dies, for a publisher that died between its
// commit and its wake-up left a wake-up nobody else will make.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "layout.hpp"
#include "ring.hpp"

namespace shmcast::detail {

class RingWatch {
 public:
  enum class Pending {
    none,       ///< the ring is empty
    record,     ///< a record is committed at the head (or something for try_read to check)
    in_flight,  ///< space is claimed past the head, not committed yet
  };

  RingWatch() = default;
  /// As RingConsumer's constructor: throws std::invalid_argument if the layout is not valid.
  /// `bus` is the header of the bus the ring belongs to, for its count of deaths.
  RingWatch(void* memory, std::size_t bytes, const BusHeader& bus);

  /// What the consumer would find at the shared head now. A head read while the consumer
  /// moves it may be stale: that can only report record or in_flight where the consumer
  /// finds nothing, never none where it finds a record.
  [[nodiscard]] Pending pending() const noexcept;

  /// Announces that the consumer sleeps: a producer that commits after this wakes it. Check
  /// pending() after announcing, then sleep() or end_sleep().
  void announce_sleep() noexcept;
  void end_sleep() const noexcept;
  /// Sleeps while the announcement stands and no client died since it, at most `timeout`
  /// (negative: no limit), then ends it.
  void sleep(std::chrono::nanoseconds timeout) const noexcept;
  /// Ends any announcement and wakes whoever sleeps on the ring: to stop a sleeping watcher.
  void wake_sleepers() const noexcept;

 private:
  RingLayout* layout_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  const BusHeader* bus_ = nullptr;
  std::uint32_t deaths_seen_ = 0;  // the count of deaths when the announcement was made
};

}  // namespace shmcast::detail
