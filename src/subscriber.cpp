// Subscriber: a client slot with its own ring, and the stream of frames read from it.
#include "shmcast/subscriber.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <unordered_map>

#include <fmt/format.h>

#include "client.hpp"
#include "held_payload.hpp"
#include "pool.hpp"
#include "ring_watch.hpp"
#include "subscriber_fd.hpp"
#include "waiter.hpp"

namespace shmcast {

namespace detail {

namespace {

std::uint64_t deaths_of(void* view) {
  return static_cast<ControlView*>(view)->header().deaths.load(std::memory_order_acquire);
}

}  // namespace

class SubscriberState {
 public:
  explicit SubscriberState(const std::shared_ptr<BusState>& bus)
      : bus_(bus), slot_(bus), link_(slot_.link()), ring_(create_ring(*bus, link_)) {
    std::byte* at = ring_.base() + kSegmentHeaderSize;
    const std::size_t bytes = ring_.size() - kSegmentHeaderSize;
    StallPolicy policy;
    policy.death_count = &deaths_of;
    policy.context = bus->view.get();
    consumer_ = RingConsumer(at, bytes, policy);
    try {
      slot_.attach_ring(bus->limits.ring_bytes);
    } catch (...) {
      Segment::remove(ring_.name());
      throw;
    }
  }

  ~SubscriberState() = default;  // the coordinator removes the ring as the slot lets it go

  std::size_t count() const { return channels_.size() + patterns_.size(); }

  std::size_t subscribe(std::span<const std::string> names, bool pattern) {
    check_names(names, pattern);
    auto& held = pattern ? patterns_ : channels_;
    const Kind kind = pattern ? Kind::psubscribe : Kind::subscribe;
    for (const std::string& name : names) {
      if (held.contains(name)) {
        confirm(kind, 0, name, true);
        continue;
      }
      if (count() >= bus_->limits.max_subscriptions) {
        throw too_many_subscriptions(bus_->limits.max_subscriptions);
      }
      const std::uint32_t sid = ++next_sid_;
      // A publisher claims its record after it read the registry that shows the new
      // subscription, so every record it routes starts at or after the tail read before the
      // request: the confirmation goes there, ahead of them all.
      held.emplace(name, sid);
      confirm(kind, sid, name, true);
      try {
        link_.request(pattern ? Op::psubscribe : Op::subscribe, sid, name);
      } catch (...) {
        held.erase(name);
        confirmations_.pop_back();
        throw;
      }
    }
    return count();
  }

  std::size_t unsubscribe(std::span<const std::string> names, bool pattern) {
    auto& held = pattern ? patterns_ : channels_;
    const Kind kind = pattern ? Kind::punsubscribe : Kind::unsubscribe;
    if (names.empty()) {
      if (held.empty()) {
        confirm(kind, 0, {}, false);
        return count();
      }
      std::vector<std::string> all;
      for (const auto& [name, sid] : held) all.push_back(name);
      return unsubscribe(all, pattern);
    }
    for (const std::string& name : names) {
      const auto it = held.find(name);
      if (it == held.end()) {
        confirm(kind, 0, name, true);
        continue;
      }
      const std::uint32_t sid = it->second;
      link_.request(pattern ? Op::punsubscribe : Op::unsubscribe, sid, name);
      held.erase(it);
      // Records claimed before the tail read now may carry the subscription and come first; a
      // publisher that read the registry before the request may still claim after it, and the
      // reader drops those, having retired the subscription with this confirmation.
      confirm(kind, sid, name, true);
    }
    return count();
  }

