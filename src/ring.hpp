// A multi-producer / single-consumer ring of variable-length records in shared memory.
//
// Producers claim space with one CAS on the tail, write a header with a negative length and
// their writer id, copy the record, then release-store the positive length. The consumer reads
// committed records in order, zeroes what it consumed and advances the head. A full ring makes
// the producer fail (and count a drop); it never waits and never overwrites unread records.
// The consumer may sleep on a futex; a producer wakes it only if it announced that it sleeps,
// and of several producers only the first to see the announcement makes the system call. A
// commit is a release store; one full fence after a publisher's commits (to every ring of a
// publish) orders them before its look at the consumers' announcements.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

#include "futex.hpp"

namespace shmcast::detail {

inline constexpr std::size_t kCacheLine = 64;
// Records start on 8-byte boundaries, and each write (one record, or a batch of them) claims up
// to the end of a cache line: its last record's header says so, and the consumer consumes the
// rest of the line with it. So a producer writing and the consumer reading (and zeroing) what
// was written before never share a line. Without that, each line a record shared with the one
// before went back and forth between the consumer's core and the publisher's, which waited for
// it at its next ring's claim.
inline constexpr std::size_t kRecordAlign = 8;
inline constexpr std::size_t kRecordHeader = 8;

//  Ring layout (each independently written atomic on its own cache line, so producers and the
//  consumer do not invalidate each other's lines: false sharing would cost every record):
//
//   0   +--------------------------------+  config, written once before the segment is published
//       | capacity (u64) | reserved      |
//   64  +--------------------------------+
//       | tail (u64)         producers   |  CAS to claim
//   128 +--------------------------------+
//       | head_cache (u64)   producers   |  last head a producer saw, spares the consumer's line
//   192 +--------------------------------+
//       | head (u64)         consumer    |  release-stored after the consumed bytes are zeroed
//   256 +--------------------------------+
//       | sleeping (u32)     futex word  |  kConsumerAwake / kConsumerAsleep / kConsumerNotified
//       | woken_ns (u64)     producers   |  when the producer that woke the consumer did so
//   320 +--------------------------------+
//       | dropped (u64)      producers   |  records refused because the ring was full
//   384 +--------------------------------+
//       | read, skipped, corrupt (u64)   |  consumer's counters
//   448 +--------------------------------+
//       | loaned (u64)       both        |  pool bytes its unread loaned records pin
//   512 +--------------------------------+
//       | data[capacity]                 |  records, 8-byte aligned; writes end on lines
//
//  Record: header word (u64) = writer/flags (high 32 bits) | length (low 32 bits, signed),
//  then the payload. Length counts header + payload; negative while the writer copies. The
//  flags: padding, and "ends its write" (the rest of its cache line goes with it). A record
//  never wraps: a padding record fills the end of the data area instead.
struct RingLayout {
  std::uint64_t capacity;
  std::uint8_t reserved0[kCacheLine - 8];
  alignas(kCacheLine) std::atomic<std::uint64_t> tail;
  alignas(kCacheLine) std::atomic<std::uint64_t> head_cache;
  alignas(kCacheLine) std::atomic<std::uint64_t> head;
  alignas(kCacheLine) std::atomic<std::uint32_t> sleeping;
  std::atomic<std::int64_t> woken_ns;
  alignas(kCacheLine) std::atomic<std::uint64_t> dropped;
  alignas(kCacheLine) std::atomic<std::uint64_t> read;
  std::atomic<std::uint64_t> skipped;
  std::atomic<std::uint64_t> corrupt;
  alignas(kCacheLine) std::atomic<std::uint64_t> loaned;
};

static_assert(sizeof(RingLayout) == 512);
static_assert(offsetof(RingLayout, capacity) == 0);
static_assert(offsetof(RingLayout, tail) == 64);
static_assert(offsetof(RingLayout, head_cache) == 128);
static_assert(offsetof(RingLayout, head) == 192);
static_assert(offsetof(RingLayout, sleeping) == 256);
static_assert(offsetof(RingLayout, woken_ns) == 264);
static_assert(offsetof(RingLayout, dropped) == 320);
static_assert(offsetof(RingLayout, read) == 384);
static_assert(offsetof(RingLayout, skipped) == 392);
static_assert(offsetof(RingLayout, corrupt) == 400);
static_assert(offsetof(RingLayout, loaned) == 448);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Values of RingLayout::sleeping. The consumer moves it awake -> asleep before it sleeps and back
// to awake once it is up; the producer that commits first after the announcement moves it
// asleep -> notified and makes the one futex wake-up, so producers that commit meanwhile (the
// consumer is not running yet) make none.
inline constexpr std::uint32_t kConsumerAwake = 0;
inline constexpr std::uint32_t kConsumerAsleep = 1;
inline constexpr std::uint32_t kConsumerNotified = 2;

inline constexpr std::size_t kRingMinCapacity = 256;
inline constexpr std::size_t kRingMaxCapacity = std::size_t{1} << 31;

/// Is ring position `a` before `b`? Positions only grow, and wrap around 2^64.
[[nodiscard]] constexpr bool ring_before(std::uint64_t a, std::uint64_t b) noexcept {
  return a - b >= (std::uint64_t{1} << 63);
}

/// Bytes a ring of `capacity` data bytes needs (layout + data).
[[nodiscard]] constexpr std::size_t ring_bytes(std::size_t capacity) noexcept {
  return sizeof(RingLayout) + capacity;
}

/// Largest payload a ring of `capacity` can take: a record of half the ring always fits once
/// the ring is empty, wherever the tail stands.
[[nodiscard]] constexpr std::size_t ring_max_payload(std::size_t capacity) noexcept {
  return capacity / 2 - kRecordHeader;
}

/// Initialises a ring in zeroed memory of at least ring_bytes(capacity) bytes. `capacity` must
/// be a power of two in [kRingMinCapacity, kRingMaxCapacity].
void ring_init(void* memory, std::size_t capacity);

/// Checks a ring found in shared memory and returns its capacity, or 0 if the recorded
/// capacity is not a power of two in range or does not fit in `bytes`.
[[nodiscard]] std::size_t ring_checked_capacity(const void* memory, std::size_t bytes) noexcept;

/// Points inside a write where a test may stop the writer (fault injection).
enum class RingWritePoint {
  before_claim,
  after_claim,
  after_header,
  mid_copy,
  before_commit,
  after_commit,  // committed, the consumer not yet woken
};

/// Called at each RingWritePoint when set; null (no cost beyond a load and a branch) otherwise.
/// Set it before starting writers; tests use it to kill or stop a writer at an exact point.
extern void (*ring_write_hook)(RingWritePoint);

enum class WriteStatus { ok, full, too_big };

/// When try_write wakes a sleeping consumer: at once, or only when the writer calls wake() (a
/// publish writes every subscriber's ring first, then wakes those that sleep).
enum class Wake { now, later };

/// The full fence between a producer's commits, to one ring or many, and its look at their
/// consumers' `sleeping` words (RingProducer::wake_fenced()).
void commit_fence() noexcept;

/// The producer side. Any number of producers, in any processes, may write to one ring at
/// once; each RingProducer object is used by one thread at a time. It keeps its own copy of
/// the capacity, so a corrupted layout cannot make it write outside the ring.
class RingProducer {
 public:
  RingProducer() = default;
  /// `memory` is a ring (ring_init) of `bytes` bytes; throws std::invalid_argument if its
  /// layout is not valid.
  RingProducer(void* memory, std::size_t bytes);

