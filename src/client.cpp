#include "client.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "shmcast/message.hpp"
#include "shmcast/subscriber.hpp"

namespace shmcast {

const char* kind_name(Kind kind) noexcept {
  switch (kind) {
    case Kind::message: return "message";
    case Kind::pmessage: return "pmessage";
    case Kind::subscribe: return "subscribe";
    case Kind::psubscribe: return "psubscribe";
    case Kind::unsubscribe: return "unsubscribe";
    case Kind::punsubscribe: return "punsubscribe";
    case Kind::gap: return "gap";
  }
  return "unknown";
}

std::string default_bus_name() {
  const char* env = std::getenv("SHMCAST_BUS");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("default");
}

void check_bus_name(std::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
      });
  if (!ok) {
    throw Error(Errc::invalid_bus_name,
                fmt::format("invalid bus name '{}': use 1 to 64 of A-Z a-z 0-9 _ . -", name));
  }
}

namespace detail {

namespace {

std::atomic<std::uint64_t> g_next_bus_id{1};

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
                 ? Error(Errc::pattern_too_long, fmt::format("pattern of {} bytes is over the bus "
                                                             "limit of {} (shmcastd --max-pattern)",
                                                             name.size(), l.max_pattern))
                 : Error(Errc::channel_too_long, fmt::format("channel of {} bytes is over the bus "
                                                             "limit of {} (shmcastd --max-channel)",
                                                             name.size(), l.max_channel));
    case Status::too_many_subscriptions:
      return Error(
          Errc::too_many_subscriptions,
          fmt::format(
              "a client may hold at most {} channels and patterns (shmcastd --max-subscriptions)",
              l.max_subscriptions));
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

std::atomic<std::uint32_t> g_pid{0};

}  // namespace

std::uint32_t current_pid() noexcept {
  std::uint32_t pid = g_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_pid.store(0); }); });
    pid = static_cast<std::uint32_t>(getpid());
    g_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

namespace {

// Read afresh on every claim: a child forked from a client has its own pid and start time.
std::uint64_t self_start_ticks() {
  return process_start_ticks(static_cast<std::int32_t>(getpid()));
}

}  // namespace

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