  // Hands at most one frame to `deliver(const MessageView&)`; false if none was ready. The gap
  // and the confirmations are not in the ring: each waits for the head to reach its position.
  template <class F>
  bool next(F&& deliver) {
    for (;;) {
      // Drops counted so far happened while the ring held what is claimed now: their gap goes
      // after that. Drops counted later get a gap of their own, further on.
      if (!gap_pending_) {
        const std::uint64_t dropped = consumer_.dropped();
        if (dropped > seen_dropped_) {
          gap_pending_ = true;
          gap_dropped_ = dropped;
          gap_at_ = consumer_.claimed();
        } else {
          seen_dropped_ = dropped;  // only a writer that rewound the shared counter gets here
        }
      }
      const bool confirmation_due = !confirmations_.empty() && reached(confirmations_.front().at);
      // A gap and a confirmation at one position: the gap first, as when confirmations were
      // records of the ring.
      if (gap_pending_ && reached(gap_at_) &&
          !(confirmation_due && ring_before(confirmations_.front().at, gap_at_))) {
        MessageView gap;
        gap.kind = Kind::gap;
        gap.count = static_cast<std::int64_t>(gap_dropped_ - seen_dropped_);
        seen_dropped_ = gap_dropped_;
        gap_pending_ = false;
        deliver(gap);
        return true;
      }
      if (confirmation_due) {
        deliver_confirmation(deliver);
        return true;
      }
      std::optional<std::uint64_t> stop;
      if (gap_pending_) stop = gap_at_;
      if (!confirmations_.empty() && (!stop || ring_before(confirmations_.front().at, *stop))) {
        stop = confirmations_.front().at;
      }
      bool delivered = false;
      const ReadStatus status = consumer_.try_read(
          [&](std::span<const std::byte> record) {
            if (const auto view = parse(record)) {
              deliver(*view);
              delivered = true;
            }
          },
          stop);
      // The record's reference to a loaned payload goes once the record is consumed: a
      // subscriber killed in between leaks it, never drops it twice (the coordinator drops the
      // references of the records left in a dead subscriber's ring).
      if (unpin_ != 0) {
        consumer_.unpin(unpin_);
        unpin_ = 0;
      }
      if (current_.pool) {
        current_.pool->release(current_.ref);
        current_ = {};
      }
      if (status == ReadStatus::record) {
        if (delivered) return true;
        continue;
      }
      if (!stop || !reached(*stop)) {
        if (fd_) fd_->rearm();
        return false;
      }
    }
  }

  std::optional<Message> try_receive() {
    std::optional<Message> out;
    next([&](const MessageView& v) {
      out = Message{v.kind,
                    std::string(v.pattern),
                    std::string(v.channel),
                    std::string(v.payload),
                    v.count,
                    v.has_name};
    });
    return out;
  }

  std::optional<Message> receive(std::chrono::nanoseconds timeout, Wait wait) {
    const bool forever = timeout.count() < 0;
    const auto deadline =
        std::chrono::steady_clock::now() + (forever ? std::chrono::nanoseconds(0) : timeout);
    for (;;) {
      if (auto m = try_receive()) return m;
      if (!wait_until(forever, deadline, wait)) return std::nullopt;
    }
  }

  std::size_t listen(const std::function<bool(const MessageView&)>& handler,
                     std::chrono::nanoseconds timeout, Wait wait) {
    const bool forever = timeout.count() < 0;
    std::size_t handled = 0;
    bool go_on = true;
    // The clock is read only when the ring runs empty, not once per frame.
    bool fresh = true;
    std::chrono::steady_clock::time_point deadline;
    while (go_on) {
      if (next([&](const MessageView& v) {
            ++handled;
            go_on = handler(v);
          })) {
        fresh = true;
        continue;
      }
      if (fresh && !forever) deadline = std::chrono::steady_clock::now() + timeout;
      fresh = false;
      if (!wait_until(forever, deadline, wait)) break;
    }
    return handled;
  }

  std::uint64_t dropped() const { return consumer_.dropped(); }

