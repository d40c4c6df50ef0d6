// Payload pools: the shared memory a loan is written into once and every subscriber reads.
//
// A publishing connection (a Bus) gets one pool segment, `shmcast.<bus>.pool.<slot>.<id>`, on
// its first loan. The pool is cut into blocks; a chunk is a run of blocks holding one payload.
// A published chunk travels through the rings as a small descriptor (LoanFrame). Each chunk
// counts the references to it: one per ring record that carries its descriptor, one per hold
// (a payload a subscriber keeps past its callback). Only the publisher allocates, and it takes
// a chunk back once its count is zero; subscribers map the blocks read-only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ring.hpp"
#include "segment.hpp"

namespace shmcast::detail {

inline constexpr std::size_t kPoolBlock = 4096;
// The blocks start at this offset (a multiple of every page size Linux uses), so the part
// before them can be mapped read-write and the blocks read-only.
inline constexpr std::size_t kPoolDataAlign = std::size_t{64} << 10;

// clang-format off
//  Pool segment:
//
//   0        SegmentHeader
//   64       PoolHeader                    owner, geometry, loans in progress
//   192      ChunkMeta meta[block_count]   references, serial and length of each chunk start
//   ...      (padding to kPoolDataAlign)
//   data     block[block_count]            kPoolBlock bytes each: payloads
// clang-format on
struct PoolHeader {
  std::uint32_t owner_slot;    // 0
  std::uint32_t pool_id;       // 4: the owner slot's generation when it made the pool
  std::int32_t owner_pid;      // 8
  std::uint32_t block_size;    // 12
  std::uint64_t block_count;   // 16
  std::uint64_t meta_offset;   // 24: from the segment's start
  std::uint64_t data_offset;   // 32
  std::uint8_t reserved0[24];  // 40
  alignas(kCacheLine) std::atomic<std::uint64_t> loaned_blocks;  // 64: in loans not published
};
static_assert(sizeof(PoolHeader) == 128);
static_assert(offsetof(PoolHeader, loaned_blocks) == 64);

struct ChunkMeta {
  std::atomic<std::uint32_t> refs;    // ring records and holds that name this chunk
  std::atomic<std::uint32_t> serial;  // bumped at each allocation: names one use of the chunk
  std::atomic<std::uint32_t> blocks;  // blocks of the chunk (set by the owner at allocation)
  std::uint32_t reserved;
};
static_assert(sizeof(ChunkMeta) == 16);

/// Names one chunk of one pool, as one allocation (serial).
struct LoanRef {
  std::uint32_t pool_slot;
  std::uint32_t pool_id;
  std::uint32_t chunk;
  std::uint32_t serial;
  friend bool operator==(const LoanRef&, const LoanRef&) = default;
};
static_assert(sizeof(LoanRef) == 16);

/// What a ring record carries after the channel in place of a loaned payload.
struct LoanFrame {
  LoanRef ref;
  std::uint64_t length;
};
static_assert(sizeof(LoanFrame) == 24);

/// FrameHeader::flags: the record carries a LoanFrame, not the payload.
inline constexpr std::uint8_t kFrameLoaned = 1;

/// The pool bytes a loaned record of `length` bytes pins in its subscriber's ring (whole
/// blocks): what producers add to the ring's `loaned` count and its consumer takes off.
[[nodiscard]] constexpr std::uint64_t pinned_bytes(std::uint64_t length) noexcept {
  return length <= kPoolBlock ? kPoolBlock : (length + kPoolBlock - 1) / kPoolBlock * kPoolBlock;
}

/// A hold: a payload a subscriber keeps past its callback, in its Bus's client slot, so that
/// the coordinator releases it if the process dies. `state` moves free -> filling -> held when
/// taken and back to free when released; the reference is taken before and dropped after, so a
/// process killed in between leaks one reference rather than freeing a chunk still read.
struct Hold {
  std::atomic<std::uint32_t> state;
  std::uint32_t reserved;
  LoanRef ref;
};
static_assert(sizeof(Hold) == 24);
inline constexpr std::uint32_t kHoldFree = 0;
inline constexpr std::uint32_t kHoldFilling = 1;
inline constexpr std::uint32_t kHoldHeld = 2;

[[nodiscard]] std::string pool_name(std::string_view bus, std::uint32_t slot,
                                    std::uint32_t pool_id);
/// The prefix of the names of every pool of `slot` (all slots if nullopt).
[[nodiscard]] std::string pool_prefix(std::string_view bus, std::optional<std::uint32_t> slot);

/// Pools of the bus named by a pool name prefix, as (slot, pool id), read from /dev/shm.
[[nodiscard]] std::vector<std::pair<std::uint32_t, std::uint32_t>> find_pools(
    std::string_view bus, std::optional<std::uint32_t> slot);

/// Bytes a pool of `block_count` blocks takes, and where its blocks start.
[[nodiscard]] std::size_t pool_data_offset(std::uint64_t block_count) noexcept;

/// A pool as a reader maps it: header and references read-write, blocks read-only. Every
/// descriptor is checked against it before use.
class PoolView {
 public:
  /// Opens the pool (slot, id) of `bus`; throws SegmentError, or std::runtime_error if its
  /// header does not describe the segment.
  PoolView(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id);

