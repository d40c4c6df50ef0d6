#include "pool.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include <fmt/format.h>

#include "layout.hpp"

namespace shmcast::detail {

namespace {

constexpr std::size_t kMetaOffset = kSegmentHeaderSize + sizeof(PoolHeader);

std::uint64_t key(std::uint32_t slot, std::uint32_t id) noexcept {
  return std::uint64_t{slot} << 32 | id;
}

// Drops one reference unless there is none: a release that a hostile or confused client repeats
// cannot wrap the count around.
bool drop_reference(std::atomic<std::uint32_t>& refs) noexcept {
  std::uint32_t n = refs.load(std::memory_order_relaxed);
  while (n > 0) {
    if (refs.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) return true;
  }
  return false;
}

}  // namespace

std::string pool_name(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id) {
  return fmt::format("shmcast.{}.pool.{}.{}", bus, slot, pool_id);
}

std::string pool_prefix(std::string_view bus, std::optional<std::uint32_t> slot) {
  return slot ? fmt::format("shmcast.{}.pool.{}.", bus, *slot)
              : fmt::format("shmcast.{}.pool.", bus);
}

std::vector<std::pair<std::uint32_t, std::uint32_t>> find_pools(std::string_view bus,
                                                                std::optional<std::uint32_t> slot) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> found;
  const std::string all = pool_prefix(bus, std::nullopt);
  const std::string prefix = pool_prefix(bus, slot);
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return found;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name(entry->d_name);
    if (!name.starts_with(prefix)) continue;
    // <slot>.<id>, both decimal, nothing else.
    const std::string_view rest = name.substr(all.size());
    std::uint32_t s = 0;
    std::uint32_t id = 0;
    const char* end = rest.data() + rest.size();
    auto [p, ec] = std::from_chars(rest.data(), end, s);
    if (ec != std::errc{} || p == end || *p != '.') continue;
    auto [q, ec2] = std::from_chars(p + 1, end, id);
    if (ec2 != std::errc{} || q != end) continue;
    found.emplace_back(s, id);
  }
  ::closedir(dir);
  return found;
}

std::size_t pool_data_offset(std::uint64_t block_count) noexcept {
  const std::uint64_t meta_end = kMetaOffset + block_count * sizeof(ChunkMeta);
  return static_cast<std::size_t>((meta_end + kPoolDataAlign - 1) / kPoolDataAlign *
                                  kPoolDataAlign);
}

// ---------------------------------------------------------------------------------------------
// PoolView

namespace {

// The pool (slot, id) of `bus`, mapped with its blocks read-only once its header is checked.
Segment open_pool(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id) {
  const std::string name = pool_name(bus, slot, pool_id);
  // Opened whole first, to learn where the blocks start; then again with them read-only.
  std::uint64_t blocks = 0;
  std::uint64_t data_offset = 0;
  {
    const Segment probe = Segment::open(name, SegmentKind::pool, kLayoutVersion, kMetaOffset);
    const auto& h = *reinterpret_cast<const PoolHeader*>(probe.base() + kSegmentHeaderSize);
    blocks = h.block_count;
    data_offset = h.data_offset;
    const bool fits = blocks > 0 && blocks < (std::uint64_t{1} << 32) &&
                      h.block_size == kPoolBlock && h.meta_offset == kMetaOffset &&
                      data_offset == pool_data_offset(blocks) &&
                      data_offset + blocks * kPoolBlock == probe.size() && h.owner_slot == slot &&
                      h.pool_id == pool_id;
    if (!fits) throw std::runtime_error(fmt::format("{} is not a valid pool", name));
  }
  Segment segment = Segment::open(name, SegmentKind::pool, kLayoutVersion,
                                  data_offset + blocks * kPoolBlock, data_offset);
  if (segment.read_only_base() == nullptr) {
    throw std::runtime_error(fmt::format("{} changed size while opened", name));
  }
  return segment;
}

Segment create_pool(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id,
                    std::uint64_t block_count, const Permissions& perms) {
  if (block_count == 0 || block_count >= (std::uint64_t{1} << 32)) {
    throw std::invalid_argument(
        fmt::format("a pool of {} blocks has no valid block count", block_count));
  }
  const std::string name = pool_name(bus, slot, pool_id);
  Segment::remove(name);  // a leftover of a client that died in this slot while no coordinator ran
  return Segment::create(name, pool_data_offset(block_count) + block_count * kPoolBlock,
                         SegmentKind::pool, kLayoutVersion, perms);
}

}  // namespace

