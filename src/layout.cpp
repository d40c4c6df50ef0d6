#include "layout.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "pool.hpp"

namespace shmcast::detail {

namespace {

constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

}  // namespace

BusLimits to_bus_limits(const Limits& l) noexcept {
  return BusLimits{l.max_clients,
                   l.max_channel,
                   l.max_pattern,
                   l.max_subscriptions,
                   l.max_channels,
                   l.max_patterns,
                   l.max_total_subscriptions,
                   l.max_holds,
                   l.ring_bytes,
                   l.max_payload,
                   l.pool_bytes,
                   l.max_unread_loan_bytes};
}

Limits to_limits(const BusLimits& l) noexcept {
  return Limits{l.max_clients,
                l.max_channel,
                l.max_pattern,
                l.max_subscriptions,
                l.max_channels,
                l.max_patterns,
                l.max_total_subscriptions,
                l.ring_bytes,
                l.max_payload,
                l.pool_bytes,
                l.max_holds,
                l.max_unread_loan_bytes};
}

ControlGeometry control_geometry(const BusLimits& l) {
  ControlGeometry g{};
  const std::uint64_t longest = std::max(l.max_channel, l.max_pattern);
  g.holds_offset = static_cast<std::uint32_t>(sizeof(ClientSlot) + round_up(longest, kCacheLine));
  g.slot_size = static_cast<std::uint32_t>(
      g.holds_offset + round_up(std::uint64_t{l.max_holds} * sizeof(Hold), kCacheLine));
  g.entry_size_channel = static_cast<std::uint32_t>(sizeof(Entry) + round_up(l.max_channel, 32));
  g.entry_size_pattern = static_cast<std::uint32_t>(sizeof(Entry) + round_up(l.max_pattern, 32));
  // Half full at most, so linear probes stay short.
  g.channel_slots = std::bit_ceil(std::max<std::uint32_t>(16, l.max_channels * 2));
  g.pattern_slots = std::bit_ceil(std::max<std::uint32_t>(16, l.max_patterns * 2));
  g.node_count = l.max_total_subscriptions;
  // About one bucket per channel the bus can hold, so a change rarely moves another's route.
  g.route_buckets = std::bit_ceil(std::clamp(l.max_channels, kRouteBucketsMin, kRouteBucketsMax));
  g.route_versions_offset = round_up(kBusHeaderOffset + sizeof(BusHeader), kCacheLine);
  g.clients_offset = round_up(
      g.route_versions_offset + sizeof(std::uint64_t) * std::uint64_t{g.route_buckets}, kCacheLine);
  g.channels_offset =
      round_up(g.clients_offset + std::uint64_t{g.slot_size} * l.max_clients, kCacheLine);
  g.patterns_offset = round_up(
      g.channels_offset + std::uint64_t{g.entry_size_channel} * g.channel_slots, kCacheLine);
  g.nodes_offset = round_up(
      g.patterns_offset + std::uint64_t{g.entry_size_pattern} * g.pattern_slots, kCacheLine);
  g.total = round_up(g.nodes_offset + sizeof(Node) * std::uint64_t{g.node_count}, 4096);
  return g;
}

std::string control_name(std::string_view bus) {
  return fmt::format("shmcast.{}.ctl", bus);
}

std::string ring_name(std::string_view bus, std::uint32_t slot, std::uint32_t generation) {
  return fmt::format("shmcast.{}.ring.{}.{}", bus, slot, generation);
}

std::string lock_name(std::string_view bus) {
  return fmt::format("shmcast.{}.lock", bus);
}

std::uint32_t name_hash(std::string_view name) noexcept {
  std::uint32_t h = 2166136261U;
  for (const char c : name) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 16777619U;
  }
  return h;
}

}  // namespace shmcast::detail
