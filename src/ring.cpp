#include "ring.hpp"

#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <new>
#include <stdexcept>
#include <string>

#include "process.hpp"

namespace shmcast::detail {

void (*ring_write_hook)(RingWritePoint) = nullptr;

namespace {

constexpr std::uint32_t kPaddingFlag = 0x8000'0000U;
// The record ends its write: the rest of its cache line was claimed with it, and is zero.
constexpr std::uint32_t kLineEndFlag = 0x4000'0000U;
constexpr std::uint32_t kWriterMask = 0x3fff'ffffU;

constexpr std::uint64_t align_record(std::uint64_t n) noexcept {
  return (n + kRecordAlign - 1) & ~std::uint64_t{kRecordAlign - 1};
}

// Bytes from `end` to the next cache line.
constexpr std::uint64_t line_padding(std::uint64_t end) noexcept {
  return (kCacheLine - (end & (kCacheLine - 1))) & (kCacheLine - 1);
}

// The bytes a record of header `meta` and `length` (its header's, unsigned) at `pos` takes: its
// own, aligned, and the rest of its line if it ends its write.
constexpr std::uint64_t record_span(std::uint64_t pos, std::uint32_t meta,
                                    std::uint64_t length) noexcept {
  const std::uint64_t aligned = align_record(length);
  return (meta & kLineEndFlag) != 0 ? aligned + line_padding(pos + aligned) : aligned;
}

constexpr bool valid_capacity(std::uint64_t c) noexcept {
  return c >= kRingMinCapacity && c <= kRingMaxCapacity && (c & (c - 1)) == 0;
}

constexpr std::uint64_t header_word(std::uint32_t meta, std::int32_t length) noexcept {
  return (std::uint64_t{meta} << 32) | static_cast<std::uint32_t>(length);
}

std::atomic<std::uint64_t>* header_at(std::byte* data, std::size_t index) noexcept {
  return std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(data + index));
}

RingLayout* layout_of(void* memory) noexcept {
  return static_cast<RingLayout*>(memory);
}

std::byte* data_of(void* memory) noexcept {
  return static_cast<std::byte*>(memory) + sizeof(RingLayout);
}

bool pid_alive(std::uint32_t id, void* /*context*/) {
  if (id == 0) return true;  // unknown writer: only the stall limit applies
  if (kill(static_cast<pid_t>(id), 0) != 0 && errno != EPERM) return false;
  // A zombie still answers kill(); it has no start time any more.
  return process_start_ticks(static_cast<std::int32_t>(id)) != 0;
}

std::uint64_t checked(const void* memory, std::size_t bytes, const char* side) {
  const std::size_t capacity = ring_checked_capacity(memory, bytes);
  if (capacity == 0) {
    throw std::invalid_argument(
        std::string("ring ") + side +
        ": the ring's recorded capacity is invalid or larger than its memory");
  }
  return capacity;
}

inline void hook(RingWritePoint point) noexcept {
  if (ring_write_hook != nullptr) [[unlikely]]
    ring_write_hook(point);
}

}  // namespace

void ring_init(void* memory, std::size_t capacity) {
  if (!valid_capacity(capacity)) {
    throw std::invalid_argument(
        "ring capacity must be a power of two between 256 bytes and 2 GiB, not " +
        std::to_string(capacity));
  }
  auto* layout = new (memory) RingLayout{};
  layout->capacity = capacity;
}

std::size_t ring_checked_capacity(const void* memory, std::size_t bytes) noexcept {
  if (memory == nullptr || bytes < sizeof(RingLayout)) return 0;
  const std::uint64_t capacity = static_cast<const RingLayout*>(memory)->capacity;
  if (!valid_capacity(capacity) || capacity > bytes - sizeof(RingLayout)) return 0;
  return static_cast<std::size_t>(capacity);
}

// ---------------------------------------------------------------------------------------------
// Producer

RingProducer::RingProducer(void* memory, std::size_t bytes)
    : layout_(layout_of(memory)),
      data_(data_of(memory)),
      capacity_(checked(memory, bytes, "producer")) {}

