// The registry's one writer, under the seqlock of the routing version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "registry.hpp"

namespace shmcast::daemon {

/// Writes the registry (channel, pattern and node tables, the header's counters, the routing
/// version and the route versions) and keeps the record of what it wrote: every write goes to
/// its private copy of the tables first, then the same bytes to shared memory, and the route
/// versions of the buckets a write moves are raised before the seqlock closes. Every registry
/// decision reads the private copy, never the shared one, which anything able to write the
/// segment may have overwritten; the coordinator's audit compares the shared copy with this
/// record and puts back what differs through the store_ functions. Used by the coordinator's
/// thread only.
class RegistryWriter {
 public:
  /// Takes the tables of `view` as they are as its record: a new bus's empty ones, or an
  /// adopted bus's, which adopt() then checks. `bus` names the bus in the log.
  RegistryWriter(detail::ControlView& view, std::string bus);
  RegistryWriter(const RegistryWriter&) = delete;
  RegistryWriter& operator=(const RegistryWriter&) = delete;

  /// For an adopted bus: closes the seqlock (the previous coordinator may have died inside a
  /// write) on a version no publisher has cached, moves every route version past any value a
  /// publisher may hold, keeps of the tables only what passes every check, with subscriptions of
  /// the clients in `may_subscribe` only, and writes the result to the segment.
  void adopt(const std::vector<bool>& may_subscribe);

  /// The seqlock: odd from begin_write() to end_write(), which also raises the route versions
  /// the write moved.
  void begin_write();
  void end_write();

  /// Requests of the client in `slot`, each a write of its own.
  detail::Status subscribe(std::uint32_t slot, detail::Table table, std::uint32_t sid,
                           std::string_view name);
  detail::Status unsubscribe(std::uint32_t slot, detail::Table table, std::string_view name);
  /// Unlinks every subscription of the client in `slot`, inside a write; returns how many.
  std::uint32_t drop_subscriptions(std::uint32_t slot);
  /// The subscriptions the client in `slot` holds.
  [[nodiscard]] std::uint32_t subscriptions(std::uint32_t slot) const noexcept {
    return static_cast<std::uint32_t>(nodes_of_[slot].size());
  }
  /// Counts a client whose process died (the header's `deaths`).
  void count_death();

  [[nodiscard]] std::uint32_t channels() const noexcept { return channels_; }
  [[nodiscard]] std::uint32_t patterns() const noexcept { return patterns_; }
  [[nodiscard]] std::uint32_t nodes_used() const noexcept;
  [[nodiscard]] std::uint64_t deaths() const noexcept { return deaths_; }
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }
  [[nodiscard]] std::uint64_t route_version(std::uint32_t bucket) const noexcept {
    return route_versions_[bucket];
  }
  [[nodiscard]] std::uint32_t route_buckets() const noexcept {
    return static_cast<std::uint32_t>(route_versions_.size());
  }

  /// The record: the tables as this writer wrote them, laid out as in the segment from the
  /// channel table on (record()), byte for byte (image()), and the shared bytes it mirrors.
  [[nodiscard]] const detail::Tables& record() const noexcept { return *mine_; }
  [[nodiscard]] std::span<const std::byte> image() const noexcept { return image_; }
  [[nodiscard]] const std::byte* shared_tables() const noexcept;

  // Repairs, for the audit.
  /// Every route may have changed in the write under way: end_write() raises every version.
  void move_all_routes() noexcept { all_routes_moved_ = true; }
  /// Puts the record's entry, node, or bytes [from, to) of the image back into the segment.
  void store_entry(detail::Table table, std::uint32_t index);
  void store_node(std::uint32_t index);
  void store_bytes(std::size_t from, std::size_t to);
  /// Puts the counters back, in a write that moves every route.
  void restore_counts();
  /// Moves the routing version past `found` (what the segment held instead of version()) and
  /// every route version on; returns the version set.
  std::uint64_t restore_version(std::uint64_t found);
  /// Raises a route version past the record and past whatever the shared word holds.
  void raise_route_version(std::uint32_t bucket);

 private:
  std::byte* shared() const noexcept;
  // Records that the routes of `hash`'s bucket (of every channel, for a pattern) may change in
  // the current write; end_write raises their route versions.
  void routes_moved(detail::Table table, std::uint32_t hash);
  void store_route_versions();
  void restart_route_versions();
  std::int64_t insert_entry(detail::Table table, std::string_view name);
  void erase_entry(detail::Table table, std::uint32_t index);
  void unlink_node(std::uint32_t node);
  void store_counts();
  void rebuild(const std::vector<bool>& may_subscribe);
  void index_nodes();
  std::uint32_t& entries(detail::Table table) noexcept {
    return table == detail::Table::patterns ? patterns_ : channels_;
  }

  detail::ControlView& view_;
  std::string bus_;
  // The channel, pattern and node tables as this writer wrote them, byte for byte.
  std::vector<std::byte> image_;
  std::unique_ptr<detail::Tables> mine_;
  std::vector<std::uint32_t> free_nodes_;
  // Each client slot's subscription nodes, so removing a client costs its own subscriptions,
  // not a scan of the node table inside the seqlock.
  std::vector<std::vector<std::uint32_t>> nodes_of_;
  std::uint64_t version_ = 0;
  // The route versions as this writer stored them, and those the write under way moves.
  std::vector<std::uint64_t> route_versions_;
  std::vector<std::uint32_t> moved_buckets_;
  bool all_routes_moved_ = false;
  std::uint32_t channels_ = 0;
  std::uint32_t patterns_ = 0;
  std::uint64_t deaths_ = 0;
};

}  // namespace shmcast::daemon
