// Loans (Bus::loan) and kept payloads (Payload): the pool side of zero-copy messages.
#include "shmcast/loan.hpp"

#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "client.hpp"
#include "held_payload.hpp"

namespace shmcast {

namespace detail {

PoolOwner& BusState::pool() {
  const std::lock_guard lock(pool_mutex_);
  if (!pool_) {
    if (limits.pool_bytes < kPoolBlock) {
      throw Error(Errc::payload_too_large,
                  fmt::format("bus '{}' has no payload pools (--pool-bytes {}): publish a copy, "
                              "or restart shmcastd with --pool-bytes",
                              name, limits.pool_bytes));
    }
    Permissions perms;
    perms.mode = view->segment_mode();
    perms.group = view->segment_group();
    try {
      pool_ = std::make_unique<PoolOwner>(name, link->slot(), link->generation(), limits.pool_bytes,
                                          perms);
    } catch (const SegmentError& e) {
      throw Error(
          e.code() == SegmentErrc::permission_denied ? Errc::permission_denied : Errc::system,
          fmt::format("bus '{}': cannot make this connection's payload pool: {}", name, e.what()));
    }
  }
  return *pool_;
}

std::shared_ptr<const PoolView> BusState::pool_view(std::uint32_t slot, std::uint32_t pool_id) {
  const std::lock_guard lock(views_mutex_);
  if (!views_) views_ = std::make_unique<PoolMaps>(name);
  sweep_views();
  return views_->find(slot, pool_id);
}

bool BusState::forget_removed_pools() {
  const std::lock_guard lock(views_mutex_);
  if (!views_) return false;
  sweep_views();
  return !views_->empty();
}

// A pool stays mapped while its view is kept: the views of removed pools are let go at most
// once a second, so a reader of many publishers that come and go does not keep their memory.
void BusState::sweep_views() {
  const auto now = std::chrono::steady_clock::now();
  if (now - views_swept_ < std::chrono::seconds(1)) return;
  views_swept_ = now;
  views_->forget_removed();
}

HeldPayload::~HeldPayload() {
  if (!pool) return;
  // The hold goes first, then the reference: a process killed in between leaks one reference
  // instead of letting the coordinator drop it a second time.
  hold->state.store(kHoldFree, std::memory_order_release);
  pool->release(ref);
}

}  // namespace detail

Loan Bus::loan(std::size_t bytes, std::chrono::nanoseconds wait) {
  detail::PoolOwner& pool = state_->pool();
  if (bytes > pool.capacity()) {
    throw Error(Errc::payload_too_large,
                fmt::format("a loan of {} bytes is larger than bus '{}''s payload pool ({} "
                            "bytes): restart shmcastd with a larger --pool-bytes",
                            bytes, state_->name, pool.capacity()));
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    if (const auto chunk = pool.allocate(bytes)) {
      Loan loan;
      loan.bus_ = state_;
      loan.data_ = pool.bytes_of(*chunk).data();
      loan.size_ = bytes;
      loan.chunk_ = chunk->index;
      loan.blocks_ = chunk->blocks;
      loan.serial_ = chunk->serial;
      return loan;
    }
    // Chunks come back as subscribers let go of them, which wakes nobody: look again, less
    // often the longer it takes.
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(1000));
  }
  throw Error(Errc::pool_full,
              fmt::format("bus '{}': this connection's payload pool is full ({} of {} bytes in "
                          "use) and no {}-byte chunk is free: subscribers still read or keep "
                          "what it sent (each may leave up to --max-unread-loan-bytes unread); "
                          "wait for room (Bus::loan's wait), release kept payloads, or restart "
                          "shmcastd with a larger --pool-bytes",
                          state_->name, pool.used(), pool.capacity(), bytes));
}

void Loan::shrink(std::size_t bytes) noexcept {
  size_ = std::min(size_, bytes);
}

Loan::Loan(Loan&& other) noexcept
    : bus_(std::move(other.bus_)),
      data_(other.data_),
      size_(other.size_),
      chunk_(other.chunk_),
      blocks_(other.blocks_),
      serial_(other.serial_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

Loan& Loan::operator=(Loan&& other) noexcept {
  if (this != &other) {
    give_back();
    bus_ = std::move(other.bus_);
    data_ = other.data_;
    size_ = other.size_;
    chunk_ = other.chunk_;
    blocks_ = other.blocks_;
    serial_ = other.serial_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

Loan::~Loan() {
  give_back();
}

void Loan::give_back() noexcept {
  if (!bus_) return;
  bus_->pool().give_back(detail::Chunk{chunk_, blocks_, serial_});
  bus_.reset();
  data_ = nullptr;
  size_ = 0;
}

Payload::Payload(std::unique_ptr<detail::HeldPayload> held) noexcept : held_(std::move(held)) {}
Payload::Payload() noexcept = default;
Payload::Payload(Payload&&) noexcept = default;
Payload& Payload::operator=(Payload&&) noexcept = default;
Payload::~Payload() = default;

std::span<const std::byte> Payload::data() const noexcept {
  if (!held_) return {};
  return held_->pool ? held_->bytes : std::as_bytes(std::span<const char>(held_->copy));
}

std::string_view Payload::view() const noexcept {
  const auto bytes = data();
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

bool Payload::loaned() const noexcept {
  return held_ && held_->pool != nullptr;
}

void Payload::reset() noexcept {
  held_.reset();
}

}  // namespace shmcast
