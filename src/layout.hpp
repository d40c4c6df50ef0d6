// The control segment of a bus, `shmcast.<bus>.ctl`: layout shared by the coordinator (its
// only writer, but for each client's own request mailbox) and every client.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "process.hpp"
#include "ring.hpp"
#include "segment.hpp"
#include "shmcast/limits.hpp"

namespace shmcast::detail {

/// Bumped on every change of any struct below, of the ring layout, or of the frame format.
inline constexpr std::uint32_t kLayoutVersion = 5;

// clang-format off
//  Control segment:
//
//   0      SegmentHeader                      magic, layout version (written last), size
//   64     BusHeader                          limits, table offsets, coordinator, seqlock
//   448    uint64 versions[route_buckets]     route versions, by hash of the channel name
//   ...    ClientSlot[max_clients]            slot_size bytes each: identity, mailbox, name
//   ...    Entry channels[channel_slots]      open addressing, linear probing
//   ...    Entry patterns[pattern_slots]
//   ...    Node nodes[node_count]             one per subscription, linked per entry
// clang-format on
//
//  Every offset and count is fixed when the coordinator creates the segment; a client checks
//  each against the segment size once, and every index it reads against these counts.

struct BusLimits {  // Limits, fixed-width
  std::uint32_t max_clients;
  std::uint32_t max_channel;
  std::uint32_t max_pattern;
  std::uint32_t max_subscriptions;
  std::uint32_t max_channels;
  std::uint32_t max_patterns;
  std::uint32_t max_total_subscriptions;
  std::uint32_t max_holds;
  std::uint64_t ring_bytes;
  std::uint64_t max_payload;
  std::uint64_t pool_bytes;
  std::uint64_t max_unread_loan_bytes;
};
static_assert(sizeof(BusLimits) == 64);

// The largest limits a bus is created with, and that a client accepts from a segment: they keep
// every product of the geometry within 64 bits and every table walk short.
inline constexpr std::uint32_t kMaxClientsBound = 1U << 16;
inline constexpr std::uint32_t kMaxNameBound = 1U << 16;   // max_channel, max_pattern (bytes)
inline constexpr std::uint32_t kMaxNamesBound = 1U << 24;  // max_channels, max_patterns
inline constexpr std::uint32_t kMaxTotalSubscriptionsBound = 1U << 26;
inline constexpr std::uint32_t kMaxHoldsBound = 1U << 16;
inline constexpr std::uint64_t kMaxPoolBytesBound = std::uint64_t{1} << 40;

struct BusHeader {
  // Written once at creation.
  BusLimits limits;                     // 0
  std::uint32_t slot_size;              // 64
  std::uint32_t entry_size_channel;     // 68
  std::uint32_t entry_size_pattern;     // 72
  std::uint32_t segment_mode;           // 76: mode of the bus's segments (rings follow it)
  std::uint64_t clients_offset;         // 80
  std::uint64_t channels_offset;        // 88
  std::uint64_t patterns_offset;        // 96
  std::uint64_t nodes_offset;           // 104
  std::uint32_t channel_slots;          // 112: power of two
  std::uint32_t pattern_slots;          // 116: power of two
  std::uint32_t node_count;             // 120
  std::int32_t segment_gid;             // 124: -1: none
  std::uint64_t route_versions_offset;  // 128
  std::uint32_t route_buckets;          // 136: power of two
  std::uint32_t reserved0;              // 140
  // The coordinator now running (rewritten by a coordinator that adopts the bus).
  alignas(kCacheLine) std::atomic<std::int32_t> coordinator_pid;  // 192
  std::atomic<std::uint64_t> coordinator_start_ticks;             // 200: /proc start time
  std::atomic<std::uint64_t> coordinator_started_ns;              // 208: CLOCK_REALTIME
  std::atomic<std::uint64_t> created_ns;                          // 216
  // Seqlock over the registry (channels, patterns, nodes, slot generations): odd while the
  // coordinator writes. Publishers read it only to resolve a route: a cached route is kept while
  // the route version of its channel's bucket stays where it was (see kRouteBucketsMax).
  alignas(kCacheLine) std::atomic<std::uint64_t> routing_version;  // 256
  alignas(kCacheLine) std::atomic<std::uint64_t> heartbeat_ns;     // 320: CLOCK_MONOTONIC
  std::atomic<std::uint64_t> deaths;                               // 328: clients reaped
  std::atomic<std::uint32_t> channel_count;                        // 336
  std::atomic<std::uint32_t> pattern_count;                        // 340
  std::atomic<std::uint32_t> node_used;                            // 344
  std::uint32_t reserved1;                                         // 348
  // Clients ring it after writing a request; the coordinator sleeps on it.
  alignas(kCacheLine) std::atomic<std::uint32_t> doorbell;  // 384
};
/// The bus's count of reaped clients as a 32-bit futex word (its low half): the coordinator
/// wakes it after each death, and a sleeping subscriber watches it beside its ring's word.
inline const void* deaths_futex(const BusHeader& h) noexcept {
  const auto* at = reinterpret_cast<const std::byte*>(&h.deaths);
  return std::endian::native == std::endian::little ? at : at + sizeof(std::uint32_t);
}

static_assert(offsetof(BusHeader, slot_size) == 64);
static_assert(offsetof(BusHeader, clients_offset) == 80);
static_assert(offsetof(BusHeader, channel_slots) == 112);
static_assert(offsetof(BusHeader, segment_gid) == 124);
static_assert(offsetof(BusHeader, route_versions_offset) == 128);
static_assert(offsetof(BusHeader, route_buckets) == 136);
static_assert(offsetof(BusHeader, coordinator_pid) == 192);
static_assert(offsetof(BusHeader, coordinator_start_ticks) == 200);
static_assert(offsetof(BusHeader, routing_version) == 256);
static_assert(offsetof(BusHeader, heartbeat_ns) == 320);
static_assert(offsetof(BusHeader, deaths) == 328);
static_assert(offsetof(BusHeader, channel_count) == 336);
static_assert(offsetof(BusHeader, doorbell) == 384);
static_assert(sizeof(BusHeader) == 448);

inline constexpr std::size_t kBusHeaderOffset = kSegmentHeaderSize;

//  Route versions: one word per bucket of channel names, which the coordinator moves (inside the
//  registry write, before the seqlock closes) whenever a route in the bucket may change: the
//  channel's own subscribers, or a slot generation they are named by. A change that may touch
//  every route (a pattern, a repair) moves every bucket. A publisher records its bucket's
//  version before it resolves a route and resolves again once it moved, so it reads one shared
//  word per publish and a subscribe elsewhere costs it nothing, but for the channels whose names
//  share the bucket. Each word only grows, and is read with acquire, written with release.
inline constexpr std::uint32_t kRouteBucketsMin = 64;
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 &&
              std::atomic<std::uint64_t>::is_always_lock_free);
