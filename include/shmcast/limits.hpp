// The limits of a bus, set by its coordinator (shmcastd flags) and read by every client.
#pragma once

#include <cstdint>

namespace shmcast {

/// Every limit is a shmcastd setting; the defaults are those of a bus started without flags.
struct Limits {
  std::uint32_t max_clients = 256;         ///< --max-clients: clients attached at once
  std::uint32_t max_channel = 256;         ///< --max-channel: bytes in a channel name
  std::uint32_t max_pattern = 256;         ///< --max-pattern: bytes in a pattern
  std::uint32_t max_subscriptions = 1024;  ///< --max-subscriptions: channels + patterns per client
  std::uint32_t max_channels = 16384;      ///< --max-channels: channels with subscribers, bus-wide
  std::uint32_t max_patterns = 4096;       ///< --max-patterns: distinct patterns, bus-wide
  std::uint32_t max_total_subscriptions = 65536;  ///< --max-total-subscriptions: bus-wide
  std::uint64_t ring_bytes = 1U << 20;    ///< --ring-bytes: each subscriber's ring (power of two)
  std::uint64_t max_payload = 64U << 10;  ///< --max-payload: bytes in one message payload
  /// --pool-bytes: each publishing connection's payload pool for loans (Bus::loan), made on its
  /// first loan; 0: no loans on this bus.
  std::uint64_t pool_bytes = 64U << 20;
  /// --max-holds: loaned payloads one connection keeps past their callback (Subscriber::keep).
  std::uint32_t max_holds = 64;
  /// --max-unread-loan-bytes: pool bytes one subscriber's unread loaned messages may pin (whole
  /// 4 KiB blocks each); beyond, a loaned publish skips that subscriber as a full ring would, so
  /// a stopped subscriber cannot take a publisher's whole pool.
  std::uint64_t max_unread_loan_bytes = 32U << 20;
};

}  // namespace shmcast