bool coordinator_running(const ControlView& view) noexcept {
  const BusHeader& h = view.header();
  return process_alive(h.coordinator_pid.load(std::memory_order_acquire),
                       h.coordinator_start_ticks.load(std::memory_order_acquire));
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

// -------------------------------------------------------------------------------------------
// ClientLink

ClientLink::ClientLink(std::shared_ptr<ControlView> view, std::string bus, ConnectOptions options)
    : view_(std::move(view)), bus_(std::move(bus)), options_(options) {
  wait_for_coordinator(*view_, bus_, options_.request_timeout);
  const auto me = static_cast<std::int32_t>(getpid());
  const std::uint32_t clients = view_->limits().max_clients;
  for (std::uint32_t i = 0; i < clients; ++i) {
    ClientSlot& s = view_->slot(i);
    if (s.state.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(SlotState::free))
      continue;
    // The pid is the claim: the coordinator frees a slot by clearing it last.
    std::int32_t expected = 0;
    if (!s.pid.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) continue;
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
}

std::int64_t ClientLink::request(Op op, std::uint32_t sid, std::string_view name) {
  ClientSlot& s = state();
  const std::uint32_t seq = s.req_seq.load(std::memory_order_relaxed) + 1;
  s.op.store(static_cast<std::uint32_t>(op), std::memory_order_relaxed);
  s.sid.store(sid, std::memory_order_relaxed);
  s.name_len.store(static_cast<std::uint32_t>(name.size()), std::memory_order_relaxed);
  if (!name.empty()) std::memcpy(view_->slot_name(slot_), name.data(), name.size());
  s.req_seq.store(seq, std::memory_order_release);
  BusHeader& h = view_->header();
  h.doorbell.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h.doorbell, 1);

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

BusState::BusState(std::string bus, ConnectOptions opts)
    : name(std::move(bus)),
      options(opts),
      view(open_running(name, options.request_timeout)),
      limits(to_limits(view->limits())),
      id(g_next_bus_id.fetch_add(1)) {
  link = std::make_unique<ClientLink>(view, name, options);
  link->request(Op::attach, 0, {});
}

// -------------------------------------------------------------------------------------------
// Publishing: per-thread caches, so the publish path takes no lock.

namespace {

struct RingHandle {
  std::uint32_t generation;
  Segment segment;
  RingProducer producer;
};

struct RouteTarget {
  RingHandle* ring;
  FrameKind kind;
  std::uint32_t sid;
};

struct Route {
  // The route version of the channel's bucket, read before the registry was: the targets are
  // current while it stays there.
  const std::atomic<std::uint64_t>* bucket = nullptr;
  std::uint64_t version = 0;
  // A route resolved from a registry read that gave up (its writer stopped in the middle of an
  // update), or without a ring that could not be mapped, may lack a subscriber whose bucket
  // never moves again: it is resolved anew once the routing version leaves `recheck_seq`.
  bool recheck = false;
  std::uint64_t recheck_seq = 0;
  std::vector<RouteTarget> targets;
};

// Lets routes be found by string_view: no allocation on the publish path.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

struct PublisherCache {
  std::weak_ptr<const BusState> owner;  // expired once every copy of its Bus is gone
  std::shared_ptr<ControlView> view;    // keeps the mapping alive as long as the cache
  std::string bus;
  std::unordered_map<std::string, Route, NameHash, std::equal_to<>> routes;
  std::vector<std::unique_ptr<RingHandle>> rings;  // by client slot
  GlobCache globs;
  std::vector<Target> scratch;
  std::size_t route_limit = 0;  // routes are forgotten all at once when this many are cached
  // The route last published to, found without hashing when the next publish names the same
  // channel (map nodes do not move; cleared with the map).
  const std::string* last_name = nullptr;
  Route* last_route = nullptr;
};

thread_local std::unordered_map<std::uint64_t, PublisherCache> t_publishers;
// The cache last used by this thread, so a thread publishing on one bus skips the lookup.
thread_local std::uint64_t t_last_id = 0;
thread_local PublisherCache* t_last_cache = nullptr;
thread_local std::uint64_t t_resolved = 0;

// Routes a thread keeps at most: every channel the bus can hold twice over (channels that
// nobody holds are cached as empty routes too), and never fewer than this.
constexpr std::size_t kMinCachedRoutes = 65536;

PublisherCache& publisher_cache(const std::shared_ptr<BusState>& owner) {
  const BusState& state = *owner;
  if (t_last_cache != nullptr && t_last_id == state.id) [[likely]]
    return *t_last_cache;
  auto it = t_publishers.find(state.id);
  if (it == t_publishers.end()) {
    // The caches of buses closed since are dropped here, with their ring mappings: a thread
    // that opens a Bus per task does not keep every bus it ever used mapped.
    std::erase_if(t_publishers, [](const auto& entry) { return entry.second.owner.expired(); });
    it = t_publishers.try_emplace(state.id).first;
    it->second.owner = owner;
    it->second.view = state.view;
    it->second.bus = state.name;
    it->second.rings.resize(state.view->limits().max_clients);
    it->second.route_limit =
        std::max<std::size_t>(kMinCachedRoutes, 2 * std::size_t{state.limits.max_channels});
  }
  t_last_id = state.id;
  t_last_cache = &it->second;
  return it->second;
}

Route* cached_route(PublisherCache& cache, std::string_view channel) {
  if (cache.last_route != nullptr && *cache.last_name == channel) return cache.last_route;
  const auto it = cache.routes.find(channel);
  if (it == cache.routes.end()) return nullptr;
  cache.last_name = &it->first;
  cache.last_route = &it->second;
  return &it->second;
}

// The ring of `target`, mapped once per thread; null if it is gone (its client just left).
RingHandle* ring_for(PublisherCache& cache, const Target& target, bool& replaced) {
  auto& handle = cache.rings[target.slot];
  if (handle && handle->generation == target.generation) return handle.get();
  try {
    Segment segment = Segment::open(ring_name(cache.bus, target.slot, target.generation),
                                    SegmentKind::ring, kLayoutVersion);
    RingProducer producer(segment.base() + kSegmentHeaderSize, segment.size() - kSegmentHeaderSize);
    replaced = replaced || handle != nullptr;
    handle =
        std::make_unique<RingHandle>(RingHandle{target.generation, std::move(segment), producer});
    return handle.get();
  } catch (const std::exception&) {
    return nullptr;
  }
}

Route& resolve(PublisherCache& cache, std::string_view channel) {
  ++t_resolved;
  const std::atomic<std::uint64_t>& bucket = cache.view->route_version_of(name_hash(channel));
  // Read before the registry: a change the read may miss moves the version past this value.
  const std::uint64_t version = bucket.load(std::memory_order_acquire);
  std::uint64_t seq = 0;
  const bool consistent = read_registry(
      *cache.view, [&] { collect_targets(*cache.view, channel, cache.globs, cache.scratch); }, seq);
  auto it = cache.routes.find(channel);
  // read_registry gave up (the coordinator died or stopped in the middle of an update): the
  // route is kept, to be resolved again once the routing version moves on, so further
  // publishes do not wait again until a coordinator finishes or replaces that update.
  if (!consistent) {
    seq = cache.view->header().routing_version.load(std::memory_order_acquire);
    if (it != cache.routes.end()) {
      it->second.bucket = &bucket;
      it->second.version = version;
      it->second.recheck = true;
      it->second.recheck_seq = seq;
      return it->second;
    }
    cache.scratch.clear();
  }
  bool replaced = false;
  bool complete = consistent;
  std::vector<RouteTarget> targets;
  targets.reserve(cache.scratch.size());
  for (const Target& t : cache.scratch) {
    if (RingHandle* ring = ring_for(cache, t, replaced)) {
      targets.push_back({ring, t.pattern ? FrameKind::pmessage : FrameKind::message, t.sid});
    } else {
      complete = false;
    }
  }
  // A replaced mapping may be referenced by other cached routes: forget them all. So does a
  // cache grown past its bound, so a publisher over endless channel names stays small.
  if (replaced || cache.routes.size() >= cache.route_limit) {
    cache.routes.clear();
    cache.last_route = nullptr;
  }
  const auto slot = cache.routes.try_emplace(std::string(channel)).first;
  Route& route = slot->second;
  route.bucket = &bucket;
  route.version = version;
  route.recheck = !complete;
  route.recheck_seq = seq;
  route.targets = std::move(targets);
  cache.last_name = &slot->first;
  cache.last_route = &route;
  return route;
}

[[noreturn, gnu::cold]] void refuse_publish(const Limits& limits, std::size_t channel,
                                            std::size_t payload) {
  if (channel > limits.max_channel) {
    throw Error(
        Errc::channel_too_long,
        fmt::format("channel of {} bytes is over the bus limit of {} (shmcastd --max-channel)",
                    channel, limits.max_channel));
  }
  throw Error(
      Errc::payload_too_large,
      fmt::format("payload of {} bytes is over the bus limit of {} (shmcastd --max-payload)",
                  payload, limits.max_payload));
}

// Writes one frame per target; out of line, so a publish that reaches nobody stays short.
[[gnu::noinline]] std::size_t deliver(const Route& route, std::string_view channel,
                                      std::span<const std::byte> payload) {
  FrameHeader header{};
  header.name_len = static_cast<std::uint32_t>(channel.size());
  const std::span<const std::byte> parts[] = {
      std::as_bytes(std::span<const FrameHeader, 1>(&header, 1)),
      std::as_bytes(std::span<const char>(channel.data(), channel.size())), payload};
  const std::uint32_t writer = current_pid();
  std::size_t delivered = 0;
  for (const RouteTarget& t : route.targets) {
    header.kind = static_cast<std::uint8_t>(t.kind);
    header.sid = t.sid;
    if (t.ring->producer.try_write(parts, writer) == WriteStatus::ok) ++delivered;
  }
  return delivered;
}

}  // namespace

std::uint64_t resolved_routes() noexcept {
  return t_resolved;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Bus

Bus Bus::connect(std::string_view name, ConnectOptions options) {
  std::string bus = name.empty() ? default_bus_name() : std::string(name);
  check_bus_name(bus);
  return Bus(std::make_shared<detail::BusState>(std::move(bus), options));
}

std::size_t Bus::publish(std::string_view channel, std::span<const std::byte> payload) {
  const detail::BusState& s = *state_;
  if (channel.size() > s.limits.max_channel || payload.size() > s.limits.max_payload) [[unlikely]] {
    detail::refuse_publish(s.limits, channel.size(), payload.size());
  }
  detail::PublisherCache& cache = detail::publisher_cache(state_);
  detail::Route* route = detail::cached_route(cache, channel);
  if (route == nullptr || route->bucket->load(std::memory_order_acquire) != route->version ||
      (route->recheck && cache.view->header().routing_version.load(std::memory_order_acquire) !=
                             route->recheck_seq)) [[unlikely]] {
    route = &detail::resolve(cache, channel);
  }

  if (route->targets.empty()) return 0;
  return detail::deliver(*route, channel, payload);
}

std::vector<std::string> Bus::channels() const {
  std::vector<std::pair<std::string, std::uint32_t>> names;
  detail::read_registry_within(*state_->view, state_->name, state_->options.request_timeout,
                               [&] { detail::collect_names(*state_->view, false, names); });
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
      const std::int64_t i = detail::find_entry(*state_->view, false, name);
      out.emplace_back(
          name, i < 0 ? 0
                      : detail::read_once(
                            state_->view->entry(false, static_cast<std::uint32_t>(i)).count));
    }
  });
  return out;
}

std::size_t Bus::numpat() const {
  return state_->view->header().pattern_count.load(std::memory_order_acquire);
}

const Limits& Bus::limits() const noexcept {
  return state_->limits;
}
const std::string& Bus::name() const noexcept {
  return state_->name;
}
bool Bus::coordinator_alive() const {
  return detail::coordinator_running(*state_->view);
}

// ---------------------------------------------------------------------------------------------
// Inspection

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
  detail::read_registry_within(view, bus, patience,
                               [&] { detail::collect_names(view, false, names); });
  for (auto& [name, count] : names) st.channels.push_back({std::move(name), count});
  detail::read_registry_within(view, bus, patience,
                               [&] { detail::collect_names(view, true, names); });
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
    st.clients.push_back(c);
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
