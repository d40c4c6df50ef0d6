#include "registry.hpp"

#include <cstring>
#include <stdexcept>

#include "process.hpp"

namespace shmcast::detail {

namespace {

BusLimits checked_limits(const Segment& segment) {
  if (segment.size() < kBusHeaderOffset + sizeof(BusHeader)) {
    throw std::runtime_error("control segment " + segment.name() + " is too small for its header");
  }
  const auto& header = *reinterpret_cast<const BusHeader*>(segment.base() + kBusHeaderOffset);
  BusLimits l = header.limits;
  const bool sane = l.max_clients >= 1 && l.max_clients <= kMaxClientsBound &&
                    l.max_channel <= kMaxNameBound && l.max_pattern <= kMaxNameBound &&
                    l.max_channels <= kMaxNamesBound && l.max_patterns <= kMaxNamesBound &&
                    l.max_total_subscriptions <= kMaxTotalSubscriptionsBound &&
                    l.ring_bytes >= kRingMinCapacity && l.ring_bytes <= kRingMaxCapacity &&
                    (l.ring_bytes & (l.ring_bytes - 1)) == 0 &&
                    max_frame(l) <= ring_max_payload(l.ring_bytes) &&
                    l.max_holds >= 1 && l.max_holds <= kMaxHoldsBound &&
                    l.pool_bytes <= kMaxPoolBytesBound && l.max_unread_loan_bytes >= kPoolBlock;
  if (!sane)
    throw std::runtime_error("control segment " + segment.name() + " holds invalid limits");
  return l;
}

}  // namespace

// The limits are read from shared memory once: geometry and limits come from the same copy.
ControlView::ControlView(Segment segment)
    : ControlView(std::move(segment), checked_limits(segment)) {}

ControlView::ControlView(Segment&& segment, const BusLimits& limits)
    : Tables(segment.base(), limits, control_geometry(limits)), segment_(std::move(segment)) {
  const BusHeader& h = header();
  if (h.slot_size != geometry_.slot_size || h.channel_slots != geometry_.channel_slots ||
      h.pattern_slots != geometry_.pattern_slots || h.node_count != geometry_.node_count ||
      h.route_buckets != geometry_.route_buckets ||
      h.route_versions_offset != geometry_.route_versions_offset ||
      h.clients_offset != geometry_.clients_offset ||
      h.channels_offset != geometry_.channels_offset ||
      h.patterns_offset != geometry_.patterns_offset || h.nodes_offset != geometry_.nodes_offset ||
      geometry_.total > segment_.size()) {
    throw std::runtime_error("control segment " + segment_.name() + " has inconsistent tables");
  }
  // Never world access, whatever another process wrote there.
  segment_mode_ = static_cast<mode_t>(read_once(h.segment_mode) & 0770U);
  const std::int32_t gid = read_once(h.segment_gid);
  if (gid >= 0) segment_group_ = static_cast<gid_t>(gid);
}

bool Tables::entry_name_view(Table table, std::uint32_t i, std::string_view& out) const noexcept {
  const std::uint32_t len = read_once(entry(table, i).name_len);
  if (len > max_name(table)) return false;
  out = std::string_view(entry_name(table, i), len);
  return true;
}

const Glob& GlobCache::get(std::uint32_t index, std::string_view pattern) {
  auto it = globs_.find(index);
  if (it == globs_.end() || it->second.pattern() != pattern) {
    it = globs_.insert_or_assign(index, Glob(pattern)).first;
  }
  return it->second;
}

std::int64_t find_entry(const Tables& view, Table table, std::string_view name) noexcept {
  const std::uint32_t slots = view.entry_slots(table);
  const std::uint32_t hash = name_hash(name);
  std::uint32_t i = hash & (slots - 1);
  for (std::uint32_t probe = 0; probe < slots; ++probe, i = (i + 1) & (slots - 1)) {
    const Entry& e = view.entry(table, i);
    if (read_once(e.used) == 0) return -1;
    std::string_view stored;
    if (read_once(e.hash) == hash && view.entry_name_view(table, i, stored) && stored == name)
      return i;
  }
  return -1;
}

namespace {

// Adds the entry's subscribers; the bus holds at most node_count subscriptions, so corrupt
// lists that share nodes cannot grow `out` past that.
void add_targets(const ControlView& view, const Entry& e, Table table, std::vector<Target>& out) {
  const std::uint32_t most = view.geometry().node_count;
  walk_nodes(view, read_once(e.first), [&](std::uint32_t index) {
    // Each field read once: the coordinator may be rewriting the node meanwhile.
    const Node& n = view.node(index);
    const std::uint32_t client = read_once(n.client);
    if (client >= view.limits().max_clients || out.size() >= most) return true;
    const std::uint32_t generation = view.slot(client).generation.load(std::memory_order_relaxed);
    out.push_back({client, generation, read_once(n.sid), table});
    return true;
  });
}

}  // namespace

void collect_targets(const ControlView& view, std::string_view channel, GlobCache& globs,
                     std::vector<Target>& out) {
  out.clear();
  const std::int64_t ch = find_entry(view, Table::channels, channel);
  if (ch >= 0) {
    add_targets(view, view.entry(Table::channels, static_cast<std::uint32_t>(ch)), Table::channels,
                out);
  }
  if (view.header().pattern_count.load(std::memory_order_relaxed) == 0) return;
  for (std::uint32_t i = 0; i < view.geometry().pattern_slots; ++i) {
    const Entry& e = view.entry(Table::patterns, i);
    std::string_view pattern;
    if (read_once(e.used) == 0 || !view.entry_name_view(Table::patterns, i, pattern)) continue;
    if (globs.get(i, pattern).match(channel)) add_targets(view, e, Table::patterns, out);
  }
}

void collect_names(const ControlView& view, Table table,
                   std::vector<std::pair<std::string, std::uint32_t>>& out) {
  out.clear();
  for (std::uint32_t i = 0; i < view.entry_slots(table); ++i) {
    const Entry& e = view.entry(table, i);
    std::string_view name;
    if (read_once(e.used) == 0 || !view.entry_name_view(table, i, name)) continue;
    out.emplace_back(std::string(name), read_once(e.count));
  }
}

bool coordinator_running(const ControlView& view) noexcept {
  const BusHeader& h = view.header();
  return process_alive(h.coordinator_pid.load(std::memory_order_acquire),
                       h.coordinator_start_ticks.load(std::memory_order_acquire));
}

}  // namespace shmcast::detail
