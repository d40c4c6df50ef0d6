#include "registry_writer.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>

#include "coordinator.hpp"  // log_line
#include "futex.hpp"

namespace shmcast::daemon {

using detail::BusHeader;
using detail::Entry;
using detail::kFreeNode;
using detail::kNoNode;
using detail::kPatternEntryBit;
using detail::Node;
using detail::Status;
using detail::Table;

namespace {

// The geometry of the private record: the same tables, starting at offset 0.
detail::ControlGeometry record_geometry(const detail::ControlGeometry& g) {
  detail::ControlGeometry r = g;
  r.clients_offset = 0;  // the record holds no client table
  r.channels_offset = 0;
  r.patterns_offset = g.patterns_offset - g.channels_offset;
  r.nodes_offset = g.nodes_offset - g.channels_offset;
  r.total = g.total - g.channels_offset;
  return r;
}

}  // namespace

RegistryWriter::RegistryWriter(detail::ControlView& view, std::string bus)
    : view_(view), bus_(std::move(bus)) {
  const detail::ControlGeometry& g = view_.geometry();
  image_.assign(g.total - g.channels_offset, std::byte{0});
  std::memcpy(image_.data(), shared(), image_.size());
  mine_ = std::make_unique<detail::Tables>(image_.data(), view_.limits(), record_geometry(g));
  route_versions_.assign(g.route_buckets, 0);
  nodes_of_.assign(view_.limits().max_clients, {});
  index_nodes();
}

std::byte* RegistryWriter::shared() const noexcept {
  return reinterpret_cast<std::byte*>(&view_.entry(Table::channels, 0));
}

const std::byte* RegistryWriter::shared_tables() const noexcept {
  return shared();
}

void RegistryWriter::adopt(const std::vector<bool>& may_subscribe) {
  BusHeader& h = view_.header();
  // Readers compare the count of deaths with one they saw earlier (a ring's stall policy), so
  // it goes on from the last coordinator's: back to 0 would look like deaths to them.
  deaths_ = h.deaths.load(std::memory_order_acquire);
  version_ = (h.routing_version.load() | 1U) + 1;
  h.routing_version.store(version_, std::memory_order_release);
  begin_write();
  restart_route_versions();
  rebuild(may_subscribe);
  store_bytes(0, image_.size());
  store_counts();
  end_write();
}

void RegistryWriter::begin_write() {
  ++version_;
  view_.header().routing_version.store(version_, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}

void RegistryWriter::end_write() {
  // Before the seqlock closes: a publisher that sees a version moved re-reads the registry and
  // waits for this write to end, and one that resolved without seeing it resolves again.
  store_route_versions();
  ++version_;
  view_.header().routing_version.store(version_, std::memory_order_release);
}

void RegistryWriter::routes_moved(Table table, std::uint32_t hash) {
  if (table == Table::patterns) {
    all_routes_moved_ = true;
  } else {
    moved_buckets_.push_back(detail::route_bucket(hash, view_.geometry().route_buckets));
  }
}

// Only ever raised, past the record and past whatever the shared word holds, so no value a
// publisher may have recorded is stored again.
void RegistryWriter::raise_route_version(std::uint32_t bucket) {
  std::atomic<std::uint64_t>& shared = view_.route_version(bucket);
  const std::uint64_t next =
      std::max(route_versions_[bucket], shared.load(std::memory_order_relaxed)) + 1;
  route_versions_[bucket] = next;
  shared.store(next, std::memory_order_release);
}

void RegistryWriter::store_route_versions() {
  if (all_routes_moved_) {
    for (std::uint32_t b = 0; b < route_versions_.size(); ++b) raise_route_version(b);
  } else {
    // Once per write, however many of its subscriptions a leaving client had in a bucket.
    std::sort(moved_buckets_.begin(), moved_buckets_.end());
    moved_buckets_.erase(std::unique(moved_buckets_.begin(), moved_buckets_.end()),
                         moved_buckets_.end());
    for (const std::uint32_t b : moved_buckets_) raise_route_version(b);
  }
  all_routes_moved_ = false;
  moved_buckets_.clear();
}

// An adopted bus's route versions are whatever the previous coordinator left, maybe overwritten
// since. A coordinator raises a version by one per registry write or audit pass at most, from 0
// or from a restart's clock reading, so the values it stores stay below the monotonic clock:
// every word goes past the clock and past every word the segment holds, to a value no publisher
// can have recorded.
void RegistryWriter::restart_route_versions() {
  std::uint64_t next = detail::monotonic_ns();
  const std::uint32_t buckets = view_.geometry().route_buckets;
  for (std::uint32_t b = 0; b < buckets; ++b) {
    next = std::max(next, view_.route_version(b).load(std::memory_order_relaxed) + 1);
  }
  route_versions_.assign(buckets, next);
  for (std::uint32_t b = 0; b < buckets; ++b) {
    view_.route_version(b).store(next, std::memory_order_release);
  }
}

void RegistryWriter::store_entry(Table table, std::uint32_t index) {
  std::memcpy(&view_.entry(table, index), &mine_->entry(table, index), mine_->entry_size(table));
}

void RegistryWriter::store_node(std::uint32_t index) {
  std::memcpy(&view_.node(index), &mine_->node(index), sizeof(Node));
}

void RegistryWriter::store_bytes(std::size_t from, std::size_t to) {
  std::memcpy(shared() + from, image_.data() + from, to - from);
}

std::uint32_t RegistryWriter::nodes_used() const noexcept {
  return mine_->geometry().node_count - static_cast<std::uint32_t>(free_nodes_.size());
}

void RegistryWriter::store_counts() {
  BusHeader& h = view_.header();
  h.channel_count.store(channels_, std::memory_order_relaxed);
  h.pattern_count.store(patterns_, std::memory_order_relaxed);
  h.node_used.store(nodes_used(), std::memory_order_relaxed);
  h.deaths.store(deaths_, std::memory_order_release);
}

void RegistryWriter::restore_counts() {
  begin_write();
  store_counts();
  // A pattern count of 0 lets a resolve skip the pattern table.
  all_routes_moved_ = true;
  end_write();
}

std::uint64_t RegistryWriter::restore_version(std::uint64_t found) {
  // Past both values, even: a closed seqlock that moved on for any reader under way.
  version_ = (std::max(found, version_) | 1U) + 1;
  // A publisher may have resolved a route while the seqlock did not guard the registry.
  all_routes_moved_ = true;
  store_route_versions();
  view_.header().routing_version.store(version_, std::memory_order_release);
  return version_;
}

void RegistryWriter::count_death() {
  ++deaths_;
  view_.header().deaths.store(deaths_, std::memory_order_release);
  // Subscribers sleep on this word too: a publisher that died between committing a record and
  // waking its reader left a wake-up nobody else will make.
  detail::futex_wake_all(detail::deaths_futex(view_.header()));
}

std::int64_t RegistryWriter::insert_entry(Table table, std::string_view name) {
  const std::uint32_t slots = mine_->entry_slots(table);
  const std::uint32_t hash = detail::name_hash(name);
  for (std::uint32_t probe = 0, i = hash & (slots - 1); probe < slots;
       ++probe, i = (i + 1) & (slots - 1)) {
    Entry& e = mine_->entry(table, i);
    if (e.used != 0) continue;
    e.hash = hash;
    e.name_len = static_cast<std::uint32_t>(name.size());
    e.first = kNoNode;
    e.count = 0;
    if (!name.empty()) std::memcpy(mine_->entry_name(table, i), name.data(), name.size());
    e.used = 1;
    store_entry(table, i);
    ++entries(table);
    store_counts();
    return i;
  }
  return -1;
}

// Backward-shift deletion keeps linear probing free of tombstones.
void RegistryWriter::erase_entry(Table table, std::uint32_t index) {
  const std::uint32_t slots = mine_->entry_slots(table);
  const std::uint32_t mask = slots - 1;
  std::uint32_t hole = index;
  for (std::uint32_t step = 0, j = (hole + 1) & mask; step < slots; ++step, j = (j + 1) & mask) {
    Entry& e = mine_->entry(table, j);
    if (e.used == 0 || j == hole) break;
    const std::uint32_t home = e.hash & mask;
    // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    std::memcpy(&mine_->entry(table, hole), &e, mine_->entry_size(table));
    store_entry(table, hole);
    detail::walk_nodes(*mine_, mine_->entry(table, hole).first, [&](std::uint32_t n) {
      mine_->node(n).entry = detail::node_entry(table, hole);
      store_node(n);
      return true;
    });
    hole = j;
  }
  Entry& gone = mine_->entry(table, hole);
  gone.used = 0;
  gone.first = kNoNode;
  gone.count = 0;
  gone.name_len = 0;
  store_entry(table, hole);
  --entries(table);
  store_counts();
}

void RegistryWriter::unlink_node(std::uint32_t index) {
  Node& node = mine_->node(index);
  if (node.client == kFreeNode) return;
  const Table table = detail::table_of_node_entry(node.entry);
  const std::uint32_t entry_index = node.entry & ~kPatternEntryBit;
  if (node.client < nodes_of_.size()) std::erase(nodes_of_[node.client], index);
  const std::uint32_t next = node.next;
  node = Node{kFreeNode, 0, kNoNode, 0};
  store_node(index);
  free_nodes_.push_back(index);
  Entry& e = mine_->entry(table, entry_index);
  routes_moved(table, e.hash);
  if (e.first == index + 1) {
    e.first = next;
  } else {
    detail::walk_nodes(*mine_, e.first, [&](std::uint32_t n) {
      if (mine_->node(n).next != index + 1) return true;
      mine_->node(n).next = next;
      store_node(n);
      return false;
    });
  }
  if (e.count <= 1) {
    erase_entry(table, entry_index);
  } else {
    --e.count;
    store_entry(table, entry_index);
    store_counts();
  }
}

Status RegistryWriter::subscribe(std::uint32_t slot, Table table, std::uint32_t sid,
                                 std::string_view name) {
  std::vector<std::uint32_t>& held_nodes = nodes_of_[slot];
  std::int64_t index = detail::find_entry(*mine_, table, name);
  if (index >= 0) {
    // Subscribing again to what it holds changes nothing (a client's own copy says so too).
    bool held = false;
    detail::walk_nodes(*mine_, mine_->entry(table, static_cast<std::uint32_t>(index)).first,
                       [&](std::uint32_t n) {
                         held = mine_->node(n).client == slot;
                         return !held;
                       });
    if (held) return Status::ok;
  }
  if (held_nodes.size() >= view_.limits().max_subscriptions) return Status::too_many_subscriptions;
  if (free_nodes_.empty()) return Status::registry_full;
  const std::uint32_t max_entries =
      table == Table::patterns ? view_.limits().max_patterns : view_.limits().max_channels;
  if (index < 0 && entries(table) >= max_entries) return Status::registry_full;

  begin_write();
  if (index < 0) index = insert_entry(table, name);
  const std::uint32_t node_index = free_nodes_.back();
  free_nodes_.pop_back();
  const auto entry_index = static_cast<std::uint32_t>(index);
  Entry& e = mine_->entry(table, entry_index);
  mine_->node(node_index) = Node{slot, sid, e.first, detail::node_entry(table, entry_index)};
  store_node(node_index);
  e.first = node_index + 1;
  ++e.count;
  store_entry(table, entry_index);
  routes_moved(table, e.hash);
  held_nodes.push_back(node_index);
  store_counts();
  view_.slot(slot).subscriptions.store(subscriptions(slot));
  end_write();
  return Status::ok;
}

std::uint32_t RegistryWriter::drop_subscriptions(std::uint32_t slot) {
  std::vector<std::uint32_t>& nodes = nodes_of_[slot];
  std::uint32_t dropped = 0;
  while (!nodes.empty()) {
    const std::uint32_t node = nodes.back();
    nodes.pop_back();
    unlink_node(node);
    ++dropped;
  }
  return dropped;
}

Status RegistryWriter::unsubscribe(std::uint32_t slot, Table table, std::string_view name) {
  const std::int64_t index = detail::find_entry(*mine_, table, name);
  if (index < 0) return Status::ok;
  std::int64_t held = -1;
  detail::walk_nodes(*mine_, mine_->entry(table, static_cast<std::uint32_t>(index)).first,
                     [&](std::uint32_t n) {
                       if (mine_->node(n).client == slot) held = n;
                       return held < 0;
                     });
  if (held >= 0) {
    begin_write();
    unlink_node(static_cast<std::uint32_t>(held));
    view_.slot(slot).subscriptions.store(subscriptions(slot));
    end_write();
  }
  return Status::ok;
}

// Keeps of the copied tables only what passes every check, and lays it out afresh: names
// within their limit, lists that end, nodes that point back at their entry and belong to a
// client that may hold subscriptions, one node per client and entry.
void RegistryWriter::rebuild(const std::vector<bool>& may_subscribe) {
  struct Kept {
    Table table;
    std::string name;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> subscribers;  // client, sid
  };
  const detail::Tables& t = *mine_;
  const std::uint32_t node_count = t.geometry().node_count;
  std::vector<Kept> kept;
  std::vector<bool> seen(node_count);
  std::uint32_t used_before = 0;
  for (std::uint32_t i = 0; i < node_count; ++i) used_before += t.node(i).client != kFreeNode;
  std::uint32_t kept_nodes = 0;
  std::uint32_t dropped_entries = 0;
  // listed_in[c] == serial: client c already has a node in the entry being walked.
  std::vector<std::uint32_t> listed_in(may_subscribe.size(), 0);
  std::uint32_t serial = 0;
  std::unordered_map<std::size_t, std::unordered_set<std::uint32_t>> merged_clients;
  for (const Table table : detail::kTables) {
    std::unordered_map<std::string, std::size_t> by_name;
    for (std::uint32_t i = 0; i < t.entry_slots(table); ++i) {
      const Entry& e = t.entry(table, i);
      if (e.used == 0) continue;
      std::string_view name;
      const char* problem = nullptr;
      if (e.used != 1) {
        problem = "its in-use flag holds garbage";
      } else if (!t.entry_name_view(table, i, name)) {
        problem = "its name length is over the limit";
      }
      std::vector<std::pair<std::uint32_t, std::uint32_t>> subscribers;
      ++serial;
      // A node seen before, in this list or another, ends the list: it is a loop or shared.
      const bool broken =
          problem == nullptr && !detail::walk_nodes(t, e.first, [&](std::uint32_t n) {
            if (seen[n]) return false;
            seen[n] = true;
            const Node& node = t.node(n);
            const bool valid = node.client < may_subscribe.size() && may_subscribe[node.client] &&
                               node.entry == detail::node_entry(table, i) &&
                               listed_in[node.client] != serial;
            if (valid) {
              listed_in[node.client] = serial;
              subscribers.emplace_back(node.client, node.sid);
            }
            return true;
          });
      if (problem == nullptr && subscribers.empty()) problem = "no valid subscription";
      if (problem != nullptr) {
        ++dropped_entries;
        log_line(bus_, fmt::format("quarantined {} entry {}: {}; dropped",
                                   detail::table_noun(table), i, problem));
        continue;
      }
      if (broken) {
        log_line(
            bus_,
            fmt::format("repaired {} '{}': its list ran into an invalid or repeated node; kept the "
                        "{} valid subscriptions before it",
                        detail::table_noun(table), name, subscribers.size()));
      }
      auto [it, inserted] = by_name.try_emplace(std::string(name), kept.size());
      if (inserted) {
        kept.push_back({table, std::string(name), std::move(subscribers)});
        continue;
      }
      log_line(bus_, fmt::format("repaired {} '{}': it was in the table twice; merged",
                                 detail::table_noun(table), name));
      auto& into = kept[it->second].subscribers;
      // The clients of a kept entry, made at its first merge and kept up since.
      auto [held, first_merge] = merged_clients.try_emplace(it->second);
      if (first_merge) {
        for (const auto& s : into) held->second.insert(s.first);
      }
      for (const auto& s : subscribers) {
        if (held->second.insert(s.first).second) into.push_back(s);
      }
    }
  }

  // Lay the kept registry out in an empty record: fresh positions, fresh lists, true counts.
  std::fill(image_.begin(), image_.end(), std::byte{0});
  for (std::uint32_t i = 0; i < node_count; ++i) mine_->node(i).client = kFreeNode;
  channels_ = 0;
  patterns_ = 0;
  free_nodes_.clear();
  for (std::uint32_t i = node_count; i-- > 0;) free_nodes_.push_back(i);
  for (const Kept& k : kept) {
    const auto index = static_cast<std::uint32_t>(insert_entry(k.table, k.name));
    Entry& e = mine_->entry(k.table, index);
    // Pushed in reverse, so the list keeps its order.
    for (auto s = k.subscribers.rbegin(); s != k.subscribers.rend(); ++s) {
      const std::uint32_t node = free_nodes_.back();
      free_nodes_.pop_back();
      mine_->node(node) = Node{s->first, s->second, e.first, detail::node_entry(k.table, index)};
      e.first = node + 1;
      ++e.count;
      ++kept_nodes;
    }
  }
  index_nodes();
  if (dropped_entries > 0 || kept_nodes != used_before) {
    log_line(bus_, fmt::format(
                       "quarantined {} entries and {} subscription nodes that failed the checks of "
                       "an adopted registry; kept {} entries and {} subscriptions",
                       dropped_entries, used_before > kept_nodes ? used_before - kept_nodes : 0,
                       kept.size(), kept_nodes));
  }
}

void RegistryWriter::index_nodes() {
  free_nodes_.clear();
  for (std::vector<std::uint32_t>& nodes : nodes_of_) nodes.clear();
  const std::uint32_t n = mine_->geometry().node_count;
  for (std::uint32_t i = n; i-- > 0;) {
    const std::uint32_t client = mine_->node(i).client;
    if (client == kFreeNode) {
      free_nodes_.push_back(i);
    } else if (client < nodes_of_.size()) {
      nodes_of_[client].push_back(i);
    }
  }
}

}  // namespace shmcast::daemon
