// The registry of a bus as its readers see it: the control segment, checked once, its tables,
// and the lock-free reads publishers and inspectors make from them under the seqlock.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "glob.hpp"
#include "layout.hpp"
#include "pool.hpp"
#include "segment.hpp"

namespace shmcast::detail {

/// The registry's two tables of names: a subscription is to a channel or to a pattern.
enum class Table : std::uint8_t { channels, patterns };
inline constexpr Table kTables[] = {Table::channels, Table::patterns};

/// The table's noun, for log lines: "channel" or "pattern".
[[nodiscard]] constexpr const char* table_noun(Table table) noexcept {
  return table == Table::patterns ? "pattern" : "channel";
}

/// A node's `entry` field: the entry's index, with kPatternEntryBit for the pattern table.
[[nodiscard]] constexpr std::uint32_t node_entry(Table table, std::uint32_t index) noexcept {
  return table == Table::patterns ? index | kPatternEntryBit : index;
}
[[nodiscard]] constexpr Table table_of_node_entry(std::uint32_t entry) noexcept {
  return (entry & kPatternEntryBit) != 0 ? Table::patterns : Table::channels;
}

/// The registry tables and client table of a control segment at `base`, indexed with a
/// private copy of their geometry: the shared segment, or the coordinator's own record of it.
/// Callers check indices read from shared memory against limits() / geometry() before use.
class Tables {
 public:
  Tables(std::byte* base, const BusLimits& limits, const ControlGeometry& geometry) noexcept
      : base_(base), limits_(limits), geometry_(geometry) {}

  [[nodiscard]] const BusLimits& limits() const noexcept { return limits_; }
  [[nodiscard]] const ControlGeometry& geometry() const noexcept { return geometry_; }

  [[nodiscard]] ClientSlot& slot(std::uint32_t i) const noexcept {
    return *reinterpret_cast<ClientSlot*>(base_ + geometry_.clients_offset +
                                          std::uint64_t{i} * geometry_.slot_size);
  }
  [[nodiscard]] char* slot_name(std::uint32_t i) const noexcept {
    return reinterpret_cast<char*>(&slot(i)) + sizeof(ClientSlot);
  }
  /// The holds of slot `i`: limits().max_holds of them.
  [[nodiscard]] Hold* holds(std::uint32_t i) const noexcept {
    return reinterpret_cast<Hold*>(reinterpret_cast<std::byte*>(&slot(i)) + geometry_.holds_offset);
  }
  [[nodiscard]] Entry& entry(Table table, std::uint32_t i) const noexcept {
    return table == Table::patterns
               ? *reinterpret_cast<Entry*>(base_ + geometry_.patterns_offset +
                                           std::uint64_t{i} * geometry_.entry_size_pattern)
               : *reinterpret_cast<Entry*>(base_ + geometry_.channels_offset +
                                           std::uint64_t{i} * geometry_.entry_size_channel);
  }
  [[nodiscard]] char* entry_name(Table table, std::uint32_t i) const noexcept {
    return reinterpret_cast<char*>(&entry(table, i)) + sizeof(Entry);
  }
  [[nodiscard]] std::uint32_t entry_size(Table table) const noexcept {
    return table == Table::patterns ? geometry_.entry_size_pattern : geometry_.entry_size_channel;
  }
  [[nodiscard]] std::uint32_t entry_slots(Table table) const noexcept {
    return table == Table::patterns ? geometry_.pattern_slots : geometry_.channel_slots;
  }
  [[nodiscard]] std::uint32_t max_name(Table table) const noexcept {
    return table == Table::patterns ? limits_.max_pattern : limits_.max_channel;
  }
  [[nodiscard]] Node& node(std::uint32_t i) const noexcept {
    return reinterpret_cast<Node*>(base_ + geometry_.nodes_offset)[i];
  }

  /// Sets `out` to the entry's name and returns true if its recorded length is within limits.
  [[nodiscard]] bool entry_name_view(Table table, std::uint32_t i,
                                     std::string_view& out) const noexcept;

 protected:
  std::byte* base_;
  BusLimits limits_;
  ControlGeometry geometry_;
};

/// A control segment whose geometry was checked against its size.
class ControlView : public Tables {
 public:
  /// Throws std::runtime_error if the limits are absurd or the tables do not fit the segment.
  explicit ControlView(Segment segment);

