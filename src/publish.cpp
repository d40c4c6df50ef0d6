// The publish path. A publish looks up its route in this thread's cache and, while the route
// version of the channel's bucket has not moved, writes straight into the subscribers' rings:
// no lock, no system call. Only a cold or moved route reads the registry (resolve()) and maps
// rings (ring_for()).
#include "publish.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "client.hpp"
#include "pool.hpp"
#include "ring.hpp"

namespace shmcast {

namespace detail {

namespace {

std::atomic<std::uint32_t> g_pid{0};

// This process's pid without a system call per use (refreshed in a forked child): the writer
// id of the ring records it writes.
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
  // channel (map nodes and their keys do not move; cleared with the map).
  std::string_view last_name;
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

// Two unaligned words of a name, or one, loaded as integers.
template <class Word>
Word word_at(const char* p) noexcept {
  Word w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// Are two names equal? Those of 4 to 16 bytes (most channel names) are compared inline, as two
// overlapping words each: a call to memcmp was a third of the time of a publish that nobody
// receives.
bool same_name(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = a.size();
  if (n != b.size()) return false;
  if (n >= 8 && n <= 16) {
    return word_at<std::uint64_t>(a.data()) == word_at<std::uint64_t>(b.data()) &&
           word_at<std::uint64_t>(a.data() + n - 8) == word_at<std::uint64_t>(b.data() + n - 8);
  }
  if (n >= 4 && n < 8) {
    return word_at<std::uint32_t>(a.data()) == word_at<std::uint32_t>(b.data()) &&
           word_at<std::uint32_t>(a.data() + n - 4) == word_at<std::uint32_t>(b.data() + n - 4);
  }
  return n == 0 || std::memcmp(a.data(), b.data(), n) == 0;
}

Route* cached_route(PublisherCache& cache, std::string_view channel) {
  if (cache.last_route != nullptr && same_name(cache.last_name, channel)) return cache.last_route;
  const auto it = cache.routes.find(channel);
  if (it == cache.routes.end()) return nullptr;
  cache.last_name = it->first;
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
      targets.push_back(
          {ring, t.table == Table::patterns ? FrameKind::pmessage : FrameKind::message, t.sid});
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
  cache.last_name = slot->first;
  cache.last_route = &route;
  return route;
}

[[noreturn, gnu::cold]] void refuse_publish(const Limits& limits, std::size_t channel,
                                            std::size_t payload) {
  if (channel > limits.max_channel) throw over_limit(Bounded::channel, channel, limits.max_channel);
  throw over_limit(Bounded::payload, payload, limits.max_payload);
}

// What a record carries a reference to: nothing for a copied payload, a chunk for a loan. A
// chunk's reference is taken before its record is written, so that a subscriber that reads and
// lets go of it at once cannot free it while others are still being written; and its bytes
// count against what the subscriber's unread records may pin, which refuses the record (a
// drop, as a full ring) once a subscriber that stopped reading holds its share of the pool.
struct NoReference {
  bool take(RingProducer& /*ring*/) const noexcept { return true; }
  void undo(RingProducer& /*ring*/) const noexcept {}
};
struct ChunkReference {
  std::atomic<std::uint32_t>* refs;
  std::uint64_t pinned;
  std::uint64_t limit;
  bool take(RingProducer& ring) const noexcept {
    if (!ring.pin(pinned, limit)) return false;
    refs->fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  void undo(RingProducer& ring) const noexcept {
    refs->fetch_sub(1, std::memory_order_relaxed);
    ring.unpin(pinned);
  }
};

// How many rings ahead of its writes a publish to many asks for their lines.
constexpr std::size_t kPrefetchAhead = 4;

// Writes one frame per target; out of line, so a publish that reaches nobody stays short.
template <class Reference>
[[gnu::noinline]] std::size_t deliver(const Route& route, std::string_view channel,
                                      std::span<const std::byte> payload, std::uint8_t flags,
                                      const Reference& reference) {
  FrameHeader header{};
  header.flags = flags;
  header.name_len = static_cast<std::uint32_t>(channel.size());
  const std::span<const std::byte> parts[] = {
      std::as_bytes(std::span<const FrameHeader, 1>(&header, 1)),
      std::as_bytes(std::span<const char>(channel.data(), channel.size())), payload};
  const std::uint32_t writer = current_pid();
  std::size_t delivered = 0;
  if (route.targets.size() == 1) {
    const RouteTarget& t = route.targets.front();
    header.kind = static_cast<std::uint8_t>(t.kind);
    header.sid = t.sid;
    if (!reference.take(t.ring->producer)) return 0;
    if (t.ring->producer.try_write(parts, writer) == WriteStatus::ok) return 1;
    reference.undo(t.ring->producer);
    return 0;
  }
  // Every ring is written before any subscriber is woken: a wake-up made in the middle would
  // hand the core to a subscriber while the others still wait for the message.
  const std::size_t n = route.targets.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) route.targets[i + kPrefetchAhead].ring->producer.prefetch();
    const RouteTarget& t = route.targets[i];
    header.kind = static_cast<std::uint8_t>(t.kind);
    header.sid = t.sid;
    if (!reference.take(t.ring->producer)) continue;
    if (t.ring->producer.try_write(parts, writer, Wake::later) == WriteStatus::ok) {
      ++delivered;
    } else {
      reference.undo(t.ring->producer);
    }
  }
  if (delivered > 0) {
    commit_fence();
    for (const RouteTarget& t : route.targets) t.ring->producer.wake_fenced();
  }
  return delivered;
}

// Writes every payload into each target's ring as one batch, then wakes those that sleep.
[[gnu::noinline]] std::size_t deliver_batch(const Route& route, std::string_view channel,
                                            std::span<const std::string_view> payloads) {
  thread_local std::vector<std::array<std::span<const std::byte>, 3>> parts;
  thread_local std::vector<std::span<const std::span<const std::byte>>> records;
  FrameHeader header{};
  header.name_len = static_cast<std::uint32_t>(channel.size());
  const auto head = std::as_bytes(std::span<const FrameHeader, 1>(&header, 1));
  const auto name = std::as_bytes(std::span<const char>(channel.data(), channel.size()));
  parts.resize(payloads.size());
  records.resize(payloads.size());
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    parts[i] = {head, name, std::as_bytes(std::span<const char>(payloads[i]))};
    records[i] = parts[i];
  }
  const std::uint32_t writer = current_pid();
  std::size_t delivered = 0;
  for (const RouteTarget& t : route.targets) {
    header.kind = static_cast<std::uint8_t>(t.kind);
    header.sid = t.sid;
    delivered += t.ring->producer.try_write_batch(records, writer);
  }
  if (delivered > 0) {
    commit_fence();
    for (const RouteTarget& t : route.targets) t.ring->producer.wake_fenced();
  }
  return delivered;
}

// The route of `channel` for this thread, resolved again if the registry moved under it.
Route& route_of(const std::shared_ptr<BusState>& state, std::string_view channel) {
  PublisherCache& cache = publisher_cache(state);
  Route* route = cached_route(cache, channel);
  if (route == nullptr || route->bucket->load(std::memory_order_acquire) != route->version ||
      (route->recheck && cache.view->header().routing_version.load(std::memory_order_acquire) !=
                             route->recheck_seq)) [[unlikely]] {
    route = &resolve(cache, channel);
  }
  return *route;
}

}  // namespace

std::uint64_t resolved_routes() noexcept {
  return t_resolved;
}

}  // namespace detail