  /// Writes one record made of `parts` laid end to end, tagged with `writer` (1..2^30-1; 0 if
  /// unknown) so the consumer can skip it if the writer dies mid-write. Never blocks, never
  /// makes a system call unless the consumer sleeps. full: counted in dropped(). With
  /// Wake::later, a record written (ok) must be followed by wake(): until then a consumer that
  /// sleeps does not learn of it.
  WriteStatus try_write(std::span<const std::span<const std::byte>> parts, std::uint32_t writer,
                        Wake when = Wake::now) noexcept;
  WriteStatus try_write(std::span<const std::byte> payload, std::uint32_t writer,
                        Wake when = Wake::now) noexcept {
    return try_write(std::span<const std::span<const std::byte>>(&payload, 1), writer, when);
  }

  /// Writes several records, each made of its parts, in order, as that many try_write calls
  /// with Wake::later would: returns how many were written (those that did not fit are counted
  /// in dropped()). Records that fit together before the end of the ring are claimed with one
  /// atomic operation, which is the point: the ring's shared lines are touched once per batch.
  std::size_t try_write_batch(std::span<const std::span<const std::span<const std::byte>>> records,
                              std::uint32_t writer) noexcept;

  /// Wakes the consumer if it announced that it sleeps and no other producer has taken the
  /// wake-up yet; true if this call made the futex system call. Ordered after this producer's
  /// commits by a full fence (commit_fence()), so the consumer either saw them before it slept
  /// or is woken here. The one that wakes stamps the time first (woken_at()): when the
  /// consumer's record came, which the consumer, woken tens of microseconds later, could not
  /// tell otherwise.
  bool wake() noexcept;
  /// As wake(), for a caller that made commit_fence() after its commits: one fence for every
  /// ring a publish wrote, instead of one per ring.
  bool wake_fenced() noexcept;

