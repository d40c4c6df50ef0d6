#include "coordinator.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include <fmt/format.h>

#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {

using detail::BusHeader;
using detail::ClientSlot;
using detail::Entry;
using detail::kFreeNode;
using detail::kNoNode;
using detail::kPatternEntryBit;
using detail::Node;
using detail::Op;
using detail::Segment;
using detail::SegmentErrc;
using detail::SegmentError;
using detail::SlotState;
using detail::Status;

namespace {

void log(const std::string& bus, std::string_view message) {
  fmt::print(stderr, "shmcastd[{}]: {}\n", bus, message);
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

constexpr std::uint32_t state_of(SlotState s) {
  return static_cast<std::uint32_t>(s);
}

// Calls f(node index) along a list until f returns false, through valid indices only and for at
// most node_count steps: clients can write this memory, so a corrupt list ends the walk instead
// of sending the coordinator out of bounds or round a loop forever.
template <class F>
void walk(const detail::ControlView& view, std::uint32_t first, F&& f) {
  const std::uint32_t count = view.geometry().node_count;
  std::uint32_t n = first;
  for (std::uint32_t steps = 0; n != kNoNode && n <= count && steps < count; ++steps) {
    const std::uint32_t index = n - 1;
    n = view.node(index).next;
    if (!f(index)) return;
  }
}

}  // namespace

void check_limits(const Limits& l) {
  const auto fail = [](const std::string& what) { throw Error(Errc::system, what); };
  if (l.max_clients < 1 || l.max_clients > (1U << 16))
    fail("--max-clients must be between 1 and 65536");
  if (l.max_channel > (1U << 16)) fail("--max-channel must be at most 65536 bytes");
  if (l.max_pattern > (1U << 16)) fail("--max-pattern must be at most 65536 bytes");
  if (l.max_subscriptions < 1) fail("--max-subscriptions must be at least 1");
  if (l.max_channels < 1 || l.max_channels > (1U << 24))
    fail("--max-channels must be between 1 and 16777216");
  if (l.max_patterns < 1 || l.max_patterns > (1U << 24))
    fail("--max-patterns must be between 1 and 16777216");
  if (l.max_total_subscriptions < 1 || l.max_total_subscriptions > (1U << 26)) {
    fail("--max-total-subscriptions must be between 1 and 67108864");
  }
  if (l.ring_bytes < detail::kRingMinCapacity || l.ring_bytes > detail::kRingMaxCapacity ||
      (l.ring_bytes & (l.ring_bytes - 1)) != 0) {
    fail(fmt::format("--ring-bytes {} must be a power of two between {} and {}", l.ring_bytes,
                     detail::kRingMinCapacity, detail::kRingMaxCapacity));
  }
  const std::uint64_t frame = detail::max_frame(detail::to_bus_limits(l));
  if (frame > detail::ring_max_payload(l.ring_bytes)) {
    fail(fmt::format(
        "--max-payload {} with --max-channel {} makes messages of up to {} bytes, more than "
        "half of --ring-bytes {} can hold ({}): lower --max-payload or raise --ring-bytes",
        l.max_payload, l.max_channel, frame, l.ring_bytes, detail::ring_max_payload(l.ring_bytes)));
  }
}

Coordinator::Coordinator(CoordinatorOptions options) : options_(std::move(options)) {
  check_bus_name(options_.bus);
  check_limits(options_.limits);
  if ((options_.mode & ~07770U) != 0) {
    throw Error(Errc::system, fmt::format("--mode {:04o}: only owner and group bits are allowed, "
                                          "never world access",
                                          options_.mode));
  }
  // One coordinator per bus: an open-file-description lock, which the kernel drops when its
  // holder dies, so a crashed coordinator never blocks its successor.
  lock_path_ = "/dev/shm/" + detail::lock_name(options_.bus);
  lock_fd_ =
      ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, options_.mode & 0660);
  if (lock_fd_ < 0) {
    throw Error(errno == EACCES ? Errc::permission_denied : Errc::system,
                fmt::format("cannot open {}: {}", lock_path_, std::strerror(errno)));
  }
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(lock_fd_, F_OFD_SETLK, &fl) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw Error(
        Errc::coordinator_running,
        fmt::format("bus '{}' already has a live coordinator: stop it first, or use another --bus",
                    options_.bus));
  }
  try {
    create_or_adopt();
  } catch (...) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw;
  }
}