std::uint64_t RingProducer::used() const noexcept {
  const std::uint64_t head = layout_->head.load(std::memory_order_acquire);
  const std::uint64_t tail = layout_->tail.load(std::memory_order_acquire);
  return tail >= head ? std::min(tail - head, capacity_) : 0;
}

WriteStatus RingProducer::try_write(std::span<const std::span<const std::byte>> parts,
                                    std::uint32_t writer, Wake when) noexcept {
  std::size_t length = 0;
  for (const auto& part : parts) length += part.size();
  if (length > ring_max_payload(capacity_)) return WriteStatus::too_big;
  writer &= kWriterMask;
  hook(RingWritePoint::before_claim);

  const std::uint64_t total = kRecordHeader + length;
  const std::uint64_t aligned = align_record(total);
  std::uint64_t tail = layout_->tail.load(std::memory_order_relaxed);
  std::uint64_t head = layout_->head_cache.load(std::memory_order_acquire);
  std::uint64_t index = 0;
  std::uint64_t need = 0;
  for (int stale = 0;;) {
    if ((tail & (kRecordAlign - 1)) != 0) [[unlikely]] {
      // Records start on 8-byte boundaries: only an overwritten tail is off them. Realign it.
      const std::uint64_t realigned = align_record(tail);
      if (layout_->tail.compare_exchange_weak(tail, realigned, std::memory_order_relaxed,
                                              std::memory_order_relaxed)) {
        tail = realigned;
      }
      continue;
    }
    index = tail & (capacity_ - 1);
    const std::uint64_t to_end = capacity_ - index;
    // A record never wraps: if it does not fit before the end, pad to the end and start at 0.
    // Then the rest of the line it ends on (never past the end of the ring, itself on a line).
    need = aligned <= to_end ? aligned : to_end + aligned;
    need += line_padding(tail + need);
    if (head > tail || tail - head + need > capacity_) {
      head = layout_->head.load(std::memory_order_acquire);
      if (head > tail) {
        // Our tail is older than the head just read; only a corrupt ring keeps this up.
        if (++stale > 64) {
          layout_->dropped.fetch_add(1, std::memory_order_release);
          return WriteStatus::full;
        }
        tail = layout_->tail.load(std::memory_order_relaxed);
        continue;
      }
      if (tail - head + need > capacity_) {
        // Release: a consumer that sees this drop (acquire) then sees a tail at least as far
        // as the one found full, so it places the drop's gap after what the ring held.
        layout_->dropped.fetch_add(1, std::memory_order_release);
        return WriteStatus::full;
      }
      layout_->head_cache.store(head, std::memory_order_release);
    }
    if (layout_->tail.compare_exchange_weak(tail, tail + need, std::memory_order_relaxed,
                                            std::memory_order_relaxed)) {
      break;
    }
  }
  hook(RingWritePoint::after_claim);

  const std::uint64_t to_end = capacity_ - index;
  if (aligned > to_end) {
    const std::uint64_t pad = to_end;
    header_at(data_, index)
        ->store(header_word(kPaddingFlag | writer, static_cast<std::int32_t>(pad)),
                std::memory_order_release);
    index = 0;
  }
  const std::uint32_t meta = line_padding(index + aligned) != 0 ? writer | kLineEndFlag : writer;
  auto* header = header_at(data_, index);
  const auto signed_total = static_cast<std::int32_t>(total);
  header->store(header_word(meta, -signed_total), std::memory_order_release);
  hook(RingWritePoint::after_header);

  std::byte* out = data_ + index + kRecordHeader;
  if (ring_write_hook == nullptr) [[likely]] {
    for (const auto& part : parts) {
      if (!part.empty()) std::memcpy(out, part.data(), part.size());
      out += part.size();
    }
  } else {
    // Copy byte runs so the hook can run exactly halfway through the payload.
    std::size_t before_mid = length / 2;
    bool mid_done = false;
    for (const auto& part : parts) {
      std::size_t done = 0;
      while (done < part.size()) {
        if (!mid_done && before_mid == 0) {
          hook(RingWritePoint::mid_copy);
          mid_done = true;
        }
        const std::size_t n =
            mid_done ? part.size() - done : std::min(part.size() - done, before_mid);
        std::memcpy(out, part.data() + done, n);
        out += n;
        done += n;
        if (!mid_done) before_mid -= n;
      }
    }
    if (!mid_done) hook(RingWritePoint::mid_copy);
  }
  hook(RingWritePoint::before_commit);

  // Commit. The full fence in wake() orders it before the load of `sleeping`, paired with the
  // consumer's sequentially consistent store of `sleeping` and load of the header in
  // announce_sleep(): either the consumer sees this record, or wake() sees that it sleeps.
  header->store(header_word(meta, signed_total), std::memory_order_release);
  hook(RingWritePoint::after_commit);
  next_ = tail + need;
  if (when == Wake::now) wake();
  return WriteStatus::ok;
}

