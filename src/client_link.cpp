// The client link: opening a bus's control segment, waiting for its coordinator, claiming a
// client slot, and the request mailbox and doorbell through which the slot talks to the
// coordinator.
#include "client_link.hpp"

#include <unistd.h>

#include <cstring>
#include <thread>

#include <fmt/format.h>

namespace shmcast::detail {

namespace {

Error segment_error(const SegmentError& e, const std::string& bus) {
  switch (e.code()) {
    case SegmentErrc::missing:
      return Error(Errc::no_coordinator,
                   fmt::format("no coordinator for bus '{}': start shmcastd --bus {}", bus, bus));
    case SegmentErrc::permission_denied:
      return Error(Errc::permission_denied,
                   fmt::format("bus '{}': {} (run as the bus's user or a member of its group)", bus,
                               e.what()));
    case SegmentErrc::bad_version:
      return Error(Errc::version_mismatch, fmt::format("bus '{}': {}", bus, e.what()));
    default: return Error(Errc::bad_segment, fmt::format("bus '{}': {}", bus, e.what()));
  }
}

Error status_error(Status status, Op op, std::string_view name, const BusLimits& l) {
  switch (status) {
    case Status::name_too_long:
      return op == Op::psubscribe || op == Op::punsubscribe
                 ? over_limit(Bounded::pattern, name.size(), l.max_pattern)
                 : over_limit(Bounded::channel, name.size(), l.max_channel);
    case Status::too_many_subscriptions: return too_many_subscriptions(l.max_subscriptions);
    case Status::registry_full:
      return Error(Errc::registry_full,
                   fmt::format("the bus registry is full: at most {} channels, {} patterns and {} "
                               "subscriptions in all (shmcastd --max-channels, --max-patterns, "
                               "--max-total-subscriptions)",
                               l.max_channels, l.max_patterns, l.max_total_subscriptions));
    default:
      return Error(Errc::system, fmt::format("the coordinator refused the request (status {})",
                                             static_cast<unsigned>(status)));
  }
}

// Read afresh on every claim: a child forked from a client has its own pid and start time.
std::uint64_t self_start_ticks() {
  return process_start_ticks(static_cast<std::int32_t>(getpid()));
}
}  // namespace

Error over_limit(Bounded what, std::size_t bytes, std::size_t limit) {
  // By Bounded: the error, and the noun that names the size and its shmcastd setting.
  static constexpr struct {
    Errc code;
    const char* noun;
  } kBounded[] = {{Errc::channel_too_long, "channel"},
                  {Errc::pattern_too_long, "pattern"},
                  {Errc::payload_too_large, "payload"}};
  const auto& [code, noun] = kBounded[static_cast<std::size_t>(what)];
  return Error(code, fmt::format("{} of {} bytes is over the bus limit of {} (shmcastd --max-{})",
                                 noun, bytes, limit, noun));
}

Error too_many_subscriptions(std::size_t limit) {
  return Error(
      Errc::too_many_subscriptions,
      fmt::format(
          "a client may hold at most {} channels and patterns (shmcastd --max-subscriptions)",
          limit));
}

std::shared_ptr<ControlView> open_control(const std::string& bus) {
  check_bus_name(bus);
  // A coordinator that is starting has created the segment but not yet published it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    try {
      return std::make_shared<ControlView>(
          Segment::open(control_name(bus), SegmentKind::control, kLayoutVersion));
    } catch (const SegmentError& e) {
      if (e.code() != SegmentErrc::not_ready || std::chrono::steady_clock::now() > deadline) {
        throw segment_error(e, bus);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } catch (const std::runtime_error& e) {
      throw Error(Errc::bad_segment, fmt::format("bus '{}': {}", bus, e.what()));
    }
  }
}

void read_registry_within(const ControlView& view, const std::string& bus,
                          std::chrono::milliseconds patience, const std::function<void()>& read) {
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t version = 0;
  while (!read_registry(view, read, version)) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (waited >= patience) {
      throw Error(Errc::coordinator_gone,
                  fmt::format("the registry of bus '{}' is stuck in the middle of an update "
                              "(waited {} ms; its coordinator died or stalled in a write): "
                              "restart shmcastd --bus {}, which repairs it",
                              bus, waited.count(), bus));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

namespace {

// How often a client waiting for a coordinator looks again.
constexpr auto kCoordinatorPoll = std::chrono::milliseconds(10);

}  // namespace

void wait_for_coordinator(const ControlView& view, const std::string& bus,
                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!coordinator_running(view)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Error(
          Errc::no_coordinator,
          fmt::format(
              "the coordinator of bus '{}' (pid {}) is not running: start shmcastd --bus {}", bus,
              view.header().coordinator_pid.load(), bus));
    }
    std::this_thread::sleep_for(kCoordinatorPoll);
  }
}

std::shared_ptr<ControlView> open_running(const std::string& bus,
                                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    try {
      auto view = open_control(bus);
      // A bus whose coordinator stopped may be removed and made anew by the next one: while
      // none runs, the segment is opened afresh each time.
      if (coordinator_running(*view) || std::chrono::steady_clock::now() >= deadline) {
        wait_for_coordinator(*view, bus, std::chrono::milliseconds(0));
        return view;
      }
    } catch (const Error& e) {
      if (e.code() != Errc::no_coordinator || std::chrono::steady_clock::now() >= deadline) throw;
    }
    std::this_thread::sleep_for(kCoordinatorPoll);
  }
}