inline constexpr std::uint32_t kRouteBucketsMax = 4096;

/// The route-version bucket of a channel name's hash; `buckets` is a power of two.
[[nodiscard]] constexpr std::uint32_t route_bucket(std::uint32_t hash,
                                                   std::uint32_t buckets) noexcept {
  return hash & (buckets - 1);
}

enum class SlotState : std::uint32_t {
  free = 0,
  claimed = 1,   // a client took it (CAS) and is attaching
  live = 2,      // attached: the coordinator watches its process
  detached = 3,  // the client left while the coordinator was away; reap it
};

enum class Op : std::uint32_t {
  none = 0,
  attach = 1,
  subscribe = 2,
  psubscribe = 3,
  unsubscribe = 4,
  punsubscribe = 5,
  detach = 6,
  // A Subscriber holds its ring in the slot of its Bus (one slot per subscribing process):
  add_ring = 7,      // the slot, attached, now has a ring under its generation
  release_ring = 8,  // that Subscriber left: its subscriptions and ring go, the slot stays
};

enum class Status : std::uint32_t {
  ok = 0,
  bad_request = 1,
  name_too_long = 2,
  too_many_subscriptions = 3,
  registry_full = 4,
  not_attached = 5,
};

// clang-format off
//  Client slot (slot_size bytes: 256 + the longest name and the holds, each rounded to a cache
//  line):
//
//   0    identity   state, pid, start ticks, generation, ring   client claims, coordinator frees
//   64   request    req_seq, op, sid, name length               client writes
//   128  response   resp_seq (futex), status, value             coordinator writes
//   192  counters   subscriptions                               coordinator writes
//   256  name[]     request argument                            client writes
//   ...  Hold holds[max_holds]                                  client takes, coordinator frees
struct ClientSlot {
  std::atomic<std::uint32_t> state;                              // 0: SlotState
  std::atomic<std::int32_t> pid;                                 // 4
  std::atomic<std::uint64_t> start_ticks;                        // 8: /proc start time of pid
  std::atomic<std::uint32_t> generation;                         // 16: bumped when freed
  std::atomic<std::uint32_t> has_ring;                           // 20
  std::atomic<std::uint64_t> ring_bytes;                         // 24
  std::uint8_t reserved0[32];                                    // 32
  alignas(kCacheLine) std::atomic<std::uint32_t> req_seq;        // 64
  std::atomic<std::uint32_t> op;                                 // 68
  std::atomic<std::uint32_t> sid;                                // 72
  std::atomic<std::uint32_t> name_len;                           // 76
  alignas(kCacheLine) std::atomic<std::uint32_t> resp_seq;       // 128
  std::atomic<std::uint32_t> status;                             // 132
  std::atomic<std::int64_t> value;                               // 136
  alignas(kCacheLine) std::atomic<std::uint32_t> subscriptions;  // 192
  std::uint8_t reserved1[60];                                    // 196
  // name[] follows at 256
};
// clang-format on
static_assert(offsetof(ClientSlot, req_seq) == 64);
static_assert(offsetof(ClientSlot, resp_seq) == 128);
static_assert(offsetof(ClientSlot, subscriptions) == 192);
static_assert(sizeof(ClientSlot) == 256);

