// Shared pieces of the ring stress tests: a checking tally of records and a drain loop.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <span>

#include "ring_support.hpp"

namespace shmcast::test {

inline constexpr int kProducers = 4;

inline std::span<const std::byte> bytes_of(const StressRecord& r) {
  return std::as_bytes(std::span<const StressRecord, 1>(&r, 1));
}

// Checks each record's checksum and that every producer's sequence only grows; counts them.
struct Tally {
  std::array<std::uint64_t, kProducers + 1> next{};  // next expected seq per producer
  std::array<std::uint64_t, kProducers + 1> received{};
  std::uint64_t bad = 0;
  bool gaps_allowed = false;

  void operator()(std::span<const std::byte> b) {
    StressRecord r{};
    if (b.size() != sizeof r) {
      ++bad;
      return;
    }
    std::memcpy(&r, b.data(), sizeof r);
    if (r.producer > kProducers || r.check != stress_check(r.producer, r.seq) ||
        (gaps_allowed ? r.seq < next[r.producer] : r.seq != next[r.producer])) {
      ++bad;
      return;
    }
    next[r.producer] = r.seq + 1;
    ++received[r.producer];
  }
};

// Reads until `expected` records arrived or `limit` passed.
inline void drain(detail::RingConsumer& c, Tally& tally, std::uint64_t expected,
                  std::chrono::seconds limit, const std::atomic<bool>* producers_done = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::uint64_t total = 0;
  while (total < expected && std::chrono::steady_clock::now() < deadline) {
    if (c.try_read(tally) == detail::ReadStatus::record) {
      ++total;
      continue;
    }
    if (producers_done != nullptr && producers_done->load() &&
        c.try_read(tally) == detail::ReadStatus::empty) {
      return;
    }
    c.wait(std::chrono::milliseconds(10), 200);
  }
}

}  // namespace shmcast::test
