// Inspection: what the registry and the client table say about a bus, read without asking
// its coordinator (Bus::stats(), inspect(), channels(), numsub(), numpat()).
#include <algorithm>
#include <string>
#include <vector>

#include "client.hpp"
#include "glob.hpp"
#include "shmcast/stats.hpp"

namespace shmcast {

std::vector<std::string> Bus::channels() const {
  std::vector<std::pair<std::string, std::uint32_t>> names;
  detail::read_registry_within(*state_->view, state_->name, state_->options.request_timeout, [&] {
    detail::collect_names(*state_->view, detail::Table::channels, names);
  });
  std::vector<std::string> out;
  for (auto& [name, count] : names) {
    if (count > 0) out.push_back(std::move(name));
  }
  return out;
}

std::vector<std::string> Bus::channels(std::string_view pattern) const {
  const detail::Glob glob(pattern);
  std::vector<std::string> all = channels();
  std::erase_if(all, [&](const std::string& c) { return !glob.match(c); });
  return all;
}

std::vector<std::pair<std::string, std::size_t>> Bus::numsub(
    std::span<const std::string> names) const {
  std::vector<std::pair<std::string, std::size_t>> out;
  detail::read_registry_within(*state_->view, state_->name, state_->options.request_timeout, [&] {
    out.clear();
    for (const std::string& name : names) {
      const std::int64_t i = detail::find_entry(*state_->view, detail::Table::channels, name);
      out.emplace_back(name, i < 0 ? 0
                                   : detail::read_once(state_->view
                                                           ->entry(detail::Table::channels,
                                                                   static_cast<std::uint32_t>(i))
                                                           .count));
    }
  });
  return out;
}

std::size_t Bus::numpat() const {
  return state_->view->header().pattern_count.load(std::memory_order_acquire);
}

namespace {

// `patience`: how long a registry caught in the middle of an update is read again.
BusStats snapshot(const std::string& bus, detail::ControlView& view,
                  std::chrono::milliseconds patience) {
  BusStats st;
  st.bus = bus;
  const detail::BusHeader& h = view.header();
  // One load of each, so the pid shown is the one found alive or dead.
  st.coordinator_pid = h.coordinator_pid.load();
  st.coordinator_alive =
      detail::process_alive(st.coordinator_pid, h.coordinator_start_ticks.load());
  const std::uint64_t started = h.coordinator_started_ns.load();
  const std::uint64_t now = detail::realtime_ns();
  st.uptime_ms = now > started ? (now - started) / 1'000'000 : 0;
  st.routing_version = h.routing_version.load();
  st.reaped = h.deaths.load();
  st.limits = detail::to_limits(view.limits());
  st.registry_bytes = view.geometry().total;
  st.bytes_per_channel = view.geometry().entry_size_channel * 2;  // tables are kept half empty
  st.bytes_per_subscription = sizeof(detail::Node);
  std::vector<std::pair<std::string, std::uint32_t>> names;
  detail::read_registry_within(
      view, bus, patience, [&] { detail::collect_names(view, detail::Table::channels, names); });
  for (auto& [name, count] : names) st.channels.push_back({std::move(name), count});
  detail::read_registry_within(
      view, bus, patience, [&] { detail::collect_names(view, detail::Table::patterns, names); });
  for (auto& [name, count] : names) st.patterns.push_back({std::move(name), count});
  for (std::uint32_t i = 0; i < view.limits().max_clients; ++i) {
    const detail::ClientSlot& s = view.slot(i);
    if (s.state.load() != static_cast<std::uint32_t>(detail::SlotState::live)) continue;
    ClientStat c;
    c.slot = i;
    c.pid = s.pid.load();
    c.subscriptions = s.subscriptions.load();
    if (s.has_ring.load() != 0) {
      try {
        detail::Segment ring =
            detail::Segment::open(detail::ring_name(bus, i, s.generation.load()),
                                  detail::SegmentKind::ring, detail::kLayoutVersion);
        const auto& layout =
            *reinterpret_cast<const detail::RingLayout*>(ring.base() + detail::kSegmentHeaderSize);
        c.ring_bytes = layout.capacity;
        const std::uint64_t tail = layout.tail.load();
        const std::uint64_t head = layout.head.load();
        c.ring_used = tail >= head ? std::min<std::uint64_t>(tail - head, c.ring_bytes) : 0;
        c.delivered = layout.read.load();
        c.dropped = layout.dropped.load();
      } catch (const std::exception&) {
        // Its client left between the two reads.
      }
    }
    const detail::Hold* holds = view.holds(i);
    for (std::uint32_t k = 0; k < view.limits().max_holds; ++k) {
      if (holds[k].state.load(std::memory_order_relaxed) == detail::kHoldHeld) ++c.holds;
    }
    st.clients.push_back(c);
  }
  for (const auto& [slot, id] : detail::find_pools(bus, std::nullopt)) {
    try {
      const detail::PoolView pool(bus, slot, id);
      PoolStat p;
      p.slot = slot;
      p.pool_id = id;
      p.owner_pid = pool.header().owner_pid;
      p.owner_attached = std::any_of(st.clients.begin(), st.clients.end(), [&](const auto& c) {
        return c.slot == slot && c.pid == p.owner_pid;
      });
      p.bytes = pool.bytes();
      const auto use = pool.use();
      p.chunks_in_use = use.chunks;
      p.bytes_in_use = use.bytes;
      st.pools.push_back(p);
    } catch (const std::exception&) {
      // Removed, or not a pool: nothing to show.
    }
  }
  return st;
}

}  // namespace

BusStats Bus::stats() const {
  return snapshot(state_->name, *state_->view, state_->options.request_timeout);
}

BusStats inspect(std::string_view bus_name) {
  std::string bus = bus_name.empty() ? default_bus_name() : std::string(bus_name);
  auto view = detail::open_control(bus);
  // An inspector does not wait: one read, as patient as read_registry is.
  return snapshot(bus, *view, std::chrono::milliseconds(0));
}

}  // namespace shmcast
