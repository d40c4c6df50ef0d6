#include "layout.hpp"

#include <time.h>

#include <bit>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace shmcast::detail {

namespace {

constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

}  // namespace

ControlGeometry control_geometry(const BusLimits& l) {
  ControlGeometry g{};
  const std::uint64_t longest = std::max(l.max_channel, l.max_pattern);
  g.slot_size = static_cast<std::uint32_t>(sizeof(ClientSlot) + round_up(longest, kCacheLine));
  g.entry_size_channel = static_cast<std::uint32_t>(sizeof(Entry) + round_up(l.max_channel, 32));
  g.entry_size_pattern = static_cast<std::uint32_t>(sizeof(Entry) + round_up(l.max_pattern, 32));
  // Half full at most, so linear probes stay short.
  g.channel_slots = std::bit_ceil(std::max<std::uint32_t>(16, l.max_channels * 2));
  g.pattern_slots = std::bit_ceil(std::max<std::uint32_t>(16, l.max_patterns * 2));
  g.node_count = l.max_total_subscriptions;
  g.clients_offset = round_up(kBusHeaderOffset + sizeof(BusHeader), kCacheLine);
  g.channels_offset = round_up(g.clients_offset + std::uint64_t{g.slot_size} * l.max_clients, kCacheLine);
  g.patterns_offset =
      round_up(g.channels_offset + std::uint64_t{g.entry_size_channel} * g.channel_slots, kCacheLine);
  g.nodes_offset =
      round_up(g.patterns_offset + std::uint64_t{g.entry_size_pattern} * g.pattern_slots, kCacheLine);
  g.total = round_up(g.nodes_offset + sizeof(Node) * std::uint64_t{g.node_count}, 4096);
  return g;
}

std::string control_name(std::string_view bus) { return fmt::format("shmcast.{}.ctl", bus); }

std::string ring_name(std::string_view bus, std::uint32_t slot, std::uint32_t generation) {
  return fmt::format("shmcast.{}.ring.{}.{}", bus, slot, generation);
}

std::string lock_name(std::string_view bus) { return fmt::format("shmcast.{}.lock", bus); }

std::uint32_t name_hash(std::string_view name) noexcept {
  std::uint32_t h = 2166136261U;
  for (const char c : name) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 16777619U;
  }
  return h;
}

std::uint64_t process_start_ticks(std::int32_t pid) noexcept {
  if (pid <= 0) return 0;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 0;
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == '\0') return 0;
  p += 2;  // field 3, the state
  if (*p == 'Z' || *p == 'X') return 0;
  for (int field = 3; field < 22 && *p != '\0'; ++p) {
    if (*p == ' ') ++field;
  }
  return std::strtoull(p, nullptr, 10);
}

bool process_alive(std::int32_t pid, std::uint64_t start_ticks) noexcept {
  const std::uint64_t now = process_start_ticks(pid);
  return now != 0 && now == start_ticks;
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace shmcast::detail
