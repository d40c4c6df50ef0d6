// The coordinator's audit: the shared header, client slots and registry tables compared with
// its own record, what differs rewritten from the record, and the repair lines within budget.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "audit.hpp"
#include "coordinator.hpp"

namespace shmcast::daemon {

using detail::BusHeader;
using detail::ClientSlot;
using detail::Node;
using detail::SlotState;
using detail::Table;

std::optional<std::string> RepairLog::admit(std::string_view kind, std::string line,
                                            std::chrono::steady_clock::time_point now) {
  auto [it, inserted] = budgets_.try_emplace(std::string(kind));
  Budget& b = it->second;
  if (inserted) b.refilled = now;
  // One line back per kInterval passed, up to kBurst.
  const auto periods =
      now > b.refilled ? static_cast<std::uint64_t>((now - b.refilled) / kInterval) : 0;
  if (periods > 0) {
    b.lines = static_cast<std::uint32_t>(std::min<std::uint64_t>(kBurst, b.lines + periods));
    b.refilled += periods * kInterval;
  }
  if (b.lines == 0) {
    ++b.left_out;
    return std::nullopt;
  }
  --b.lines;
  if (b.left_out > 0) {
    line += fmt::format(" ({} more like this were not logged before it)", b.left_out);
    b.left_out = 0;
  }
  return line;
}

void Coordinator::log_repair(std::string_view kind, std::string line) {
  if (auto admitted = repair_log_.admit(kind, std::move(line), std::chrono::steady_clock::now())) {
    log_line(options_.bus, *admitted);
  }
}

void Coordinator::audit_header() {
  std::byte* base = view_->segment().base();
  if (std::memcmp(base, fixed_header_.data(), kFixedHeaderBytes) != 0) {
    std::memcpy(base, fixed_header_.data(), kFixedHeaderBytes);
    log_repair("header",
               "repaired bus header: the segment header, limits or table geometry were "
               "overwritten; rewritten from the coordinator's copy");
  }
  BusHeader& h = view_->header();
  if (h.coordinator_pid.load() != getpid() || h.coordinator_start_ticks.load() != start_ticks_ ||
      h.coordinator_started_ns.load() != started_ns_ || h.created_ns.load() != created_ns_) {
    h.coordinator_start_ticks.store(start_ticks_);
    h.coordinator_started_ns.store(started_ns_);
    h.created_ns.store(created_ns_);
    h.coordinator_pid.store(getpid(), std::memory_order_release);
    log_repair("identity",
               "repaired bus header: the coordinator's pid and start time were overwritten");
  }
  const std::uint64_t version = h.routing_version.load(std::memory_order_relaxed);
  if (version != writer_->version()) {
    const std::uint64_t set = writer_->restore_version(version);
    log_repair("version", fmt::format("repaired routing version: found {}; set to {}, so every "
                                      "publisher re-reads the registry",
                                      version, set));
  }
  const RegistryWriter& w = *writer_;
  const std::uint32_t used = w.nodes_used();
  // Each counter is read once, so the log shows the values that failed the check.
  const std::uint32_t channels = h.channel_count.load();
  const std::uint32_t patterns = h.pattern_count.load();
  const std::uint32_t nodes = h.node_used.load();
  const std::uint64_t deaths = h.deaths.load();
  if (channels != w.channels() || patterns != w.patterns() || nodes != used ||
      deaths != w.deaths()) {
    log_repair("counters",
               fmt::format("repaired registry counters: found {} channels, {} patterns, {} "
                           "subscriptions, {} deaths; the coordinator holds {}, {}, {}, {}",
                           channels, patterns, nodes, deaths, w.channels(), w.patterns(), used,
                           w.deaths()));
    writer_->restore_counts();
  }
  audit_route_versions();
}

// A route version set back to a value a publisher cached for an older route keeps that
// publisher on the older route, and one set to a value the coordinator will store next makes
// the next change invisible to it. Each word that differs from the record is raised past both
// values in this pass, so such a route lasts until the next pass (kAuditStep at most); values set
// ahead of the record only cost publishers a resolve.
void Coordinator::audit_route_versions() {
  std::uint32_t repaired = 0;
  std::int64_t first = -1;
  for (std::uint32_t b = 0; b < writer_->route_buckets(); ++b) {
    if (view_->route_version(b).load(std::memory_order_relaxed) == writer_->route_version(b)) {
      continue;
    }
    writer_->raise_route_version(b);
    if (first < 0) first = b;
    ++repaired;
  }
  if (repaired > 0) {
    log_repair("route versions",
               fmt::format("repaired {} route versions overwritten in shared memory (first: bucket "
                           "{}); publishers of their channels re-read the registry",
                           repaired, first));
  }
}

void Coordinator::audit_slot(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  Client& c = clients_[slot];
  std::string found;  // each field is read once, so this shows the values that failed the check
  if (const std::uint32_t generation = s.generation.load(); generation != c.generation) {
    found += fmt::format(" generation {}", generation);
    // Publishers name rings by the generation they read from the registry, so any route
    // resolved meanwhile may miss this client's ring.
    writer_->begin_write();
    s.generation.store(c.generation);
    writer_->move_all_routes();
    writer_->end_write();
  }
  const std::uint32_t state = s.state.load(std::memory_order_acquire);
  if (c.pidfd >= 0) {
    // Attached: only the client's own detach may change its state.
    if (state != state_of(SlotState::live) && state != state_of(SlotState::detached)) {
      found += fmt::format(" state {}", state);
      s.state.store(state_of(SlotState::live), std::memory_order_release);
    }
    if (const pid_t pid = s.pid.load(); pid != c.pid) {
      found += fmt::format(" pid {}", pid);
      s.pid.store(c.pid);
    }
    if (const std::uint64_t ticks = s.start_ticks.load(); ticks != c.start_ticks) {
      found += fmt::format(" start time {}", ticks);
      s.start_ticks.store(c.start_ticks);
    }
    if (const std::uint32_t flag = s.has_ring.load(); (flag != 0) != c.has_ring) {
      found += fmt::format(" ring flag {}", flag);
      s.has_ring.store(c.has_ring ? 1 : 0);
    }
    const std::uint32_t held = writer_->subscriptions(slot);
    if (const std::uint32_t count = s.subscriptions.load(); count != held) {
      found += fmt::format(" subscriptions {}", count);
      s.subscriptions.store(held);
    }
  } else if (state == state_of(SlotState::live) || state > state_of(SlotState::detached)) {
    // Live without an attach, or no state at all: a client may be claiming it, so it goes back
    // to claimed (its attach still works) while its pid runs, and is freed otherwise.
    const pid_t pid = s.pid.load();
    const bool running = pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
    s.state.store(state_of(running ? SlotState::claimed : SlotState::free),
                  std::memory_order_release);
    if (!running) s.pid.store(0, std::memory_order_release);
    log_repair("slot state",
               fmt::format("quarantined client slot {}: state {} but never attached; {}", slot,
                           state, running ? "back to claimed" : "freed"));
  }
  if (!found.empty()) {
    log_repair("slot",
               fmt::format("repaired client slot {} (pid {}):{} overwritten", slot, c.pid, found));
  }
}

// Compares the next slice of the tables with the record and rewrites every entry or node in it
// that differs.
void Coordinator::audit_tables() {
  const std::span<const std::byte> image = writer_->image();
  const detail::Tables& mine = writer_->record();
  const std::size_t lo = audit_cursor_;
  const std::size_t hi = std::min(image.size(), lo + kAuditSlice);
  audit_cursor_ = hi == image.size() ? 0 : hi;
  const std::byte* shared = writer_->shared_tables();
  if (std::memcmp(shared + lo, image.data() + lo, hi - lo) == 0) return;
  bool writing = false;
  // Whatever a publisher resolved from the overwritten part may be wrong, for any channel.
  const auto write = [&] {
    if (!writing) writer_->begin_write();
    writing = true;
    writer_->move_all_routes();
  };
  // The indices of the `count` items of `size` bytes from `offset` in the record that overlap
  // the slice.
  const auto overlap = [&](const void* first_item, std::size_t size, std::uint32_t count) {
    const auto offset =
        static_cast<std::size_t>(static_cast<const std::byte*>(first_item) - image.data());
    const std::size_t end = offset + size * count;
    if (hi <= offset || lo >= end) return std::pair<std::uint32_t, std::uint32_t>{0, 0};
    const std::size_t from = lo > offset ? (lo - offset) / size : 0;
    const std::size_t to = std::min<std::size_t>(count, (hi - offset + size - 1) / size);
    return std::pair{static_cast<std::uint32_t>(from), static_cast<std::uint32_t>(to)};
  };
  for (const Table table : detail::kTables) {
    std::uint32_t repaired = 0;
    std::int64_t first = -1;
    const std::uint32_t size = mine.entry_size(table);
    const auto [from, to] = overlap(&mine.entry(table, 0), size, mine.entry_slots(table));
    for (std::uint32_t i = from; i < to; ++i) {
      if (std::memcmp(&view_->entry(table, i), &mine.entry(table, i), size) == 0) continue;
      write();
      writer_->store_entry(table, i);
      if (first < 0) first = i;
      ++repaired;
    }
    if (repaired == 0) continue;
    std::string_view name;
    const auto at = static_cast<std::uint32_t>(first);
    const bool named = mine.entry(table, at).used != 0 && mine.entry_name_view(table, at, name);
    log_repair(detail::table_noun(table),
               fmt::format("repaired {} {} table entries overwritten in shared memory "
                           "(first: index {}{})",
                           repaired, detail::table_noun(table), first,
                           named ? fmt::format(", '{}'", name) : std::string(", unused")));
  }
  std::uint32_t repaired = 0;
  std::int64_t first = -1;
  const auto [from, to] = overlap(&mine.node(0), sizeof(Node), mine.geometry().node_count);
  for (std::uint32_t i = from; i < to; ++i) {
    if (std::memcmp(&view_->node(i), &mine.node(i), sizeof(Node)) == 0) continue;
    write();
    writer_->store_node(i);
    if (first < 0) first = i;
    ++repaired;
  }
  if (repaired > 0) {
    log_repair("nodes", fmt::format("repaired {} subscription nodes overwritten in shared memory "
                                    "(first: node {})",
                                    repaired, first));
  }
  // Padding between the tables: not read by anyone, but the copies stay identical.
  if (std::memcmp(shared + lo, image.data() + lo, hi - lo) != 0) {
    write();
    writer_->store_bytes(lo, hi);
  }
  if (writing) writer_->end_write();
}

}  // namespace shmcast::daemon