  std::unique_ptr<HeldPayload> keep(const MessageView& frame) {
    auto held = std::make_unique<HeldPayload>();
    if (!current_.pool || reinterpret_cast<const std::byte*>(frame.payload.data()) != current_.at) {
      held->copy = std::string(frame.payload);
      return held;
    }
    const std::uint32_t slot = bus_->link->slot();
    Hold* holds = bus_->view->holds(slot);
    const std::uint32_t count = bus_->limits.max_holds;
    for (std::uint32_t k = 0; k < count; ++k) {
      Hold& h = holds[(next_hold_ + k) % count];
      std::uint32_t expected = kHoldFree;
      if (!h.state.compare_exchange_strong(expected, kHoldFilling, std::memory_order_acq_rel)) {
        continue;
      }
      next_hold_ = (next_hold_ + k + 1) % count;
      // The reference before the hold says held: a process killed in between leaks it rather
      // than have the coordinator drop one it never took.
      current_.pool->retain(current_.ref);
      h.ref = current_.ref;
      h.state.store(kHoldHeld, std::memory_order_release);
      held->pool = current_.pool;
      held->bus = bus_;
      held->hold = &h;
      held->ref = current_.ref;
      held->bytes = std::span<const std::byte>(current_.at, frame.payload.size());
      return held;
    }
    throw Error(Errc::too_many_holds,
                fmt::format("bus '{}': this connection keeps {} loaned payloads already "
                            "(--max-holds): release some (Payload::reset) before keeping more, "
                            "or restart shmcastd with a larger --max-holds",
                            bus_->name, count));
  }

  int fd() {
    if (!fd_) {
      fd_ = std::make_unique<SubscriberFd>(RingWatch(ring_.base() + kSegmentHeaderSize,
                                                     ring_.size() - kSegmentHeaderSize,
                                                     bus_->view->header()));
      // The watcher sees the ring; what waits outside it must make the fd readable here.
      if (!confirmations_.empty() || gap_pending_ || consumer_.dropped() != seen_dropped_) {
        fd_->post();
      }
    }
    return fd_->fd();
  }

 private:
  struct Active {
    bool pattern;
    std::string name;
  };

  // A confirmation kept out of the ring, so (un)subscribing needs no room there: it enters the
  // stream when the reader reaches `at`, the ring position it belongs at.
  struct Confirmation {
    std::uint64_t at;
    Kind kind;
    std::uint32_t sid;  // the subscription made or removed; 0 if none was
    std::string name;
    bool has_name;
    std::int64_t count;
  };

  // Has the reader reached ring position `at`? A position more than a ring ahead was read from
  // an overwritten tail: it counts as reached, or its frame would wait for ever.
  bool reached(std::uint64_t at) const {
    const std::uint64_t head = consumer_.position();
    return !ring_before(head, at) || at - head > bus_->limits.ring_bytes;
  }

  // Queues the confirmation of one step at the tail claimed now: after every record claimed
  // before it.
  void confirm(Kind kind, std::uint32_t sid, std::string_view name, bool has_name) {
    confirmations_.push_back(Confirmation{consumer_.claimed(), kind, sid, std::string(name),
                                          has_name, static_cast<std::int64_t>(count())});
    if (fd_) fd_->post();
  }

  // Hands the first queued confirmation to `deliver` and puts its step in force for the
  // records after it.
  template <class F>
  void deliver_confirmation(F&& deliver) {
    const Confirmation& c = confirmations_.front();
    if (c.sid != 0) {
      if (c.kind == Kind::subscribe || c.kind == Kind::psubscribe) {
        active_[c.sid] = Active{c.kind == Kind::psubscribe, c.name};
      } else {
        active_.erase(c.sid);
        hot_ = nullptr;
      }
    }
    MessageView m;
    m.kind = c.kind;
    m.channel = c.name;
    m.count = c.count;
    m.has_name = c.has_name;
    deliver(m);
    confirmations_.pop_front();
  }

