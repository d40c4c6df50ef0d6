#include "loan_reaper.hpp"

#include <algorithm>
#include <cstring>

#include "layout.hpp"

namespace shmcast::daemon {

namespace {

const detail::RingLayout& layout_of(const detail::Segment& ring) {
  return *reinterpret_cast<const detail::RingLayout*>(ring.base() + detail::kSegmentHeaderSize);
}

}  // namespace

void LoanReaper::release(const detail::LoanRef& ref) {
  if (const auto pool = pools_.find(ref.pool_slot, ref.pool_id)) pool->release(ref);
}

void LoanReaper::drain(detail::RingConsumer& consumer) {
  // Bounded: a ring holds at most capacity / record-size records, and each is consumed.
  for (;;) {
    const detail::ReadStatus status = consumer.try_read([&](std::span<const std::byte> record) {
      detail::FrameHeader h{};
      detail::LoanFrame frame{};
      if (record.size() < sizeof h) return;
      std::memcpy(&h, record.data(), sizeof h);
      if ((h.flags & detail::kFrameLoaned) == 0 ||
          record.size() != sizeof h + std::size_t{h.name_len} + sizeof frame) {
        return;
      }
      std::memcpy(&frame, record.data() + sizeof h + h.name_len, sizeof frame);
      release(frame.ref);
    });
    if (status != detail::ReadStatus::record) return;
  }
}

void LoanReaper::keep_ring(const std::string& name) {
  try {
    detail::Segment segment =
        detail::Segment::open(name, detail::SegmentKind::ring, detail::kLayoutVersion);
    detail::RingConsumer consumer(segment.base() + detail::kSegmentHeaderSize,
                                  segment.size() - detail::kSegmentHeaderSize);
    draining_.push_back(std::make_unique<Draining>(
        Draining{std::move(segment), consumer, std::chrono::steady_clock::now() + kRingDrainTime}));
  } catch (const std::exception&) {
    // No ring (the client had none, or it was never published) or not a ring: nothing to drop.
  }
}

void LoanReaper::drain_rings() {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(draining_, [&](const std::unique_ptr<Draining>& d) {
    drain(d->consumer);
    return now >= d->until;
  });
}

void LoanReaper::release_holds(detail::Hold* holds, std::uint32_t count) {
  for (std::uint32_t i = 0; i < count; ++i) {
    detail::Hold& h = holds[i];
    // A hold still filling may not have its reference yet: it is leaked, never dropped twice.
    if (h.state.load(std::memory_order_acquire) == detail::kHoldHeld) release(h.ref);
    h.state.store(detail::kHoldFree, std::memory_order_release);
  }
}

void LoanReaper::orphan_pools(std::uint32_t slot) {
  for (const auto& pool : detail::find_pools(bus_, slot)) orphans_.insert(pool);
}

void LoanReaper::orphan_pools_except(const std::vector<bool>& live_slots) {
  for (const auto& pool : detail::find_pools(bus_, std::nullopt)) {
    if (pool.first >= live_slots.size() || !live_slots[pool.first]) orphans_.insert(pool);
  }
}

void LoanReaper::pass(std::span<const LiveClient> live) {
  drain_rings();
  std::erase_if(orphans_, [&](const PoolId& p) {
    const auto pool = pools_.find(p.first, p.second);
    if (pool && pool->use().chunks > 0 && still_read(p, live)) return false;
    audits_.erase(p);
    pools_.forget(p.first, p.second);
    detail::Segment::remove(detail::pool_name(bus_, p.first, p.second));
    return true;
  });
}

// An orphan pool's chunks may count a reference nobody will drop: a client killed between
// taking or dropping one and marking it leaks it. Its publisher is gone, so nothing writes the
// pool again, and it can go once no live client can read it: every live ring has been read up
// to where its tail stood when the audit began (no record naming the pool comes after that),
// and no live hold is of it. Rings first: a client marks a hold before it consumes the record
// it keeps, so a record read past has its hold already marked.
bool LoanReaper::still_read(const PoolId& pool, std::span<const LiveClient> live) {
  const auto [it, fresh] = audits_.try_emplace(pool);
  std::vector<AuditedRing>& rings = it->second;
  if (fresh) {
    for (const LiveClient& c : live) {
      if (!c.has_ring) continue;
      try {
        detail::Segment segment = detail::Segment::open(
            detail::ring_name(bus_, c.slot, c.generation), detail::SegmentKind::ring,
            detail::kLayoutVersion, detail::kSegmentHeaderSize + sizeof(detail::RingLayout));
        const std::uint64_t tail = layout_of(segment).tail.load(std::memory_order_acquire);
        rings.push_back({c.slot, c.generation, std::move(segment), tail});
      } catch (const std::exception&) {
        // Gone since (the client left): its records were dropped with it.
      }
    }
  }
  std::erase_if(rings, [&](const AuditedRing& r) {
    const auto c = std::lower_bound(
        live.begin(), live.end(), r.slot,
        [](const LiveClient& client, std::uint32_t slot) { return client.slot < slot; });
    const bool attached =
        c != live.end() && c->slot == r.slot && c->generation == r.generation && c->has_ring;
    return !attached || layout_of(r.segment).head.load(std::memory_order_acquire) >= r.until;
  });
  if (!rings.empty()) return true;
  for (const LiveClient& c : live) {
    for (const detail::Hold& h : c.holds) {
      const std::uint32_t state = h.state.load(std::memory_order_acquire);
      // A hold being filled may not name its pool yet.
      if (state == detail::kHoldFilling) return true;
      if (state == detail::kHoldHeld && h.ref.pool_slot == pool.first &&
          h.ref.pool_id == pool.second) {
        return true;
      }
    }
  }
  return false;
}

void LoanReaper::remove_all_pools() {
  for (const auto& [slot, id] : detail::find_pools(bus_, std::nullopt)) {
    pools_.forget(slot, id);
    detail::Segment::remove(detail::pool_name(bus_, slot, id));
  }
  orphans_.clear();
  audits_.clear();
}

}  // namespace shmcast::daemon