std::size_t RingProducer::try_write_batch(
    std::span<const std::span<const std::span<const std::byte>>> records,
    std::uint32_t writer) noexcept {
  const auto one_by_one = [&](std::size_t from) {
    std::size_t written = from;
    for (std::size_t i = from; i < records.size(); ++i) {
      if (try_write(records[i], writer, Wake::later) == WriteStatus::ok) ++written;
    }
    return written;
  };
  if (records.size() < 2) return one_by_one(0);
  std::uint64_t bytes = 0;  // the records', without the rest of the last one's line
  for (const auto& parts : records) {
    std::size_t length = 0;
    for (const auto& part : parts) length += part.size();
    if (length > ring_max_payload(capacity_)) return one_by_one(0);
    bytes += align_record(kRecordHeader + length);
  }
  std::uint64_t need = 0;
  writer &= kWriterMask;
  hook(RingWritePoint::before_claim);
  std::uint64_t tail = layout_->tail.load(std::memory_order_relaxed);
  std::uint64_t head = layout_->head_cache.load(std::memory_order_acquire);
  for (;;) {
    need = bytes + line_padding(tail + bytes);
    // Only a batch that fits whole, and before the end of the ring, is claimed at once; any
    // other goes record by record, each dropped or padded as a single write would be.
    if ((tail & (kRecordAlign - 1)) != 0 || (tail & (capacity_ - 1)) + need > capacity_ ||
        head > tail) {
      return one_by_one(0);
    }
    if (tail - head + need > capacity_) {
      head = layout_->head.load(std::memory_order_acquire);
      if (head > tail || tail - head + need > capacity_) return one_by_one(0);
      layout_->head_cache.store(head, std::memory_order_release);
    }
    if (layout_->tail.compare_exchange_weak(tail, tail + need, std::memory_order_relaxed,
                                            std::memory_order_relaxed)) {
      break;
    }
  }
  hook(RingWritePoint::after_claim);
  std::uint64_t index = tail & (capacity_ - 1);
  for (std::size_t r = 0; r < records.size(); ++r) {
    const auto& parts = records[r];
    std::size_t length = 0;
    for (const auto& part : parts) length += part.size();
    const auto signed_total = static_cast<std::int32_t>(kRecordHeader + length);
    // The last record ends the write, and takes the rest of its line.
    const std::uint32_t meta =
        r + 1 == records.size() && need != bytes ? writer | kLineEndFlag : writer;
    auto* header = header_at(data_, index);
    header->store(header_word(meta, -signed_total), std::memory_order_release);
    hook(RingWritePoint::after_header);
    std::byte* out = data_ + index + kRecordHeader;
    for (const auto& part : parts) {
      if (!part.empty()) std::memcpy(out, part.data(), part.size());
      out += part.size();
    }
    hook(RingWritePoint::before_commit);
    // As in try_write: ordered before the consumer's announcement by the fence of wake().
    header->store(header_word(meta, signed_total), std::memory_order_release);
    hook(RingWritePoint::after_commit);
    index += align_record(kRecordHeader + length);
  }
  return records.size();
}