  // Waits for the ring until `deadline`; false once it has passed. Each sleep is capped (see
  // kLongestSleep), so a wake-up lost to an overwritten `sleeping` word delays the reader, never
  // stops it; a death on the bus wakes it too, for a publisher may have died between its commit
  // and its wake-up.
  bool wait_until(bool forever, std::chrono::steady_clock::time_point deadline, Wait wait) {
    const auto now = std::chrono::steady_clock::now();
    if (!forever && now >= deadline) return false;
    // The pools read from are let go once removed, while waiting (so at no cost per message).
    if (reads_pools_) {
      last_pool_.reset();
      reads_pools_ = bus_->forget_removed_pools();
    }
    // Once fd() is in use its watcher is the ring's one sleeper, so this waits on the fd.
    if (fd_ && wait != Wait::spin) {
      fd_->wait(forever ? std::chrono::nanoseconds(-1) : deadline - now);
      return true;
    }
    const std::atomic<std::uint64_t>& deaths = bus_->view->header().deaths;
    const FutexAlso death_watch{deaths_futex(bus_->view->header()),
                                static_cast<std::uint32_t>(deaths.load(std::memory_order_acquire))};
    waiter_.wait(consumer_, wait,
                 forever ? kLongestSleep : std::chrono::nanoseconds(deadline - now), death_watch);
    return true;
  }

  static Segment create_ring(const BusState& bus, const ClientLink& link) {
    Permissions perms;
    perms.mode = bus.view->segment_mode();
    perms.group = bus.view->segment_group();
    const std::string name = ring_name(bus.name, link.slot(), link.generation());
    Segment::remove(name);  // a leftover of a client that died while no coordinator ran
    try {
      Segment ring = Segment::create(name, kSegmentHeaderSize + ring_bytes(bus.limits.ring_bytes),
                                     SegmentKind::ring, kLayoutVersion, perms);
      ring_init(ring.base() + kSegmentHeaderSize, bus.limits.ring_bytes);
      ring.publish();
      return ring;
    } catch (const SegmentError& e) {
      throw Error(
          e.code() == SegmentErrc::permission_denied ? Errc::permission_denied : Errc::system,
          fmt::format("bus '{}': cannot create this subscriber's ring: {}", bus.name, e.what()));
    }
  }

  void check_names(std::span<const std::string> names, bool pattern) const {
    const std::uint32_t limit = pattern ? bus_->limits.max_pattern : bus_->limits.max_channel;
    for (const std::string& name : names) {
      if (name.size() > limit) {
        throw over_limit(pattern ? Bounded::pattern : Bounded::channel, name.size(), limit);
      }
    }
  }

  std::optional<MessageView> parse(std::span<const std::byte> record) {
    FrameHeader h{};
    if (record.size() < sizeof h) return std::nullopt;
    std::memcpy(&h, record.data(), sizeof h);
    if (h.name_len > record.size() - sizeof h) return std::nullopt;
    const auto* text = reinterpret_cast<const char*>(record.data()) + sizeof h;
    const std::string_view name(text, h.name_len);
    std::string_view rest(text + h.name_len, record.size() - sizeof h - h.name_len);
    if ((h.flags & kFrameLoaned) != 0) {
      // Only a descriptor that names a live chunk inside a pool is read, or released.
      LoanFrame frame{};
      if (rest.size() != sizeof frame) return std::nullopt;
      std::memcpy(&frame, rest.data(), sizeof frame);
      unpin_ = pinned_bytes(frame.length);
      if (!last_pool_ || last_pool_->slot() != frame.ref.pool_slot ||
          last_pool_->id() != frame.ref.pool_id) {
        last_pool_ = bus_->pool_view(frame.ref.pool_slot, frame.ref.pool_id);
      }
      if (!last_pool_) return std::nullopt;
      reads_pools_ = true;
      std::shared_ptr<const PoolView> pool = last_pool_;
      const auto bytes = pool->payload(frame);
      if (!bytes) return std::nullopt;
      current_ = {std::move(pool), frame.ref, bytes->data()};
      rest = std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    }
    const bool pmessage = h.kind == static_cast<std::uint8_t>(FrameKind::pmessage);
    if (!pmessage && h.kind != static_cast<std::uint8_t>(FrameKind::message)) return std::nullopt;
    const Active* active = find_active(h.sid);
    // A publisher that read the registry just before an unsubscribe may still write; the
    // subscription it names is gone from the stream, so the record is dropped here.
    if (active == nullptr || active->pattern != pmessage) return std::nullopt;
    MessageView m;
    m.kind = active->pattern ? Kind::pmessage : Kind::message;
    if (active->pattern) m.pattern = active->name;
    m.channel = name;
    m.payload = rest;
    return m;
  }

