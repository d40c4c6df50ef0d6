#include "coordinator.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "bus_files.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {

using detail::BusHeader;
using detail::ClientSlot;
using detail::Op;
using detail::Segment;
using detail::SlotState;
using detail::Status;
using detail::Table;

namespace {

int pidfd_open(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

const char* removal_text(Removal why) {
  switch (why) {
    case Removal::detached: return "detached";
    case Removal::died: return "died";
    case Removal::died_attaching: return "died while attaching";
    case Removal::died_unattended: return "died while no coordinator ran";
  }
  return "left";
}

}  // namespace

void log_line(const std::string& bus, std::string_view message) {
  fmt::print(stderr, "shmcastd[{}]: {}\n", bus, message);
}

Coordinator::Coordinator(CoordinatorOptions options)
    : options_(std::move(options)), loans_(options_.bus) {
  check_bus_name(options_.bus);
  check_limits(options_.limits);
  if ((options_.mode & ~0770U) != 0) {
    throw Error(Errc::invalid_setting,
                fmt::format("--mode {:04o}: only owner and group bits are allowed: "
                            "never world access, setuid, setgid or sticky bits",
                            options_.mode));
  }
  lock_path_ = "/dev/shm/" + detail::lock_name(options_.bus);
  lock_fd_ = take_bus_lock(lock_path_, options_.bus, options_.mode);
  try {
    create_or_adopt();
  } catch (...) {
    // Refused (a foreign object, another layout version): leave /dev/shm as it was found.
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw;
  }
}

Coordinator::~Coordinator() {
  for (Client& c : clients_) {
    if (c.pidfd >= 0) ::close(c.pidfd);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void Coordinator::create_or_adopt() {
  if (std::optional<Segment> found = open_control(options_.bus)) {
    view_ = std::make_unique<detail::ControlView>(std::move(*found));
    adopt();
    return;
  }
  // A new bus: pools under its name are leftovers of one removed while they were referenced.
  loans_.remove_all_pools();
  start_ticks_ = detail::process_start_ticks(getpid());
  started_ns_ = detail::realtime_ns();
  created_ns_ = detail::realtime_ns();
  view_ = std::make_unique<detail::ControlView>(
      create_control(options_, CoordinatorStamp{start_ticks_, started_ns_, created_ns_}));
  writer_ = std::make_unique<RegistryWriter>(*view_, options_.bus);
  const detail::BusLimits& limits = view_->limits();
  clients_.assign(limits.max_clients, Client{});
  fixed_header_.assign(view_->segment().base(), view_->segment().base() + kFixedHeaderBytes);
  log_line(options_.bus,
           fmt::format("created bus: {} bytes of registry, {} client slots, rings of {} bytes",
                       view_->segment().size(), limits.max_clients, limits.ring_bytes));
}

void Coordinator::adopt() {
  adopted_ = true;
  BusHeader& h = view_->header();
  const std::uint32_t clients = view_->limits().max_clients;
  clients_.assign(clients, Client{});
  // Only clients that were attached (or left while no coordinator ran) can hold subscriptions.
  std::vector<bool> may_subscribe(clients);
  for (std::uint32_t i = 0; i < clients; ++i) {
    const ClientSlot& s = view_->slot(i);
    const std::uint32_t state = s.state.load();
    clients_[i].generation = s.generation.load();
    may_subscribe[i] = state == state_of(SlotState::live) || state == state_of(SlotState::detached);
  }
  // Whatever the previous coordinator knew is in the segment, which anything could have
  // written: take a copy, check it, and make the checked copy this coordinator's record.
  writer_ = std::make_unique<RegistryWriter>(*view_, options_.bus);
  writer_->adopt(may_subscribe);

  created_ns_ = h.created_ns.load();
  start_ticks_ = detail::process_start_ticks(getpid());
  started_ns_ = detail::realtime_ns();
  h.coordinator_start_ticks.store(start_ticks_);
  h.coordinator_started_ns.store(started_ns_);
  h.heartbeat_ns.store(detail::monotonic_ns());
  h.coordinator_pid.store(getpid(), std::memory_order_release);
  fixed_header_.assign(view_->segment().base(), view_->segment().base() + kFixedHeaderBytes);
  std::uint32_t live = 0;
  for (std::uint32_t i = 0; i < clients; ++i) {
    ClientSlot& s = view_->slot(i);
    if (s.state.load() != state_of(SlotState::live)) continue;
    Client& c = clients_[i];
    c.pid = s.pid.load();
    c.start_ticks = s.start_ticks.load();
    c.has_ring = s.has_ring.load() != 0;
    if (c.pid > 0 && detail::process_alive(c.pid, c.start_ticks)) c.pidfd = pidfd_open(c.pid);
    if (c.pidfd < 0 || !detail::process_alive(c.pid, c.start_ticks)) {
      remove_client(i, Removal::died_unattended);
      continue;
    }
    watch_death(i);
    s.subscriptions.store(writer_->subscriptions(i));
    ++live;
  }
  reap_dead();
  std::vector<bool> live_slots(clients);
  for (std::uint32_t i = 0; i < clients; ++i) live_slots[i] = clients_[i].pidfd >= 0;
  loans_.orphan_pools_except(live_slots);
  log_line(options_.bus,
           fmt::format("adopted bus: {} live clients, {} channels, {} patterns, {} subscriptions",
                       live, writer_->channels(), writer_->patterns(), writer_->nodes_used()));
}

void Coordinator::run(const std::atomic<bool>& stop) {
  BusHeader& h = view_->header();
  death_watch_.start(h.doorbell);
  for (;;) {
    // Read before `stop`: a wake() that follows setting it changes the doorbell, so the wait
    // below returns at once however late in this pass the stop came.
    const std::uint32_t bell = h.doorbell.load(std::memory_order_acquire);
    if (stop.load(std::memory_order_acquire)) break;
    serve_once();
    h.heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
    // Requests, deaths (through death_watch_), a client leaving its slot detached and stop
    // signals ring the doorbell; what rings nothing (a claim whose process died before its
    // attach request, a slot overwritten in shared memory) waits for the next timed pass.
    const auto until_pass = next_timed_pass_ - std::chrono::steady_clock::now();
    detail::futex_wait(&h.doorbell, bell, std::max(until_pass, decltype(until_pass)::zero()));
  }
  death_watch_.stop();
}

void Coordinator::wake() noexcept {
  detail::futex_ring(&view_->header().doorbell);
}

void Coordinator::serve_once() {
  audit_header();
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_timed_pass_) {
    audit_tables();
    loans_.pass(live_clients());
    next_timed_pass_ = now + options_.audit_step;
  }
  const std::uint32_t clients = view_->limits().max_clients;
  for (std::uint32_t i = 0; i < clients; ++i) {
    audit_slot(i);
    const std::uint32_t state = view_->slot(i).state.load(std::memory_order_acquire);
    if (state == state_of(SlotState::claimed) || state == state_of(SlotState::live)) handle(i);
  }
  reap_dead();
}

// ---------------------------------------------------------------------------------------------
// Requests

void Coordinator::handle(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  const std::uint32_t seq = s.req_seq.load(std::memory_order_acquire);
  if (seq == s.resp_seq.load(std::memory_order_relaxed)) return;
  const std::uint32_t raw_op = s.op.load(std::memory_order_relaxed);
  const auto op = static_cast<Op>(raw_op);
  const std::uint32_t sid = s.sid.load(std::memory_order_relaxed);
  const std::uint32_t len = s.name_len.load(std::memory_order_relaxed);
  const bool live = clients_[slot].pidfd >= 0;
  Status status = Status::ok;
  std::int64_t value = 0;
  bool removed = false;
  if (op == Op::none) {
    // A request its client gave up on and voided: answered, with nothing done or logged.
    status = Status::bad_request;
  } else if (op == Op::attach) {
    status = live ? Status::ok : attach(slot);
  } else if (!live) {
    status = Status::not_attached;
  } else if (op == Op::detach) {
    removed = true;
  } else if (op == Op::add_ring) {
    status = add_ring(slot);
  } else if (op == Op::release_ring) {
    value = release_ring(slot);
  } else if (op == Op::subscribe || op == Op::psubscribe || op == Op::unsubscribe ||
             op == Op::punsubscribe) {
    const Table table =
        op == Op::psubscribe || op == Op::punsubscribe ? Table::patterns : Table::channels;
    if (len > view_->max_name(table)) {
      status = Status::name_too_long;
    } else {
      // Copied out first: the client owns this buffer and may be hostile.
      const std::string name(view_->slot_name(slot), len);
      status = op == Op::subscribe || op == Op::psubscribe
                   ? writer_->subscribe(slot, table, sid, name)
                   : writer_->unsubscribe(slot, table, name);
      value = writer_->subscriptions(slot);
    }
  } else {
    status = Status::bad_request;
    log_repair("request", fmt::format("client slot {} (pid {}): request {} is no operation; "
                                      "refused",
                                      slot, clients_[slot].pid, raw_op));
  }
  // A detach is marked in the slot before it is answered: a coordinator that dies between the
  // answer and the removal leaves a slot the next one reaps, not one that counts as live for as
  // long as the client's process runs on.
  if (removed) s.state.store(state_of(SlotState::detached), std::memory_order_release);
  s.status.store(static_cast<std::uint32_t>(status), std::memory_order_relaxed);
  s.value.store(value, std::memory_order_relaxed);
  s.resp_seq.store(seq, std::memory_order_release);
  detail::futex_wake(&s.resp_seq, INT_MAX);
  // Removed after answering, so the client is not left waiting on a freed slot.
  if (removed) remove_client(slot, Removal::detached);
}

Status Coordinator::attach(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  Client& c = clients_[slot];
  const pid_t pid = s.pid.load();
  const std::uint64_t ticks = s.start_ticks.load();
  if (pid <= 0 || !detail::process_alive(pid, ticks)) return Status::bad_request;
  const bool has_ring = s.has_ring.load() != 0;
  if (has_ring && !ring_found(slot, pid, "attach")) return Status::bad_request;
  const int fd = pidfd_open(pid);
  if (fd < 0 || !detail::process_alive(pid, ticks)) {  // checked again: the pid may be reused
    if (fd >= 0) ::close(fd);
    return Status::bad_request;
  }
  c.pidfd = fd;
  c.pid = pid;
  c.start_ticks = ticks;
  c.has_ring = has_ring;
  watch_death(slot);
  s.subscriptions.store(writer_->subscriptions(slot));
  s.state.store(state_of(SlotState::live), std::memory_order_release);
  return Status::ok;
}

bool Coordinator::ring_found(std::uint32_t slot, pid_t pid, std::string_view request) {
  const std::uint32_t generation = clients_[slot].generation;
  // A client names its ring by the generation it read when it claimed the slot (or that a ring
  // release answered); if that was overwritten, the ring publishers would look for is not its
  // ring.
  if (Segment::exists(detail::ring_name(options_.bus, slot, generation))) return true;
  log_repair(request, fmt::format("client slot {} (pid {}): no ring under generation {}; {} "
                                  "refused",
                                  slot, pid, generation, request));
  return false;
}

Status Coordinator::add_ring(std::uint32_t slot) {
  Client& c = clients_[slot];
  if (!ring_found(slot, c.pid, "add_ring")) return Status::bad_request;
  c.has_ring = true;
  ClientSlot& s = view_->slot(slot);
  s.ring_bytes.store(view_->limits().ring_bytes);
  s.has_ring.store(1, std::memory_order_release);
  return Status::ok;
}

std::uint32_t Coordinator::release_ring(std::uint32_t slot) {
  // Removed first, as in remove_client.
  const std::string ring = detail::ring_name(options_.bus, slot, clients_[slot].generation);
  loans_.keep_ring(ring);
  Segment::remove(ring);
  writer_->begin_write();
  const std::uint32_t dropped = clear_slot(slot);
  writer_->end_write();
  loans_.drain_rings();
  log_line(options_.bus,
           fmt::format("client {} (pid {}) released its ring: {} subscriptions removed", slot,
                       clients_[slot].pid, dropped));
  return clients_[slot].generation;
}

// ---------------------------------------------------------------------------------------------
// Clients leaving

std::uint32_t Coordinator::clear_slot(std::uint32_t slot) {
  ClientSlot& s = view_->slot(slot);
  Client& c = clients_[slot];
  const std::uint32_t dropped = writer_->drop_subscriptions(slot);
  ++c.generation;
  c.has_ring = false;
  s.subscriptions.store(0);
  s.has_ring.store(0);
  s.ring_bytes.store(0);
  s.generation.store(c.generation, std::memory_order_relaxed);
  return dropped;
}

void Coordinator::remove_client(std::uint32_t slot, Removal why) {
  ClientSlot& s = view_->slot(slot);
  Client& c = clients_[slot];
  const pid_t pid = c.pidfd >= 0 ? c.pid : s.pid.load();
  // Whether or not the slot says it has a ring: a client killed between creating its ring and
  // saying so (or inside the creation) leaves the segment all the same, and only it used the name.
  // Removed before the slot moves to its next generation, so a coordinator that dies in between
  // leaves no ring under a generation the slot no longer names.
  const std::string ring = detail::ring_name(options_.bus, slot, c.generation);
  loans_.keep_ring(ring);
  Segment::remove(ring);
  writer_->begin_write();
  const std::uint32_t dropped = clear_slot(slot);
  s.state.store(state_of(SlotState::free), std::memory_order_release);
  writer_->end_write();
  // What the client leaves of loans, once its routes are gone, and before its slot (and the
  // holds in it, and the pool ids of its slot) can be claimed again.
  loans_.release_holds(view_->holds(slot), view_->limits().max_holds);
  loans_.orphan_pools(slot);
  loans_.drain_rings();
  s.pid.store(0, std::memory_order_release);  // last: clearing the pid frees the slot for a claim
  if (c.pidfd >= 0) {
    death_watch_.forget(c.pidfd);
    ::close(c.pidfd);
  }
  c.pidfd = -1;
  c.pid = 0;
  c.start_ticks = 0;
  if (why != Removal::detached) writer_->count_death();
  log_line(options_.bus, fmt::format("client {} (pid {}) {}: {} subscriptions removed", slot, pid,
                                     removal_text(why), dropped));
}

void Coordinator::watch_death(std::uint32_t slot) {
  if (death_watch_.watch(clients_[slot].pidfd)) return;
  log_line(options_.bus, fmt::format("client {} (pid {}): cannot watch its pidfd ({}); its death "
                                     "is noticed within {} ms only",
                                     slot, clients_[slot].pid, std::strerror(errno),
                                     options_.audit_step.count()));
}

std::vector<LiveClient> Coordinator::live_clients() const {
  std::vector<LiveClient> live;
  if (loans_.orphans() == 0) return live;
  const std::uint32_t holds = view_->limits().max_holds;
  for (std::uint32_t i = 0; i < clients_.size(); ++i) {
    const Client& c = clients_[i];
    if (c.pidfd < 0) continue;
    live.push_back({i, c.generation, c.has_ring, {view_->holds(i), holds}});
  }
  return live;
}

void Coordinator::reap_dead() {
  const std::uint32_t clients = view_->limits().max_clients;
  std::vector<pollfd> fds;
  std::vector<std::uint32_t> slots;
  for (std::uint32_t i = 0; i < clients; ++i) {
    ClientSlot& s = view_->slot(i);
    const std::uint32_t state = s.state.load(std::memory_order_acquire);
    if (state == state_of(SlotState::detached)) {
      remove_client(i, Removal::detached);
    } else if (clients_[i].pidfd >= 0) {
      fds.push_back({clients_[i].pidfd, POLLIN, 0});
      slots.push_back(i);
    } else if (state == state_of(SlotState::claimed) || state == state_of(SlotState::free)) {
      // A claim whose process died before attaching (or right after taking the pid). A claimed
      // slot holds the claimer's start time, which also tells a zombie (its parent has not
      // reaped it yet, so kill(pid, 0) still succeeds) and a reused pid from the claimer.
      const pid_t pid = s.pid.load();
      const bool dead = pid > 0 && (state == state_of(SlotState::claimed)
                                        ? !detail::process_alive(pid, s.start_ticks.load())
                                        : kill(pid, 0) != 0 && errno == ESRCH);
      if (dead) {
        if (state == state_of(SlotState::claimed)) {
          remove_client(i, Removal::died_attaching);
        } else {
          std::int32_t expected = pid;
          s.pid.compare_exchange_strong(expected, 0);
        }
      }
    }
  }
  if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return;
  for (std::size_t k = 0; k < fds.size(); ++k) {
    if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) != 0)
      remove_client(slots[k], Removal::died);
  }
}

bool Coordinator::shutdown() {
  serve_once();  // clients that died a moment ago are not clients that remain
  const std::uint32_t clients = view_->limits().max_clients;
  std::uint32_t live = 0;
  for (std::uint32_t i = 0; i < clients; ++i) {
    const std::uint32_t state = view_->slot(i).state.load();
    if (clients_[i].pidfd >= 0 || state == state_of(SlotState::claimed)) ++live;
  }
  if (live > 0) {
    log_line(options_.bus,
             fmt::format("stopping; {} live clients remain, so the bus stays for the next "
                         "shmcastd to adopt",
                         live));
    return false;
  }
  loans_.remove_all_pools();
  Segment::remove(detail::control_name(options_.bus));
  ::unlink(lock_path_.c_str());
  log_line(options_.bus, "stopping; no client remains, bus removed");
  return true;
}

}  // namespace shmcast::daemon