  /// Asks the cache for the lines the next write will touch (the tail, the cached head, and the
  /// two lines from where this producer's last try_write() ended: a small record spans two), so
  /// that a publish to many rings can ask a few rings ahead. The claim's atomic operation waits
  /// for the previous record's stores, so a line of it still missing stalls the next ring's
  /// claim too. A hint: it reads nothing and changes nothing.
  void prefetch() const noexcept {
    __builtin_prefetch(&layout_->tail, 1);
    __builtin_prefetch(&layout_->head_cache, 0);
    __builtin_prefetch(data_ + (next_ & (capacity_ - 1)), 1);
    __builtin_prefetch(data_ + ((next_ + kCacheLine) & (capacity_ - 1)), 1);
  }

  [[nodiscard]] std::size_t max_payload() const noexcept { return ring_max_payload(capacity_); }
  [[nodiscard]] std::uint64_t dropped() const noexcept {
    return layout_->dropped.load(std::memory_order_relaxed);
  }

  /// Before a loaned record: counts `bytes` of pool pinned by this ring's unread records, unless
  /// that would pass `limit`; then counts a drop instead, as a full ring does, and returns
  /// false. A record that is not written after all gives them back (unpin).
  bool pin(std::uint64_t bytes, std::uint64_t limit) noexcept;
  void unpin(std::uint64_t bytes) noexcept;
  /// Bytes claimed but not yet consumed (approximate while others write).
  [[nodiscard]] std::uint64_t used() const noexcept;

 private:
  RingLayout* layout_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t next_ = 0;  // where this producer's last try_write() ended
};

/// How the consumer treats a record whose writer stopped before committing it.
struct StallPolicy {
  /// A record in progress whose writer is dead is skipped after this long.
  std::chrono::nanoseconds dead_writer_grace = std::chrono::milliseconds(1);
  /// A record in progress whose writer is alive (or unknown) is skipped after this long.
  std::chrono::nanoseconds stall_limit = std::chrono::milliseconds(500);
  /// A record claimed but never given a header (its writer stopped between two instructions,
  /// so who it was is unknown) is skipped after unwritten_grace if a writer died since the
  /// ring was last seen empty (death_count grew), and after unwritten_limit in any case. A live
  /// writer that is merely descheduled there must not lose its record, hence no short timeout
  /// alone.
  std::chrono::nanoseconds unwritten_grace = std::chrono::milliseconds(5);
  std::chrono::nanoseconds unwritten_limit = std::chrono::seconds(2);
  /// Is writer `id` alive? Null: the writer id is a pid, checked with kill(pid, 0) and /proc.
  bool (*writer_alive)(std::uint32_t id, void* context) = nullptr;
  /// How many writers have died so far (for example the coordinator's count of reaped
  /// clients). Null: deaths are never seen and only unwritten_limit applies.
  std::uint64_t (*death_count)(void* context) = nullptr;
  void* context = nullptr;
};

enum class ReadStatus { record, empty, stalled };

/// The consumer side: exactly one per ring, used by one thread at a time. Every header is
/// checked against its own copy of the capacity and the tail before use; a corrupt ring is
/// resynchronised to the tail (records lost, counted in corrupt()), never read out of bounds.
class RingConsumer {
 public:
  RingConsumer() = default;
  /// As RingProducer's constructor.
  RingConsumer(void* memory, std::size_t bytes, StallPolicy policy = {});

  /// Reads at most one record: calls `on_record(std::span<const std::byte>)`, then consumes it.
  /// The span is valid only during the call. Returns empty if nothing is committed yet,
  /// stalled if a writer is still copying the next record. Given `stop`, a record that starts
  /// at or after that position is left unread and empty returned: the caller has something to
  /// put before it, and skipping stalled records may carry the head there within one call.
  template <class F>
  ReadStatus try_read(F&& on_record, std::optional<std::uint64_t> stop = std::nullopt) {
    for (;;) {
      const Next next = next_record();
      if (next.status != ReadStatus::record) return next.status;
      if (stop && !ring_before(head_, *stop)) return ReadStatus::empty;
      if (next.padding) {
        consume(next.aligned);
        continue;
      }
      on_record(std::span<const std::byte>(data_ + index(head_) + kRecordHeader, next.payload));
      consume(next.aligned);
      ++read_count_;
      layout_->read.store(read_count_, std::memory_order_relaxed);
      return ReadStatus::record;
    }
  }

  /// Waits until a record may be readable: spins `spins` times, then sleeps (sleep()) at most
  /// `timeout` (negative: no limit). Returns true if a record is committed at the head (or a
  /// record in flight needs another look), false on timeout.
  bool wait(std::chrono::nanoseconds timeout, std::uint32_t spins = 2000) noexcept;