  // The subscription of the last message, found without a lookup when the next one has the
  // same (the common case: a stream of one channel).
  const Active* find_active(std::uint32_t sid) {
    if (hot_ == nullptr || sid != hot_sid_) {
      const auto it = active_.find(sid);
      if (it == active_.end()) return nullptr;
      hot_sid_ = sid;
      hot_ = &it->second;
    }
    return hot_;
  }

  // The loaned payload of the record being read: its reference is released once it is consumed.
  struct CurrentLoan {
    std::shared_ptr<const PoolView> pool;
    LoanRef ref{};
    const std::byte* at = nullptr;
  };

  std::shared_ptr<BusState> bus_;
  SubscriberSlot slot_;
  ClientLink& link_;
  Segment ring_;
  RingConsumer consumer_;
  Waiter waiter_;
  std::unordered_map<std::string, std::uint32_t> channels_;
  std::unordered_map<std::string, std::uint32_t> patterns_;
  std::unordered_map<std::uint32_t, Active> active_;  // subscriptions in force at the read position
  std::deque<Confirmation> confirmations_;            // in position order
  std::uint32_t hot_sid_ = 0;
  const Active* hot_ = nullptr;  // active_[hot_sid_], or null; erasing from active_ clears it
  std::uint32_t next_sid_ = 0;
  std::uint64_t seen_dropped_ = 0;
  bool gap_pending_ = false;
  std::uint64_t gap_dropped_ = 0;  // the drop counter when the pending gap was seen
  std::uint64_t gap_at_ = 0;       // ring position after which the pending gap is reported
  std::shared_ptr<const PoolView> last_pool_;  // the pool of the last loaned record
  bool reads_pools_ = false;                   // this process may map pools to let go
  CurrentLoan current_;
  std::uint64_t unpin_ = 0;      // pool bytes the record being read pinned in the ring
  std::uint32_t next_hold_ = 0;  // where the search for a free hold starts
  // Made by the first fd(). Last, so its watcher stops before the ring it reads goes away.
  std::unique_ptr<SubscriberFd> fd_;
};

}  // namespace detail

Subscriber Bus::subscriber() {
  return Subscriber(std::make_unique<detail::SubscriberState>(state_));
}

Subscriber::Subscriber(std::unique_ptr<detail::SubscriberState> state) : state_(std::move(state)) {}
Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&&) noexcept = default;
Subscriber::~Subscriber() {
  // A thread left SCHED_BATCH between naps does not keep it past its subscriber (on this
  // thread; another thread's waits end it at their next wait that does not nap).
  detail::leave_batch();
}

std::size_t Subscriber::subscribe(std::span<const std::string> channels) {
  return state_->subscribe(channels, false);
}
std::size_t Subscriber::psubscribe(std::span<const std::string> patterns) {
  return state_->subscribe(patterns, true);
}
std::size_t Subscriber::unsubscribe(std::span<const std::string> channels) {
  return state_->unsubscribe(channels, false);
}
std::size_t Subscriber::punsubscribe(std::span<const std::string> patterns) {
  return state_->unsubscribe(patterns, true);
}
std::optional<Message> Subscriber::receive(std::chrono::nanoseconds timeout, Wait wait) {
  return state_->receive(timeout, wait);
}
std::optional<Message> Subscriber::try_receive() {
  return state_->try_receive();
}
std::size_t Subscriber::listen(const std::function<bool(const MessageView&)>& handler,
                               std::chrono::nanoseconds timeout, Wait wait) {
  return state_->listen(handler, timeout, wait);
}
std::size_t Subscriber::subscription_count() const {
  return state_->count();
}
std::uint64_t Subscriber::dropped() const {
  return state_->dropped();
}
int Subscriber::fd() const {
  return state_->fd();
}
Payload Subscriber::keep(const MessageView& frame) {
  return Payload(state_->keep(frame));
}

}  // namespace shmcast