//  Registry entry (entry_size bytes: 32 + the longest name, rounded to 32): a channel or a
//  pattern with its list of subscription nodes.
struct Entry {
  std::uint32_t used;      // 0: 1 if it holds a name
  std::uint32_t hash;      // 4
  std::uint32_t name_len;  // 8
  std::uint32_t first;     // 12: first node + 1, 0: none
  std::uint32_t count;     // 16: nodes in the list
  std::uint32_t reserved[3];
  // name[] follows at 32
};
static_assert(sizeof(Entry) == 32);

inline constexpr std::uint32_t kNoNode = 0;
inline constexpr std::uint32_t kFreeNode = 0xffff'ffffU;
inline constexpr std::uint32_t kPatternEntryBit = 0x8000'0000U;

/// One subscription: client `client` holds the entry `entry` (kPatternEntryBit set for the
/// pattern table) under subscription id `sid`.
struct Node {
  std::uint32_t client;  // slot index, kFreeNode when free
  std::uint32_t sid;
  std::uint32_t next;  // next node + 1, 0: end
  std::uint32_t entry;
};
static_assert(sizeof(Node) == 16);

//  Frame: the payload of one ring record, a publish. Confirmations never enter the ring: the
//  subscriber keeps them and merges them into its stream by ring position.
enum class FrameKind : std::uint8_t {
  message = 1,
  pmessage = 2,
};

// clang-format off
struct FrameHeader {
  std::uint8_t kind;        // 0: FrameKind
  std::uint8_t flags;       // 1: kFrameLoaned or zero
  std::uint16_t reserved;   // 2
  std::uint32_t sid;        // 4: the subscription that routed the message
  std::uint32_t name_len;   // 8: channel bytes that follow the header
  std::uint32_t reserved2;  // 12
  std::int64_t count;       // 16: zero
  // channel[name_len] follows at 24, then the payload (or, flags kFrameLoaned, a LoanFrame)
};
// clang-format on
static_assert(sizeof(FrameHeader) == 24);

/// The public Limits and their fixed-width copy in the control segment, both ways.
[[nodiscard]] BusLimits to_bus_limits(const Limits& l) noexcept;
[[nodiscard]] Limits to_limits(const BusLimits& l) noexcept;

/// Bytes of the largest record a message can make: frame header + channel + payload.
[[nodiscard]] constexpr std::uint64_t max_frame(const BusLimits& l) noexcept {
  return sizeof(FrameHeader) + l.max_channel + l.max_payload;
}

/// The computed geometry of a control segment for given limits.
struct ControlGeometry {
  std::uint32_t slot_size, holds_offset, entry_size_channel, entry_size_pattern;
  std::uint32_t channel_slots, pattern_slots, node_count, route_buckets;
  std::uint64_t route_versions_offset, clients_offset, channels_offset, patterns_offset,
      nodes_offset, total;
};
[[nodiscard]] ControlGeometry control_geometry(const BusLimits& limits);

// Names of a bus's shared-memory objects.
[[nodiscard]] std::string control_name(std::string_view bus);
[[nodiscard]] std::string ring_name(std::string_view bus, std::uint32_t slot,
                                    std::uint32_t generation);
[[nodiscard]] std::string lock_name(std::string_view bus);

/// FNV-1a: the registry's hash for channel and pattern names.
[[nodiscard]] std::uint32_t name_hash(std::string_view name) noexcept;

}  // namespace shmcast::detail
