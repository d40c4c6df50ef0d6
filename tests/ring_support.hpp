// Rings for tests: in heap memory (so ASan sees any access outside them) or in anonymous
// shared memory (so forked processes share them).
#pragma once

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ring.hpp"

namespace shmcast::test {

class HeapRing {
 public:
  explicit HeapRing(std::size_t capacity)
      : bytes_(detail::ring_bytes(capacity)),
        memory_(static_cast<std::byte*>(
                    std::aligned_alloc(detail::kCacheLine, rounded(bytes_ + kGuard))),
                &std::free) {
    std::memset(memory_.get(), 0, bytes_);
    std::memset(memory_.get() + bytes_, kGuardByte, kGuard);
    detail::ring_init(memory_.get(), capacity);
  }

  /// True while nothing was written past the end of the ring (a guard zone follows it).
  [[nodiscard]] bool guard_intact() const {
    for (std::size_t i = 0; i < kGuard; ++i) {
      if (memory_.get()[bytes_ + i] != std::byte{kGuardByte}) return false;
    }
    return true;
  }

  [[nodiscard]] std::byte* memory() const { return memory_.get(); }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }
  [[nodiscard]] detail::RingLayout& layout() const {
    return *reinterpret_cast<detail::RingLayout*>(memory());
  }
  [[nodiscard]] std::byte* data() const { return memory() + sizeof(detail::RingLayout); }

 private:
  static constexpr std::size_t kGuard = 4096;
  static constexpr unsigned char kGuardByte = 0xa5;

  // aligned_alloc wants a size that is a multiple of the alignment.
  static std::size_t rounded(std::size_t n) {
    return (n + detail::kCacheLine - 1) & ~(detail::kCacheLine - 1);
  }

  std::size_t bytes_;
  std::unique_ptr<std::byte, decltype(&std::free)> memory_;
};

class SharedRing {
 public:
  explicit SharedRing(std::size_t capacity) : bytes_(detail::ring_bytes(capacity)) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    memory_ = static_cast<std::byte*>(p);
    detail::ring_init(memory_, capacity);
  }
  ~SharedRing() { munmap(memory_, bytes_); }
  SharedRing(const SharedRing&) = delete;
  SharedRing& operator=(const SharedRing&) = delete;

  [[nodiscard]] std::byte* memory() const { return memory_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  std::size_t bytes_;
  std::byte* memory_;
};

inline std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

inline std::string as_string(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// A record of a stress test: who wrote it, its sequence number, and a checksum of both.
struct StressRecord {
  std::uint32_t producer;
  std::uint32_t pad;
  std::uint64_t seq;
  std::uint64_t check;
};

inline std::uint64_t stress_check(std::uint32_t producer, std::uint64_t seq) {
  std::uint64_t x = (std::uint64_t{producer} << 40) ^ seq ^ 0x9e37'79b9'7f4a'7c15ULL;
  x ^= x >> 31;
  x *= 0xbf58'476d'1ce4'e5b9ULL;
  return x ^ (x >> 29);
}

}  // namespace shmcast::test
