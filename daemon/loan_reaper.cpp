#include "loan_reaper.hpp"

#include <cstring>

#include "layout.hpp"

namespace shmcast::daemon {

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

void LoanReaper::pass() {
  drain_rings();
  std::erase_if(orphans_, [&](const std::pair<std::uint32_t, std::uint32_t>& p) {
    const auto pool = pools_.find(p.first, p.second);
    if (pool && pool->use().chunks > 0) return false;
    pools_.forget(p.first, p.second);
    detail::Segment::remove(detail::pool_name(bus_, p.first, p.second));
    return true;
  });
}

void LoanReaper::remove_all_pools() {
  for (const auto& [slot, id] : detail::find_pools(bus_, std::nullopt)) {
    pools_.forget(slot, id);
    detail::Segment::remove(detail::pool_name(bus_, slot, id));
  }
  orphans_.clear();
}

}  // namespace shmcast::daemon