PoolView::PoolView(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id)
    : segment_(open_pool(bus, slot, pool_id)), slot_(slot), id_(pool_id) {
  header_ = reinterpret_cast<PoolHeader*>(segment_.base() + kSegmentHeaderSize);
  meta_ = reinterpret_cast<ChunkMeta*>(segment_.base() + kMetaOffset);
  data_ = segment_.read_only_base();
  block_count_ = header_->block_count;  // checked by open_pool; kept, as others may write it
}

const ChunkMeta* PoolView::meta_of(const LoanRef& ref) const noexcept {
  if (ref.pool_slot != slot_ || ref.pool_id != id_ || ref.chunk >= block_count_) return nullptr;
  const ChunkMeta& m = meta_[ref.chunk];
  if (m.serial.load(std::memory_order_acquire) != ref.serial) return nullptr;
  return &m;
}

std::optional<std::span<const std::byte>> PoolView::payload(const LoanFrame& frame) const {
  const ChunkMeta* m = meta_of(frame.ref);
  if (m == nullptr) return std::nullopt;
  // Read once: the count is in memory any client can write.
  const std::uint64_t blocks = m->blocks.load(std::memory_order_relaxed);
  if (blocks == 0 || blocks > block_count_ - frame.ref.chunk ||
      frame.length > blocks * kPoolBlock) {
    return std::nullopt;
  }
  return std::span<const std::byte>(data_ + std::size_t{frame.ref.chunk} * kPoolBlock,
                                    static_cast<std::size_t>(frame.length));
}