bool RingProducer::pin(std::uint64_t bytes, std::uint64_t limit) noexcept {
  if (layout_->loaned.fetch_add(bytes, std::memory_order_relaxed) + bytes <= limit) return true;
  unpin(bytes);
  // As a full ring's drop: the consumer places the gap after what the ring held.
  layout_->dropped.fetch_add(1, std::memory_order_release);
  return false;
}

namespace {

// Takes `bytes` off the count, never below zero: a forged record, or a writer that rewound the
// shared word, cannot make it wrap.
void unpin_from(std::atomic<std::uint64_t>& loaned, std::uint64_t bytes) noexcept {
  std::uint64_t n = loaned.load(std::memory_order_relaxed);
  while (!loaned.compare_exchange_weak(n, n > bytes ? n - bytes : 0, std::memory_order_relaxed)) {
  }
}

}  // namespace

void RingProducer::unpin(std::uint64_t bytes) noexcept {
  unpin_from(layout_->loaned, bytes);
}

void RingConsumer::unpin(std::uint64_t bytes) noexcept {
  unpin_from(layout_->loaned, bytes);
}

void commit_fence() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool RingProducer::wake() noexcept {
  commit_fence();
  return wake_fenced();
}

bool RingProducer::wake_fenced() noexcept {
  if (layout_->sleeping.load(std::memory_order_relaxed) != kConsumerAsleep) return false;
  // Only the producer that moves the word off `asleep` wakes: the others that committed since
  // the consumer slept find it notified and make no system call.
  std::uint32_t asleep = kConsumerAsleep;
  if (!layout_->sleeping.compare_exchange_strong(asleep, kConsumerNotified,
                                                 std::memory_order_relaxed)) {
    return false;
  }
  layout_->woken_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
  futex_wake(&layout_->sleeping, 1);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Consumer

RingConsumer::RingConsumer(void* memory, std::size_t bytes, StallPolicy policy)
    : layout_(layout_of(memory)),
      data_(data_of(memory)),
      capacity_(checked(memory, bytes, "consumer")),
      head_(layout_of(memory)->head.load(std::memory_order_acquire)),
      policy_(policy) {
  if (policy_.writer_alive == nullptr) policy_.writer_alive = pid_alive;
  // Align a head inherited from shared memory; a corrupt value is resynchronised on first read.
  head_ &= ~std::uint64_t{kRecordAlign - 1};
  tail_seen_ = head_;
  // A ring empty now (a subscriber's new ring, before any publisher can route to it) holds no
  // claim older than the deaths counted now. Without this, a consumer that never found its ring
  // empty (a flood from its first read on) would skip a live writer's claim after the short
  // grace, as if someone had died.
  count_deaths_if_empty();
}

void RingConsumer::count_deaths_if_empty() noexcept {
  if (policy_.death_count == nullptr) return;
  // Still empty after counting: any claim found stalled later was made after this count, so its
  // writer's death, if it dies, will show as a change.
  const std::uint64_t deaths = policy_.death_count(policy_.context);
  if (layout_->tail.load(std::memory_order_acquire) == head_) quiet_deaths_ = deaths;
}

RingConsumer::Next RingConsumer::next_record() noexcept {
  for (;;) {
    const std::size_t i = index(head_);
    const std::uint64_t word = header_at(data_, i)->load(std::memory_order_acquire);
    const auto length = static_cast<std::int32_t>(static_cast<std::uint32_t>(word));
    const auto meta = static_cast<std::uint32_t>(word >> 32);
    if (length > 0) {
      // A committed header implies a tail past it (the writer claimed before it committed), so
      // the tail seen last is reloaded only when the record runs past it: the consumer does not
      // pull the producers' tail line on every record.
      const std::uint64_t aligned = record_span(head_, meta, static_cast<std::uint64_t>(length));
      if (aligned > tail_seen_ - head_ || tail_seen_ - head_ > capacity_) {
        tail_seen_ = layout_->tail.load(std::memory_order_acquire);
      }
      const std::uint64_t claimed = tail_seen_ - head_;
      if (claimed > capacity_) {  // the tail (or our head) is not where a ring can be
        skip_to(tail_seen_, true);
        return {ReadStatus::empty, false, 0, 0};
      }
      if (claimed == 0) {
        // Garbage where nobody has claimed yet. Cleared only if still there: a producer that
        // claims meanwhile overwrites it with its own header.
        std::uint64_t garbage = word;
        header_at(data_, i)->compare_exchange_strong(garbage, 0, std::memory_order_relaxed);
        ++corrupt_;
        layout_->corrupt.store(corrupt_, std::memory_order_relaxed);
        return {ReadStatus::empty, false, 0, 0};
      }
      if (static_cast<std::uint64_t>(length) < kRecordHeader || aligned > capacity_ - i ||
          aligned > claimed) {
        skip_to(tail_seen_, true);
        continue;
      }
      stall_pos_ = ~std::uint64_t{0};
      return {ReadStatus::record, (meta & kPaddingFlag) != 0,
              static_cast<std::size_t>(length) - kRecordHeader, static_cast<std::size_t>(aligned)};
    }
    // Loaded after the header: a legitimately written header implies a tail past it.
    const std::uint64_t tail = layout_->tail.load(std::memory_order_acquire);
    tail_seen_ = tail;
    if (tail == head_) {
      // Producers measure room from the shared head: one overwritten while the ring is empty
      // would make them drop every record, as nothing is consumed to store it again.
      if (layout_->head.load(std::memory_order_relaxed) != head_) {
        layout_->head.store(head_, std::memory_order_release);
      }
      count_deaths_if_empty();
      return {ReadStatus::empty, false, 0, 0};
    }
    if (tail - head_ > capacity_) {
      skip_to(tail, true);
      return {ReadStatus::empty, false, 0, 0};
    }
    const Next next = stalled(length, meta, tail);
    if (next.status == ReadStatus::stalled) return next;
    // A dead or stuck record was skipped: look at the next one.
  }
}

RingConsumer::Next RingConsumer::stalled(std::int32_t length, std::uint32_t meta,
                                         std::uint64_t tail) noexcept {
  const Next wait{ReadStatus::stalled, false, 0, 0};
  const Next skipped{ReadStatus::record, false, 0, 0};
  const auto now = std::chrono::steady_clock::now();
  if (stall_pos_ != head_) {
    stall_pos_ = head_;
    stall_since_ = now;
    return wait;
  }
  const auto waited = now - stall_since_;
  const std::size_t i = index(head_);

  if (length < 0) {
    const std::uint64_t aligned =
        record_span(head_, meta, static_cast<std::uint64_t>(-std::int64_t{length}));
    if (aligned < kRecordHeader || aligned > capacity_ - i || aligned > tail - head_) {
      skip_to(tail, true);
      return skipped;
    }
    const bool give_up = waited >= policy_.stall_limit ||
                         (waited >= policy_.dead_writer_grace &&
                          !policy_.writer_alive(meta & kWriterMask, policy_.context));
    if (!give_up) return wait;
    ++skipped_;
    layout_->skipped.store(skipped_, std::memory_order_relaxed);
    consume(static_cast<std::size_t>(aligned));
    return skipped;
  }

  // Claimed but no header: the writer stopped between its claim and its first store. What it
  // claimed is still zero (we zero what we consume), so the next non-zero word up to the tail
  // is the header of the record after it.
  const bool someone_died = policy_.death_count != nullptr && waited >= policy_.unwritten_grace &&
                            policy_.death_count(policy_.context) != quiet_deaths_;
  if (!someone_died && waited < policy_.unwritten_limit) return wait;
  std::uint64_t pos = head_ + kRecordAlign;
  while (pos < tail && header_at(data_, index(pos))->load(std::memory_order_acquire) == 0) {
    pos += kRecordAlign;
  }
  ++skipped_;
  layout_->skipped.store(skipped_, std::memory_order_relaxed);
  skip_to(pos, false);
  return skipped;
}

void RingConsumer::consume(std::size_t aligned) noexcept {
  const std::size_t i = index(head_);
  // Zero what was read, so producers always claim zeroed space (see stalled()).
  if (aligned > kRecordHeader) std::memset(data_ + i + kRecordHeader, 0, aligned - kRecordHeader);
  header_at(data_, i)->store(0, std::memory_order_relaxed);
  head_ += aligned;
  layout_->head.store(head_, std::memory_order_release);
}

void RingConsumer::skip_to(std::uint64_t pos, bool corrupt) noexcept {
  if (corrupt) {
    ++corrupt_;
    layout_->corrupt.store(corrupt_, std::memory_order_relaxed);
  }
  // Zero the skipped span (at most the whole ring) to restore the all-zero invariant.
  const std::uint64_t span = std::min<std::uint64_t>(pos - head_, capacity_);
  for (std::uint64_t done = 0; done < span;) {
    const std::size_t i = index(head_ + done);
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(span - done, capacity_ - i));
    std::memset(data_ + i, 0, n);
    done += n;
  }
  head_ = pos & ~std::uint64_t{kRecordAlign - 1};
  stall_pos_ = ~std::uint64_t{0};
  layout_->head.store(head_, std::memory_order_release);
}