Coordinator::~Coordinator() {
  for (Watch& w : watches_) {
    if (w.pidfd >= 0) ::close(w.pidfd);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void Coordinator::create_or_adopt() {
  const std::string name = detail::control_name(options_.bus);
  try {
    view_ = std::make_unique<detail::ControlView>(
        Segment::open(name, detail::SegmentKind::control, detail::kLayoutVersion));
    adopt();
    return;
  } catch (const SegmentError& e) {
    switch (e.code()) {
      case SegmentErrc::missing: break;
      case SegmentErrc::not_ready:  // its creator died before publishing it: nobody uses it
        Segment::remove(name);
        break;
      case SegmentErrc::bad_version:
        throw Error(
            Errc::version_mismatch,
            fmt::format("{}; no client of this version can use it: remove /dev/shm/shmcast.{}.* "
                        "once its clients are gone",
                        e.what(), options_.bus));
      case SegmentErrc::permission_denied: throw Error(Errc::permission_denied, e.what());
      default:
        throw Error(Errc::bad_segment, fmt::format("{}: remove it or use another --bus", e.what()));
    }
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const Error*>(&e) != nullptr) throw;
    throw Error(Errc::bad_segment,
                fmt::format("{}: remove /dev/shm/{} or use another --bus", e.what(), name));
  }

  const detail::BusLimits limits = detail::to_bus_limits(options_.limits);
  const detail::ControlGeometry g = detail::control_geometry(limits);
  detail::Permissions perms{options_.mode, options_.group};
  Segment segment = [&] {
    try {
      return Segment::create(name, g.total, detail::SegmentKind::control, detail::kLayoutVersion,
                             perms);
    } catch (const SegmentError& e) {
      throw Error(
          e.code() == SegmentErrc::permission_denied ? Errc::permission_denied : Errc::bad_segment,
          e.what());
    }
  }();
  auto* h = new (segment.base() + detail::kBusHeaderOffset) BusHeader{};
  h->limits = limits;
  h->slot_size = g.slot_size;
  h->entry_size_channel = g.entry_size_channel;
  h->entry_size_pattern = g.entry_size_pattern;
  h->segment_mode = options_.mode;
  h->segment_gid = options_.group ? static_cast<std::int32_t>(*options_.group) : -1;
  h->clients_offset = g.clients_offset;
  h->channels_offset = g.channels_offset;
  h->patterns_offset = g.patterns_offset;
  h->nodes_offset = g.nodes_offset;
  h->channel_slots = g.channel_slots;
  h->pattern_slots = g.pattern_slots;
  h->node_count = g.node_count;
  h->created_ns = detail::realtime_ns();
  auto* nodes = reinterpret_cast<Node*>(segment.base() + g.nodes_offset);
  for (std::uint32_t i = 0; i < g.node_count; ++i) nodes[i].client = kFreeNode;
  segment.publish();
  view_ = std::make_unique<detail::ControlView>(std::move(segment));
  watches_.assign(limits.max_clients, Watch{});
  rebuild_free_nodes();
  BusHeader& header = view_->header();
  header.coordinator_start_ticks.store(detail::process_start_ticks(getpid()));
  header.coordinator_started_ns.store(detail::realtime_ns());
  header.heartbeat_ns.store(detail::monotonic_ns());
  header.coordinator_pid.store(getpid(), std::memory_order_release);
  log(options_.bus,
      fmt::format("created bus: {} bytes of registry, {} client slots, rings of {} bytes", g.total,
                  limits.max_clients, limits.ring_bytes));
}

void Coordinator::adopt() {
  adopted_ = true;
  BusHeader& h = view_->header();
  const std::uint32_t clients = view_->limits().max_clients;
  watches_.assign(clients, Watch{});
  // The previous coordinator may have died inside a registry write: close its seqlock.
  const std::uint64_t version = h.routing_version.load();
  if ((version & 1U) != 0) h.routing_version.store(version + 1, std::memory_order_release);
  rebuild_free_nodes();
  h.coordinator_start_ticks.store(detail::process_start_ticks(getpid()));
  h.coordinator_started_ns.store(detail::realtime_ns());
  h.heartbeat_ns.store(detail::monotonic_ns());
  h.coordinator_pid.store(getpid(), std::memory_order_release);
  std::uint32_t live = 0;
  for (std::uint32_t i = 0; i < clients; ++i) {
    ClientSlot& s = view_->slot(i);
    if (s.state.load() != state_of(SlotState::live)) continue;
    const pid_t pid = s.pid.load();
    if (detail::process_alive(pid, s.start_ticks.load())) {
      watches_[i].pidfd = pidfd_open(pid);
    }
    if (watches_[i].pidfd < 0 || !detail::process_alive(pid, s.start_ticks.load())) {
      remove_client(i, "died while no coordinator ran");
      continue;
    }
    ++live;
  }
  reap_dead();
  log(options_.bus,
      fmt::format("adopted bus: {} live clients, {} channels, {} patterns, {} subscriptions", live,
                  h.channel_count.load(), h.pattern_count.load(), h.node_used.load()));
}

void Coordinator::rebuild_free_nodes() {
  free_nodes_.clear();
  client_nodes_.assign(view_->limits().max_clients, {});
  const std::uint32_t n = view_->geometry().node_count;
  for (std::uint32_t i = n; i-- > 0;) {
    const std::uint32_t client = view_->node(i).client;
    if (client == kFreeNode) {
      free_nodes_.push_back(i);
    } else if (client < client_nodes_.size()) {
      client_nodes_[client].push_back(i);
    }
  }
}

void Coordinator::run(const std::atomic<bool>& stop) {
  BusHeader& h = view_->header();
  while (!stop.load(std::memory_order_relaxed)) {
    const std::uint32_t bell = h.doorbell.load(std::memory_order_acquire);
    serve_once();
    h.heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
    // Requests ring the doorbell; deaths are looked for at least every 20 ms.
    detail::futex_wait(&h.doorbell, bell, std::chrono::milliseconds(20));
  }
}

void Coordinator::serve_once() {
  const std::uint32_t clients = view_->limits().max_clients;
  for (std::uint32_t i = 0; i < clients; ++i) {
    const std::uint32_t state = view_->slot(i).state.load(std::memory_order_acquire);
    if (state == state_of(SlotState::claimed) || state == state_of(SlotState::live)) handle(i);
  }
  reap_dead();
}

void Coordinator::handle(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  const std::uint32_t seq = s.req_seq.load(std::memory_order_acquire);
  if (seq == s.resp_seq.load(std::memory_order_relaxed)) return;
  const auto op = static_cast<Op>(s.op.load(std::memory_order_relaxed));
  const std::uint32_t sid = s.sid.load(std::memory_order_relaxed);
  const std::uint32_t len = s.name_len.load(std::memory_order_relaxed);
  const bool live = s.state.load() == state_of(SlotState::live);
  Status status = Status::ok;
  std::int64_t value = 0;
  bool removed = false;
  if (op == Op::attach) {
    status = live ? Status::ok : attach(slot);
  } else if (!live) {
    status = Status::not_attached;
  } else if (op == Op::detach) {
    removed = true;
  } else if (op == Op::subscribe || op == Op::psubscribe || op == Op::unsubscribe ||
             op == Op::punsubscribe) {
    const bool pattern = op == Op::psubscribe || op == Op::punsubscribe;
    if (len > view_->max_name(pattern)) {
      status = Status::name_too_long;
    } else {
      // Copied out first: the client owns this buffer and may be hostile.
      const std::string name(view_->slot_name(slot), len);
      status = op == Op::subscribe || op == Op::psubscribe ? subscribe(slot, pattern, sid, name)
                                                           : unsubscribe(slot, pattern, sid, name);
      value = s.subscriptions.load();
    }
  } else {
    status = Status::bad_request;
  }
  s.status.store(static_cast<std::uint32_t>(status), std::memory_order_relaxed);
  s.value.store(value, std::memory_order_relaxed);
  s.resp_seq.store(seq, std::memory_order_release);
  detail::futex_wake(&s.resp_seq, INT_MAX);
  // Removed after answering, so the client is not left waiting on a freed slot.
  if (removed) remove_client(slot, "detached");
}

Status Coordinator::attach(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  const pid_t pid = s.pid.load();
  const std::uint64_t ticks = s.start_ticks.load();
  if (!detail::process_alive(pid, ticks)) return Status::bad_request;
  const int fd = pidfd_open(pid);
  if (fd < 0 || !detail::process_alive(pid, ticks)) {  // checked again: the pid may be reused
    if (fd >= 0) ::close(fd);
    return Status::bad_request;
  }
  if (watches_[slot].pidfd >= 0) ::close(watches_[slot].pidfd);
  watches_[slot].pidfd = fd;
  s.subscriptions.store(0);
  s.state.store(state_of(SlotState::live), std::memory_order_release);
  return Status::ok;
}

void Coordinator::begin_write() {
  auto& v = view_->header().routing_version;
  v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}

void Coordinator::end_write() {
  auto& v = view_->header().routing_version;
  v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

std::int64_t Coordinator::insert_entry(bool pattern, std::string_view name) {
  const std::uint32_t slots = view_->entry_slots(pattern);
  const std::uint32_t hash = detail::name_hash(name);
  for (std::uint32_t probe = 0, i = hash & (slots - 1); probe < slots;
       ++probe, i = (i + 1) & (slots - 1)) {
    Entry& e = view_->entry(pattern, i);
    if (e.used != 0) continue;
    e.hash = hash;
    e.name_len = static_cast<std::uint32_t>(name.size());
    e.first = kNoNode;
    e.count = 0;
    if (!name.empty()) std::memcpy(view_->entry_name(pattern, i), name.data(), name.size());
    e.used = 1;
    auto& count = pattern ? view_->header().pattern_count : view_->header().channel_count;
    count.fetch_add(1, std::memory_order_relaxed);
    return i;
  }
  return -1;
}

// Backward-shift deletion keeps linear probing free of tombstones.
void Coordinator::erase_entry(bool pattern, std::uint32_t index) {
  const std::uint32_t mask = view_->entry_slots(pattern) - 1;
  const std::uint32_t size =
      pattern ? view_->geometry().entry_size_pattern : view_->geometry().entry_size_channel;
  const std::uint32_t bit = pattern ? kPatternEntryBit : 0;
  std::uint32_t hole = index;
  for (std::uint32_t j = (hole + 1) & mask;; j = (j + 1) & mask) {
    Entry& e = view_->entry(pattern, j);
    if (e.used == 0 || j == hole) break;
    const std::uint32_t home = e.hash & mask;
    // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    std::memcpy(&view_->entry(pattern, hole), &e, size);
    walk(*view_, view_->entry(pattern, hole).first, [&](std::uint32_t n) {
      view_->node(n).entry = hole | bit;
      return true;
    });
    hole = j;
  }
  Entry& gone = view_->entry(pattern, hole);
  gone.used = 0;
  gone.first = kNoNode;
  gone.count = 0;
  gone.name_len = 0;
  auto& count = pattern ? view_->header().pattern_count : view_->header().channel_count;
  count.fetch_sub(1, std::memory_order_relaxed);
}

void Coordinator::unlink_node(std::uint32_t index) {
  Node& node = view_->node(index);
  if (node.client == kFreeNode) return;
  const bool pattern = (node.entry & kPatternEntryBit) != 0;
  const std::uint32_t entry_index = node.entry & ~kPatternEntryBit;
  if (node.client < client_nodes_.size()) std::erase(client_nodes_[node.client], index);
  if (entry_index >= view_->entry_slots(pattern)) {
    // Its entry field was overwritten: no list can be trusted to hold it, so just free it.
    log(options_.bus, fmt::format("subscription node {} names no entry; freed", index));
    node = Node{kFreeNode, 0, kNoNode, 0};
    free_nodes_.push_back(index);
    view_->header().node_used.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  Entry& e = view_->entry(pattern, entry_index);
  if (e.first == index + 1) {
    e.first = node.next;
  } else {
    walk(*view_, e.first, [&](std::uint32_t n) {
      if (view_->node(n).next != index + 1) return true;
      view_->node(n).next = node.next;
      return false;
    });
  }
  node = Node{kFreeNode, 0, kNoNode, 0};
  free_nodes_.push_back(index);
  view_->header().node_used.fetch_sub(1, std::memory_order_relaxed);
  if (e.count <= 1) {
    erase_entry(pattern, entry_index);
  } else {
    --e.count;
  }
}

Status Coordinator::subscribe(std::uint32_t slot, bool pattern, std::uint32_t sid,
                              std::string_view name) {
  ClientSlot& s = view_->slot(slot);
  std::int64_t index = detail::find_entry(*view_, pattern, name);
  if (index >= 0) {
    // Subscribing again to what it holds changes nothing (a client's own copy says so too).
    bool held = false;
    walk(*view_, view_->entry(pattern, static_cast<std::uint32_t>(index)).first,
         [&](std::uint32_t n) {
           held = view_->node(n).client == slot;
           return !held;
         });
    if (held) return Status::ok;
  }
  if (s.subscriptions.load() >= view_->limits().max_subscriptions)
    return Status::too_many_subscriptions;
  if (free_nodes_.empty()) return Status::registry_full;
  const std::uint32_t max_entries =
      pattern ? view_->limits().max_patterns : view_->limits().max_channels;
  const auto& entries = pattern ? view_->header().pattern_count : view_->header().channel_count;
  if (index < 0 && entries.load() >= max_entries) return Status::registry_full;

  begin_write();
  if (index < 0) index = insert_entry(pattern, name);
  const std::uint32_t node_index = free_nodes_.back();
  free_nodes_.pop_back();
  Entry& e = view_->entry(pattern, static_cast<std::uint32_t>(index));
  view_->node(node_index) = Node{
      slot, sid, e.first, static_cast<std::uint32_t>(index) | (pattern ? kPatternEntryBit : 0)};
  e.first = node_index + 1;
  ++e.count;
  client_nodes_[slot].push_back(node_index);
  view_->header().node_used.fetch_add(1, std::memory_order_relaxed);
  s.subscriptions.fetch_add(1);
  end_write();
  return Status::ok;
}

Status Coordinator::unsubscribe(std::uint32_t slot, bool pattern, std::uint32_t /*sid*/,
                                std::string_view name) {
  const std::int64_t index = detail::find_entry(*view_, pattern, name);
  if (index < 0) return Status::ok;
  std::int64_t held = -1;
  walk(*view_, view_->entry(pattern, static_cast<std::uint32_t>(index)).first,
       [&](std::uint32_t n) {
         if (view_->node(n).client == slot) held = n;
         return held < 0;
       });
  if (held >= 0) {
    begin_write();
    unlink_node(static_cast<std::uint32_t>(held));
    view_->slot(slot).subscriptions.fetch_sub(1);
    end_write();
  }
  return Status::ok;
}

void Coordinator::remove_client(std::uint32_t slot, const char* why) {
  ClientSlot& s = view_->slot(slot);
  const pid_t pid = s.pid.load();
  const std::uint32_t generation = s.generation.load();
  const bool had_ring = s.has_ring.load() != 0;
  std::uint32_t dropped = 0;
  begin_write();
  while (!client_nodes_[slot].empty()) {
    const std::uint32_t node = client_nodes_[slot].back();
    client_nodes_[slot].pop_back();  // first: a node rewritten by a client must not stall this loop
    unlink_node(node);
    ++dropped;
  }
  s.subscriptions.store(0);
  s.has_ring.store(0);
  s.ring_bytes.store(0);
  s.generation.store(generation + 1, std::memory_order_relaxed);
  s.state.store(state_of(SlotState::free), std::memory_order_release);
  end_write();
  s.pid.store(0, std::memory_order_release);  // last: clearing the pid frees the slot for a claim
  if (had_ring) Segment::remove(detail::ring_name(options_.bus, slot, generation));
  if (watches_[slot].pidfd >= 0) {
    ::close(watches_[slot].pidfd);
    watches_[slot].pidfd = -1;
  }
  if (std::strcmp(why, "detached") != 0)
    view_->header().deaths.fetch_add(1, std::memory_order_release);
  log(options_.bus,
      fmt::format("client {} (pid {}) {}: {} subscriptions removed", slot, pid, why, dropped));
}

void Coordinator::reap_dead() {
  const std::uint32_t clients = view_->limits().max_clients;
  std::vector<pollfd> fds;
  std::vector<std::uint32_t> slots;
  for (std::uint32_t i = 0; i < clients; ++i) {
    ClientSlot& s = view_->slot(i);
    const std::uint32_t state = s.state.load(std::memory_order_acquire);
    if (state == state_of(SlotState::live) && watches_[i].pidfd >= 0) {
      fds.push_back({watches_[i].pidfd, POLLIN, 0});
      slots.push_back(i);
    } else if (state == state_of(SlotState::detached)) {
      remove_client(i, "detached");
    } else if (state == state_of(SlotState::claimed) || state == state_of(SlotState::free)) {
      // A claim whose process died before attaching (or right after taking the pid).
      const pid_t pid = s.pid.load();
      if (pid != 0 && kill(pid, 0) != 0 && errno == ESRCH) {
        if (state == state_of(SlotState::claimed)) {
          remove_client(i, "died while attaching");
        } else {
          std::int32_t expected = pid;
          s.pid.compare_exchange_strong(expected, 0);
        }
      }
    }
  }
  if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return;
  for (std::size_t k = 0; k < fds.size(); ++k) {
    if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) != 0) remove_client(slots[k], "died");
  }
}

bool Coordinator::shutdown() {
  serve_once();  // clients that died a moment ago are not clients that remain
  const std::uint32_t clients = view_->limits().max_clients;
  std::uint32_t live = 0;
  for (std::uint32_t i = 0; i < clients; ++i) {
    const std::uint32_t state = view_->slot(i).state.load();
    if (state == state_of(SlotState::live) || state == state_of(SlotState::claimed)) ++live;
  }
  if (live > 0) {
    log(options_.bus, fmt::format("stopping; {} live clients remain, so the bus stays for the next "
                                  "shmcastd to adopt",
                                  live));
    return false;
  }
  Segment::remove(detail::control_name(options_.bus));
  ::unlink(lock_path_.c_str());
  log(options_.bus, "stopping; no client remains, bus removed");
  return true;
}

}  // namespace shmcast::daemon