  /// The payload a descriptor names, or nullopt if it does not name a live chunk of this pool
  /// (a forged or stale descriptor): never a byte outside the pool.
  [[nodiscard]] std::optional<std::span<const std::byte>> payload(const LoanFrame& frame) const;
  /// Takes one more reference to a chunk that holds one already; false if `ref` is not valid.
  bool retain(const LoanRef& ref) const;
  /// Drops one reference (never below zero); false if `ref` is not valid.
  bool release(const LoanRef& ref) const;
  /// Chunks with references and the blocks they span, and blocks in loans not yet published.
  struct Use {
    std::uint64_t chunks = 0;
    std::uint64_t bytes = 0;
  };
  [[nodiscard]] Use use() const;

  [[nodiscard]] const PoolHeader& header() const noexcept { return *header_; }
  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return block_count_ * kPoolBlock; }

 private:
  [[nodiscard]] const ChunkMeta* meta_of(const LoanRef& ref) const noexcept;

  Segment segment_;
  std::uint32_t slot_ = 0;
  std::uint32_t id_ = 0;
  PoolHeader* header_ = nullptr;
  ChunkMeta* meta_ = nullptr;
  const std::byte* data_ = nullptr;
  std::uint64_t block_count_ = 0;  // private copy: the header is writable by every client
};

/// The pools a process reads, opened on first use and kept while their owner may still send.
class PoolMaps {
 public:
  explicit PoolMaps(std::string bus) : bus_(std::move(bus)) {}
  /// The view of pool (slot, id); null if it cannot be opened (gone, or not a pool).
  std::shared_ptr<const PoolView> find(std::uint32_t slot, std::uint32_t pool_id);
  void forget(std::uint32_t slot, std::uint32_t pool_id);
  /// Forgets the views of pools removed from /dev/shm (their publisher left and nothing
  /// referenced them any more), so their memory goes once no Payload holds it.
  void forget_removed();
  [[nodiscard]] bool empty() const noexcept { return views_.empty(); }

 private:
  std::string bus_;
  std::unordered_map<std::uint64_t, std::shared_ptr<const PoolView>> views_;
};

/// One allocation of a pool, owned by a Loan until published.
struct Chunk {
  std::uint32_t index = 0;
  std::uint32_t blocks = 0;
  std::uint32_t serial = 0;
};

/// The publisher's side of its pool: creates it, allocates chunks, takes them back once their
/// references are gone. Thread-safe (a mutex: loans are not the lock-free publish path).
class PoolOwner {
 public:
  /// Creates the pool segment of `bytes` (rounded down to whole blocks) for `slot`.
  PoolOwner(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id, std::uint64_t bytes,
            const Permissions& perms);
  ~PoolOwner();
  PoolOwner(const PoolOwner&) = delete;
  PoolOwner& operator=(const PoolOwner&) = delete;

  /// A chunk of at least `bytes`, or nullopt if no run of free blocks is long enough.
  std::optional<Chunk> allocate(std::size_t bytes);
  /// Gives back a chunk that was never published.
  void give_back(const Chunk& chunk);
  /// After a publish of `chunk`: it is taken back once its references are gone.
  void published(const Chunk& chunk);

  [[nodiscard]] std::span<std::byte> bytes_of(const Chunk& chunk) const noexcept {
    return {data_ + std::size_t{chunk.index} * kPoolBlock, std::size_t{chunk.blocks} * kPoolBlock};
  }
  [[nodiscard]] std::atomic<std::uint32_t>& refs(const Chunk& chunk) const noexcept {
    return meta_[chunk.index].refs;
  }
  [[nodiscard]] LoanRef ref(const Chunk& chunk) const noexcept {
    return {slot_, id_, chunk.index, chunk.serial};
  }
  [[nodiscard]] std::uint64_t capacity() const noexcept { return block_count_ * kPoolBlock; }
  /// Bytes in loans and in published chunks still referenced (takes back what it can first).
  [[nodiscard]] std::uint64_t used();
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

 private:
  // With mutex_ held: take back the published chunks nothing references any more; return a run
  // of blocks to the free runs; carve a chunk out of them.
  void reclaim();
  void reclaim_oldest();
  void free_run(std::uint32_t start, std::uint32_t blocks);
  std::optional<Chunk> take(std::uint32_t want);

  Segment segment_;
  std::uint64_t block_count_ = 0;
  std::uint32_t slot_ = 0;
  std::uint32_t id_ = 0;
  PoolHeader* header_ = nullptr;
  ChunkMeta* meta_ = nullptr;
  std::byte* data_ = nullptr;
  std::mutex mutex_;
  std::map<std::uint32_t, std::uint32_t> free_;  // free runs of blocks: start -> length
  std::deque<Chunk> live_;                       // published, waiting for their references to go
  std::uint32_t cursor_ = 0;                     // next fit: where the last allocation ended
  std::uint64_t used_blocks_ = 0;
};

}  // namespace shmcast::detail