std::size_t Bus::publish(std::string_view channel, std::span<const std::byte> payload) {
  const detail::BusState& s = *state_;
  if (channel.size() > s.limits.max_channel || payload.size() > s.limits.max_payload) [[unlikely]] {
    detail::refuse_publish(s.limits, channel.size(), payload.size());
  }
  const detail::Route& route = detail::route_of(state_, channel);
  if (route.targets.empty()) return 0;
  return detail::deliver(route, channel, payload, 0, detail::NoReference{});
}

std::size_t Bus::publish_batch(std::string_view channel,
                               std::span<const std::string_view> payloads) {
  const detail::BusState& s = *state_;
  std::size_t longest = 0;
  for (const std::string_view p : payloads) longest = std::max(longest, p.size());
  if (channel.size() > s.limits.max_channel || longest > s.limits.max_payload) [[unlikely]] {
    detail::refuse_publish(s.limits, channel.size(), longest);
  }
  if (payloads.empty()) return 0;
  const detail::Route& route = detail::route_of(state_, channel);
  if (route.targets.empty()) return 0;
  return detail::deliver_batch(route, channel, payloads);
}

std::size_t Bus::publish(std::string_view channel, Loan&& loan) {
  if (!loan || loan.bus_ != state_) {
    throw std::invalid_argument(loan ? "a loan is published on the Bus that lent it"
                                     : "this loan was published already, or never made");
  }
  const detail::BusState& s = *state_;
  if (channel.size() > s.limits.max_channel) [[unlikely]] {
    detail::refuse_publish(s.limits, channel.size(), 0);
  }
  detail::PoolOwner& pool = state_->pool();
  const detail::Chunk chunk{loan.chunk_, loan.blocks_, loan.serial_};
  const detail::LoanFrame frame{pool.ref(chunk), loan.size_};
  // Spent whatever happens next: the chunk is the pool's again once its references are gone.
  loan.bus_.reset();
  loan.data_ = nullptr;
  loan.size_ = 0;
  std::size_t delivered = 0;
  try {
    const detail::Route& route = detail::route_of(state_, channel);
    if (!route.targets.empty()) {
      delivered = detail::deliver(
          route, channel, std::as_bytes(std::span<const detail::LoanFrame, 1>(&frame, 1)),
          detail::kFrameLoaned,
          detail::ChunkReference{&pool.refs(chunk), detail::pinned_bytes(frame.length),
                                 s.limits.max_unread_loan_bytes});
    }
  } catch (...) {
    pool.published(chunk);
    throw;
  }
  pool.published(chunk);
  return delivered;
}

}  // namespace shmcast