  [[nodiscard]] BusHeader& header() const noexcept {
    return *reinterpret_cast<BusHeader*>(base_ + kBusHeaderOffset);
  }
  [[nodiscard]] Segment& segment() noexcept { return segment_; }
  /// The route version of a bucket; `bucket` is below geometry().route_buckets.
  [[nodiscard]] std::atomic<std::uint64_t>& route_version(std::uint32_t bucket) const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base_ +
                                                         geometry_.route_versions_offset)[bucket];
  }
  /// The route version a publish on a channel of this name hash checks.
  [[nodiscard]] std::atomic<std::uint64_t>& route_version_of(std::uint32_t hash) const noexcept {
    return route_version(route_bucket(hash, geometry_.route_buckets));
  }
  /// Mode and group for the bus's ring segments, as read when the view was made; the mode
  /// keeps owner and group bits only, whatever the segment holds.
  [[nodiscard]] mode_t segment_mode() const noexcept { return segment_mode_; }
  [[nodiscard]] std::optional<gid_t> segment_group() const noexcept { return segment_group_; }

 private:
  ControlView(Segment&& segment, const BusLimits& limits);

  Segment segment_;
  mode_t segment_mode_ = 0600;
  std::optional<gid_t> segment_group_;
};

/// Reads a plain field of shared memory that another process may be rewriting: one whole load,
/// so a bounds check and the use after it see the same value (a plain field may be reloaded).
template <class T>
[[nodiscard]] T read_once(const T& field) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_relaxed);
}

/// Calls f(node index) along the node list that starts at `first` (an Entry's `first`) until f
/// returns false: through valid indices only, and for at most node_count steps, so even a
/// corrupt list ends. Each link is read once before f runs, so f may rewrite the node it gets.
/// True if the walk reached the list's end, false if f or an invalid link stopped it first.
template <class F>
bool walk_nodes(const Tables& tables, std::uint32_t first, F&& f) {
  const std::uint32_t count = tables.geometry().node_count;
  std::uint32_t next = first;
  for (std::uint32_t steps = 0; next != kNoNode && next <= count && steps < count; ++steps) {
    const std::uint32_t index = next - 1;
    next = read_once(tables.node(index).next);
    if (!f(index)) return false;
  }
  return next == kNoNode;
}

/// True while the coordinator recorded in the bus runs.
[[nodiscard]] bool coordinator_running(const ControlView& view) noexcept;

/// How long read_registry tries before it gives up on a live coordinator's registry: far
/// longer than any write of the coordinator, so only an overwritten version lasts this long.
inline constexpr std::chrono::seconds kRegistryPatience{1};

/// Runs `read` until it saw the registry between two equal, even versions of the seqlock, and
/// returns true with that version. It waits while the coordinator lives, up to
/// kRegistryPatience; false if the coordinator died in the middle of a write, or if the version
/// stayed odd or kept moving that long (overwritten): callers then keep what they had.
template <class F>
bool read_registry(const ControlView& view, F&& read, std::uint64_t& version) {
  auto& seq = view.header().routing_version;
  std::chrono::steady_clock::time_point since{};
  for (std::uint64_t attempt = 1;; ++attempt) {
    const std::uint64_t before = seq.load(std::memory_order_acquire);
    if ((before & 1U) == 0) {
      read();
      std::atomic_thread_fence(std::memory_order_acquire);
      if (seq.load(std::memory_order_relaxed) == before) {
        version = before;
        return true;
      }
    }
    if (attempt % 1024 == 0) std::this_thread::yield();
    if (attempt % 65536 == 0) {
      if (!coordinator_running(view)) return false;
      const auto now = std::chrono::steady_clock::now();
      if (since == std::chrono::steady_clock::time_point{}) {
        since = now;
      } else if (now - since > kRegistryPatience) {
        return false;
      }
    }
    cpu_relax();
  }
}

/// Where one publish on a channel goes: a client's ring, and the subscription that routed it.
struct Target {
  std::uint32_t slot;
  std::uint32_t generation;
  std::uint32_t sid;
  Table table;  // patterns: the message goes out as a pmessage
};

/// Compiled patterns by pattern-table index, recompiled when the text at an index changes.
class GlobCache {
 public:
  const Glob& get(std::uint32_t index, std::string_view pattern);

 private:
  std::unordered_map<std::uint32_t, Glob> globs_;
};

/// Finds a name in the channel or pattern table; returns its index or -1. Call inside
/// read_registry (or as the coordinator, on its own record).
[[nodiscard]] std::int64_t find_entry(const Tables& tables, Table table,
                                      std::string_view name) noexcept;

/// The targets of a publish on `channel`: its subscribers, then each matching pattern's, in
/// table order, at most node_count in all (more means corrupt lists). Call inside
/// read_registry.
void collect_targets(const ControlView& view, std::string_view channel, GlobCache& globs,
                     std::vector<Target>& out);

/// Names with their subscriber counts, of channels or of patterns. Call inside read_registry.
void collect_names(const ControlView& view, Table table,
                   std::vector<std::pair<std::string, std::uint32_t>>& out);

}  // namespace shmcast::detail