bool PoolView::retain(const LoanRef& ref) const {
  const ChunkMeta* m = meta_of(ref);
  if (m == nullptr) return false;
  const_cast<ChunkMeta*>(m)->refs.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool PoolView::release(const LoanRef& ref) const {
  const ChunkMeta* m = meta_of(ref);
  return m != nullptr && drop_reference(const_cast<ChunkMeta*>(m)->refs);
}

PoolView::Use PoolView::use() const {
  Use u;
  for (std::uint64_t i = 0; i < block_count_; ++i) {
    if (meta_[i].refs.load(std::memory_order_relaxed) == 0) continue;
    ++u.chunks;
    const std::uint64_t blocks = meta_[i].blocks.load(std::memory_order_relaxed);
    u.bytes += std::min(blocks, block_count_ - i) * kPoolBlock;
  }
  u.bytes +=
      std::min(header_->loaned_blocks.load(std::memory_order_relaxed), block_count_) * kPoolBlock;
  return u;
}

// ---------------------------------------------------------------------------------------------
// PoolMaps

std::shared_ptr<const PoolView> PoolMaps::find(std::uint32_t slot, std::uint32_t pool_id) {
  const auto it = views_.find(key(slot, pool_id));
  if (it != views_.end()) return it->second;
  try {
    auto view = std::make_shared<const PoolView>(bus_, slot, pool_id);
    views_.emplace(key(slot, pool_id), view);
    return view;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void PoolMaps::forget_removed() {
  std::erase_if(views_, [&](const auto& entry) {
    return !Segment::exists(pool_name(bus_, static_cast<std::uint32_t>(entry.first >> 32),
                                      static_cast<std::uint32_t>(entry.first)));
  });
}

void PoolMaps::forget(std::uint32_t slot, std::uint32_t pool_id) {
  views_.erase(key(slot, pool_id));
}

// ---------------------------------------------------------------------------------------------
// PoolOwner

PoolOwner::PoolOwner(std::string_view bus, std::uint32_t slot, std::uint32_t pool_id,
                     std::uint64_t bytes, const Permissions& perms)
    : segment_(create_pool(bus, slot, pool_id, bytes / kPoolBlock, perms)),
      block_count_(bytes / kPoolBlock),
      slot_(slot),
      id_(pool_id) {
  const std::size_t data_offset = pool_data_offset(block_count_);
  header_ = ::new (segment_.base() + kSegmentHeaderSize) PoolHeader{};
  header_->owner_slot = slot;
  header_->pool_id = pool_id;
  header_->owner_pid = ::getpid();
  header_->block_size = kPoolBlock;
  header_->block_count = block_count_;
  header_->meta_offset = kMetaOffset;
  header_->data_offset = data_offset;
  meta_ = reinterpret_cast<ChunkMeta*>(segment_.base() + kMetaOffset);
  data_ = segment_.base() + data_offset;
  free_.emplace(0, static_cast<std::uint32_t>(block_count_));
  segment_.publish();
}

// The pool stays for the coordinator to remove once nothing references it: subscribers may
// still read what this publisher sent.
PoolOwner::~PoolOwner() = default;

void PoolOwner::free_run(std::uint32_t start, std::uint32_t blocks) {
  used_blocks_ -= blocks;
  auto next = free_.lower_bound(start);
  // Merged with the free runs on either side, so a run is always as long as it can be.
  if (next != free_.end() && start + blocks == next->first) {
    blocks += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    const auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      prev->second += blocks;
      return;
    }
  }
  free_.emplace_hint(next, start, blocks);
}

// Chunks mostly come back in the order they were published: each loan takes back those at the
// front of the queue, so the blocks just released, still in cache, serve the next loans. One
// that is still referenced (a subscriber that reads slowly, or keeps it) goes to the back, a
// few at a time: the whole queue is looked at only when the free runs cannot serve a loan.
void PoolOwner::reclaim_oldest() {
  for (int held = 0; held < 4 && !live_.empty();) {
    const Chunk c = live_.front();
    live_.pop_front();
    if (meta_[c.index].refs.load(std::memory_order_acquire) == 0) {
      free_run(c.index, c.blocks);
    } else {
      live_.push_back(c);
      ++held;
    }
  }
}

void PoolOwner::reclaim() {
  std::erase_if(live_, [&](const Chunk& c) {
    if (meta_[c.index].refs.load(std::memory_order_acquire) != 0) return false;
    free_run(c.index, c.blocks);
    return true;
  });
}

std::optional<Chunk> PoolOwner::take(std::uint32_t want) {
  // Next fit: the first free run long enough at or after where the last allocation ended, else
  // from the start of the pool.
  const auto from = free_.lower_bound(cursor_);
  auto fits = std::find_if(from, free_.end(), [&](const auto& run) { return run.second >= want; });
  if (fits == free_.end()) {
    fits = std::find_if(free_.begin(), from, [&](const auto& run) { return run.second >= want; });
    if (fits == from) return std::nullopt;
  }
  const auto [start, length] = *fits;
  free_.erase(fits);
  if (length > want) free_.emplace(start + want, length - want);
  used_blocks_ += want;
  cursor_ = start + want;
  Chunk c{start, want, 0};
  ChunkMeta& m = meta_[c.index];
  c.serial = m.serial.load(std::memory_order_relaxed) + 1;
  m.blocks.store(c.blocks, std::memory_order_relaxed);
  m.refs.store(0, std::memory_order_relaxed);
  m.serial.store(c.serial, std::memory_order_release);
  header_->loaned_blocks.fetch_add(c.blocks, std::memory_order_relaxed);
  return c;
}

std::optional<Chunk> PoolOwner::allocate(std::size_t bytes) {
  const std::uint64_t want = std::max<std::uint64_t>(1, (bytes + kPoolBlock - 1) / kPoolBlock);
  if (want > block_count_) return std::nullopt;
  const std::lock_guard lock(mutex_);
  reclaim_oldest();
  if (auto c = take(static_cast<std::uint32_t>(want))) return c;
  reclaim();
  return take(static_cast<std::uint32_t>(want));
}

void PoolOwner::give_back(const Chunk& chunk) {
  const std::lock_guard lock(mutex_);
  header_->loaned_blocks.fetch_sub(chunk.blocks, std::memory_order_relaxed);
  free_run(chunk.index, chunk.blocks);
}

void PoolOwner::published(const Chunk& chunk) {
  const std::lock_guard lock(mutex_);
  header_->loaned_blocks.fetch_sub(chunk.blocks, std::memory_order_relaxed);
  if (meta_[chunk.index].refs.load(std::memory_order_acquire) == 0) {
    free_run(chunk.index, chunk.blocks);
  } else {
    live_.push_back(chunk);
  }
}

std::uint64_t PoolOwner::used() {
  const std::lock_guard lock(mutex_);
  reclaim();
  return used_blocks_ * kPoolBlock;
}

}  // namespace shmcast::detail