ClientLink::ClientLink(std::shared_ptr<ControlView> view, std::string bus, ConnectOptions options)
    : view_(std::move(view)), bus_(std::move(bus)), options_(options) {
  wait_for_coordinator(*view_, bus_, options_.request_timeout);
  const auto me = static_cast<std::int32_t>(getpid());
  const std::uint32_t clients = view_->limits().max_clients;
  const auto deadline = std::chrono::steady_clock::now() + options_.request_timeout;
  for (;;) {
    // A slot whose client detached is free once the coordinator has finished removing it: a
    // client that connects right after another closed waits for that, not for nothing.
    bool leaving = false;
    for (std::uint32_t i = 0; i < clients; ++i) {
      ClientSlot& s = view_->slot(i);
      const std::uint32_t state = s.state.load(std::memory_order_relaxed);
      if (state == static_cast<std::uint32_t>(SlotState::detached)) leaving = true;
      if (state != static_cast<std::uint32_t>(SlotState::free)) continue;
      // The pid is the claim: the coordinator frees a slot by clearing it last.
      std::int32_t expected = 0;
      if (!s.pid.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
        leaving = true;
        continue;
      }
      if (s.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(SlotState::free)) {
        s.pid.store(0, std::memory_order_release);
        continue;
      }
      s.start_ticks.store(self_start_ticks(), std::memory_order_relaxed);
      s.has_ring.store(0, std::memory_order_relaxed);
      s.ring_bytes.store(0, std::memory_order_relaxed);
      s.state.store(static_cast<std::uint32_t>(SlotState::claimed), std::memory_order_release);
      owner_ = me;
      slot_ = i;
      generation_ = s.generation.load(std::memory_order_acquire);
      return;
    }
    if (!leaving || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  throw Error(
      Errc::too_many_clients,
      fmt::format("bus '{}' has no free client slot: all {} are taken (shmcastd --max-clients)",
                  bus_, clients));
}

ClientLink::~ClientLink() {
  // A child forked since the claim holds a copy of this object: the slot is still the parent's.
  if (owner_ != getpid()) return;
  try {
    if (attached_) {
      request(Op::detach, 0, {});
      return;
    }
  } catch (const Error&) {
    // The coordinator is gone: leave the slot for it to reap when it is back.
  }
  state().state.store(static_cast<std::uint32_t>(SlotState::detached), std::memory_order_release);
  // The coordinator sleeps between its timed passes: a slot left detached is freed at once only
  // if it is told.
  futex_ring(&view_->header().doorbell);
}

std::int64_t ClientLink::request(Op op, std::uint32_t sid, std::string_view name) {
  ClientSlot& s = state();
  const std::uint32_t seq = s.req_seq.load(std::memory_order_relaxed) + 1;
  s.op.store(static_cast<std::uint32_t>(op), std::memory_order_relaxed);
  s.sid.store(sid, std::memory_order_relaxed);
  s.name_len.store(static_cast<std::uint32_t>(name.size()), std::memory_order_relaxed);
  if (!name.empty()) std::memcpy(view_->slot_name(slot_), name.data(), name.size());
  s.req_seq.store(seq, std::memory_order_release);
  futex_ring(&view_->header().doorbell);

  const auto start = std::chrono::steady_clock::now();
  auto next_check = start + std::chrono::milliseconds(100);
  for (int spin = 0;; ++spin) {
    const std::uint32_t resp = s.resp_seq.load(std::memory_order_acquire);
    if (resp == seq) break;
    if (spin < 2000) {
      cpu_relax();
      continue;
    }
    futex_wait(&s.resp_seq, resp, std::chrono::milliseconds(10));
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_check) {
      next_check = now + std::chrono::milliseconds(100);
      const bool running = coordinator_running(*view_);
      // A restarted coordinator answers the pending request, so a dead one is waited for up to
      // the timeout too; only a detach or a ring release, which destructors make, gives up at
      // once.
      const bool late = now - start > options_.request_timeout;
      const bool leaving = op == Op::detach || op == Op::release_ring;
      if (!late && (running || !leaving)) continue;
      // Given up: void the request, or a coordinator that comes back would still carry it out
      // behind this client's back.
      s.op.store(static_cast<std::uint32_t>(Op::none), std::memory_order_relaxed);
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
      throw Error(Errc::coordinator_gone,
                  running ? fmt::format("the coordinator of bus '{}' did not answer within {} ms",
                                        bus_, options_.request_timeout.count())
                          : fmt::format("the coordinator of bus '{}' is not running (waited {} ms "
                                        "for it): restart shmcastd --bus {}",
                                        bus_, waited.count(), bus_));
    }
  }
  const auto status = static_cast<Status>(s.status.load(std::memory_order_relaxed));
  if (status != Status::ok) throw status_error(status, op, name, view_->limits());
  if (op == Op::attach) attached_ = true;
  if (op == Op::detach) attached_ = false;
  const std::int64_t value = s.value.load(std::memory_order_relaxed);
  // The slot's next ring is named by the generation the release moved it to.
  if (op == Op::release_ring) generation_ = static_cast<std::uint32_t>(value);
  return value;
}

}  // namespace shmcast::detail
