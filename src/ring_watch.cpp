#include "ring_watch.hpp"

#include <climits>
#include <new>
#include <stdexcept>

namespace shmcast::detail {

RingWatch::RingWatch(void* memory, std::size_t bytes, const BusHeader& bus)
    : layout_(static_cast<RingLayout*>(memory)),
      data_(static_cast<std::byte*>(memory) + sizeof(RingLayout)),
      capacity_(ring_checked_capacity(memory, bytes)),
      bus_(&bus) {
  if (capacity_ == 0) {
    throw std::invalid_argument(
        "ring watch: the ring's recorded capacity is invalid or larger than its memory");
  }
}

RingWatch::Pending RingWatch::pending() const noexcept {
  const std::uint64_t head =
      layout_->head.load(std::memory_order_acquire) & ~std::uint64_t{kRecordAlign - 1};
  const auto* header =
      std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(data_ + (head & (capacity_ - 1))));
  // Sequentially consistent, paired with the producer's commit, fence and load of `sleeping`,
  // as in RingConsumer::ready().
  const std::uint64_t word = header->load(std::memory_order_seq_cst);
  if (static_cast<std::int32_t>(static_cast<std::uint32_t>(word)) > 0) return Pending::record;
  return layout_->tail.load(std::memory_order_acquire) != head ? Pending::in_flight : Pending::none;
}

void RingWatch::announce_sleep() noexcept {
  // Before the announcement: a death counted after it, whose wake-up may come before the sleep,
  // then shows as a changed count and the sleep does not start.
  deaths_seen_ = static_cast<std::uint32_t>(bus_->deaths.load(std::memory_order_acquire));
  layout_->sleeping.store(kConsumerAsleep, std::memory_order_seq_cst);
}

void RingWatch::end_sleep() const noexcept {
  layout_->sleeping.store(kConsumerAwake, std::memory_order_relaxed);
}

void RingWatch::sleep(std::chrono::nanoseconds timeout) const noexcept {
  // Without futex_waitv, deaths are seen at the next step of kWaitvFallbackStep.
  futex_wait_either(&layout_->sleeping, kConsumerAsleep,
                    FutexAlso{deaths_futex(*bus_), deaths_seen_}, timeout, kWaitvFallbackStep);
  end_sleep();
}

void RingWatch::wake_sleepers() const noexcept {
  layout_->sleeping.store(kConsumerAwake, std::memory_order_seq_cst);
  futex_wake(&layout_->sleeping, INT_MAX);
}

}  // namespace shmcast::detail