  /// Is there a committed record (or something for try_read to check) at the head? Reads the
  /// head's header only: cheap to poll.
  [[nodiscard]] bool ready() const noexcept;

  // The sleep handshake, in three steps, for callers that sleep their own way (sleep() does
  // all three): announce_sleep(); while it returns true, wait on sleep_word() for the value
  // kConsumerAsleep; then end_sleep(). A producer that commits after the announcement sees it
  // and wakes the word; one that committed before is seen by announce_sleep().

  /// Announces that the consumer sleeps, then looks at the head once more (sequentially
  /// consistent, paired with the producers' commit). false: a record is ready, the announcement
  /// is withdrawn and the caller must not sleep.
  [[nodiscard]] bool announce_sleep() noexcept;
  /// Withdraws the announcement, whether a producer woke the consumer or not.
  void end_sleep() noexcept;
  /// The futex word that producers wake. Memory anyone with the ring can write: a sleeper must
  /// cap its sleep, as a hostile writer can clear the word and so stop every wake-up.
  [[nodiscard]] std::atomic<std::uint32_t>& sleep_word() noexcept { return layout_->sleeping; }
  /// When a producer last woke the consumer (steady clock, ns since its epoch; 0 if none ever
  /// did). Shared memory anyone with the ring can write: a hint for timing, never for safety.
  [[nodiscard]] std::int64_t woken_at() const noexcept {
    return layout_->woken_ns.load(std::memory_order_relaxed);
  }
  /// Is a record claimed and not yet committed at the head? Its writer may have died, and then
  /// nobody wakes the consumer for it: a sleeper looks again after a millisecond.
  [[nodiscard]] bool in_flight() const noexcept;

  /// All three steps: sleeps until a producer wakes the consumer, at most `timeout` (negative:
  /// no limit; a record in flight shortens it to a millisecond). Given `also`, wakes as well
  /// when that word is woken or changes (the bus's count of dead clients: a publisher that died
  /// between its commit and its wake-up leaves a record nobody wakes the consumer for).
  /// Returns true if a record may be ready, false if the sleep ended without one.
  bool sleep(std::chrono::nanoseconds timeout,
             std::optional<FutexAlso> also = std::nullopt) noexcept;

  /// Acquire, paired with the producers' count of a drop: claimed() read after it is at least
  /// as far as the tail the dropping producer saw.
  [[nodiscard]] std::uint64_t dropped() const noexcept {
    return layout_->dropped.load(std::memory_order_acquire);
  }
  /// After a loaned record is consumed: its pool bytes are no longer pinned by this ring.
  void unpin(std::uint64_t bytes) noexcept;
  [[nodiscard]] std::uint64_t read_count() const noexcept { return read_count_; }
  /// Position of the next record to read, and the position up to which space is claimed.
  [[nodiscard]] std::uint64_t position() const noexcept { return head_; }
  [[nodiscard]] std::uint64_t claimed() const noexcept {
    return layout_->tail.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint64_t skipped() const noexcept { return skipped_; }
  [[nodiscard]] std::uint64_t corrupt() const noexcept { return corrupt_; }
  [[nodiscard]] std::size_t max_payload() const noexcept { return ring_max_payload(capacity_); }

 private:
  struct Next {
    ReadStatus status;
    bool padding;
    std::size_t payload;
    std::size_t aligned;
  };

  [[nodiscard]] std::size_t index(std::uint64_t pos) const noexcept {
    return static_cast<std::size_t>(pos & (capacity_ - 1));
  }
  Next next_record() noexcept;
  // Takes the count of deaths as the one claims are measured against, if the ring is still
  // empty after it (see StallPolicy::unwritten_grace).
  void count_deaths_if_empty() noexcept;
  Next stalled(std::int32_t length, std::uint32_t meta, std::uint64_t tail) noexcept;
  void consume(std::size_t aligned) noexcept;
  void skip_to(std::uint64_t pos, bool corrupt) noexcept;

  RingLayout* layout_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t head_ = 0;       // private copy: the shared one is only ever written from here
  std::uint64_t tail_seen_ = 0;  // the tail as last loaded: records up to it need no new load
  std::uint64_t read_count_ = 0;
  std::uint64_t skipped_ = 0;
  std::uint64_t corrupt_ = 0;
  StallPolicy policy_;
  std::uint64_t stall_pos_ = ~std::uint64_t{0};
  std::chrono::steady_clock::time_point stall_since_;
  // death_count() when the ring was last seen empty; until then unknown, so any count differs
  // (a claim found at start may be older than every death counted so far).
  std::uint64_t quiet_deaths_ = ~std::uint64_t{0};
};

}  // namespace shmcast::detail
