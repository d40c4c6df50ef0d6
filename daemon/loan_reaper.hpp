// The coordinator's part in loans: the references a client leaves behind when it goes, and the
// pools nobody can publish from any more.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pool.hpp"
#include "ring.hpp"
#include "segment.hpp"

namespace shmcast::daemon {

/// How long a departed subscriber's ring is kept and read again: a publisher that resolved its
/// route before the subscriber left may still write to it for as long as it is descheduled.
inline constexpr std::chrono::milliseconds kRingDrainTime{1000};

/// A client attached now, as the timed pass sees it: the generation that names its ring (if it
/// has one) and its holds.
struct LiveClient {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  bool has_ring = false;
  std::span<const detail::Hold> holds;
};

class LoanReaper {
 public:
  explicit LoanReaper(std::string bus) : bus_(bus), pools_(std::move(bus)) {}

  /// Before the ring `name` is removed: maps it, to drop the references its unread records hold
  /// (drain_rings) and to read it again for kRingDrainTime.
  void keep_ring(const std::string& name);
  /// Drops the references of the loaned records readable now in the rings kept, and lets go of
  /// those kept for kRingDrainTime.
  void drain_rings();
  /// A client left its slot: drops the references of its holds (`count` of them) and frees them.
  void release_holds(detail::Hold* holds, std::uint32_t count);
  /// A client left `slot`: its pools are removed once nothing references them.
  void orphan_pools(std::uint32_t slot);
  /// At adoption: pools of slots that hold no live client are orphans.
  void orphan_pools_except(const std::vector<bool>& live_slots);
  /// The timed pass: drain_rings(), and removes the orphan pools no client of `live` (in slot
  /// order) can read any more (see still_read).
  void pass(std::span<const LiveClient> live);
  /// The bus goes: every pool goes with it.
  void remove_all_pools();

  [[nodiscard]] std::size_t orphans() const noexcept { return orphans_.size(); }

 private:
  struct Draining {
    detail::Segment segment;
    detail::RingConsumer consumer;
    std::chrono::steady_clock::time_point until;
  };
  using PoolId = std::pair<std::uint32_t, std::uint32_t>;  // owner slot, pool id
  // A live ring that may still hold records naming an orphan pool: those before `until`, its
  // tail when the audit began.
  struct AuditedRing {
    std::uint32_t slot;
    std::uint32_t generation;
    detail::Segment segment;
    std::uint64_t until;
  };
  // Drops the reference of each loaned record readable now.
  void drain(detail::RingConsumer& consumer);
  void release(const detail::LoanRef& ref);
  // Whether a client of `live` may still read the orphan pool `pool`, whose chunks count
  // references.
  bool still_read(const PoolId& pool, std::span<const LiveClient> live);

  std::string bus_;
  detail::PoolMaps pools_;
  std::vector<std::unique_ptr<Draining>> draining_;
  std::set<PoolId> orphans_;
  std::map<PoolId, std::vector<AuditedRing>> audits_;  // of the orphans still referenced
};

}  // namespace shmcast::daemon