bool RingConsumer::ready() const noexcept {
  // Only the header: polling the tail would take the producers' line away from them on every
  // poll. A committed (or corrupt) header is for next_record() to check.
  const std::uint64_t word = header_at(data_, index(head_))->load(std::memory_order_seq_cst);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(word)) > 0;
}

bool RingConsumer::announce_sleep() noexcept {
  // Sequentially consistent, paired with the producer's commit (see RingProducer::try_write).
  layout_->sleeping.store(kConsumerAsleep, std::memory_order_seq_cst);
  if (!ready()) return true;
  layout_->sleeping.store(kConsumerAwake, std::memory_order_relaxed);
  return false;
}

void RingConsumer::end_sleep() noexcept {
  layout_->sleeping.store(kConsumerAwake, std::memory_order_relaxed);
}

bool RingConsumer::in_flight() const noexcept {
  return layout_->tail.load(std::memory_order_acquire) != head_;
}

bool RingConsumer::sleep(std::chrono::nanoseconds timeout, std::optional<FutexAlso> also) noexcept {
  if (!announce_sleep()) return true;
  // A record in flight may belong to a writer that died: wake up soon to let try_read see.
  const bool in_flight = this->in_flight();
  constexpr std::chrono::nanoseconds kNap = std::chrono::milliseconds(1);
  if (in_flight && (timeout.count() < 0 || timeout > kNap)) timeout = kNap;
  if (also) {
    // Without futex_waitv the second word cannot be watched: sleep in steps instead, as a
    // wake-up owed by a dead publisher never comes.
    futex_wait_either(&layout_->sleeping, kConsumerAsleep, *also, timeout, kWaitvFallbackStep);
  } else {
    futex_wait(&layout_->sleeping, kConsumerAsleep, timeout);
  }
  end_sleep();
  return in_flight || ready();
}

bool RingConsumer::wait(std::chrono::nanoseconds timeout, std::uint32_t spins) noexcept {
  for (std::uint32_t n = 0; n < spins; ++n) {
    if (ready()) return true;
    cpu_relax();
    // Lets a thread waiting for this core run first (the publisher, other subscribers): with
    // more subscribers than cores, spinning ones would otherwise starve the publisher they wait
    // for. Returns at once when nobody waits.
    if (n % 64 == 63) sched_yield();
  }
  const bool forever = timeout.count() < 0;
  const auto deadline =
      std::chrono::steady_clock::now() + (forever ? std::chrono::nanoseconds(0) : timeout);
  for (;;) {
    const auto remaining =
        forever ? std::chrono::nanoseconds(-1) : deadline - std::chrono::steady_clock::now();
    if (!forever && remaining <= std::chrono::nanoseconds(0)) return ready();
    if (sleep(remaining)) return true;
  }
}

}  // namespace shmcast::detail
