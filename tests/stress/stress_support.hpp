// Shared pieces of the ring stress tests: a checking tally of records and a drain loop.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <span>
#include <thread>

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

// The sleep handshake under stress: each producer writes one record at a time and waits until
// the consumer has read one more before the next, while the consumer never spins, so nearly
// every record meets a consumer asleep or on its way to sleep. A lost wake-up leaves the
// consumer asleep until its cap, kWakeCap, and the producers waiting longer than kStall.
struct Handshake {
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<std::uint64_t> stalls{0};
};
inline constexpr std::chrono::seconds kStall{1};
inline constexpr std::chrono::seconds kWakeCap{3};

// One producer's side: records p/0..count-1, every other one woken later (as a fan-out does).
inline void handshake_produce(void* memory, std::size_t bytes, std::uint32_t p, std::uint64_t count,
                              Handshake& h) {
  detail::RingProducer producer(memory, bytes);
  std::minstd_rand random(p);
  for (std::uint64_t s = 0; s < count; ++s) {
    // A pause of varying length, so commits land before, during and after the consumer's
    // announcement.
    for (unsigned i = random() % 256; i > 0; --i) detail::cpu_relax();
    if (random() % 4 == 0) std::this_thread::yield();
    if (s % 3 == 0) {
      // Every third record only once the consumer has announced its sleep (or after a
      // millisecond): the wake-up is then certainly the producers' to make.
      const auto& word = static_cast<const detail::RingLayout*>(memory)->sleeping;
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      while (word.load() != detail::kConsumerAsleep && std::chrono::steady_clock::now() < give_up) {
        detail::cpu_relax();
      }
    }
    const std::uint64_t before = h.consumed.load();
    const StressRecord r{p, 0, s, stress_check(p, s)};
    const bool later = s % 2 == 1;
    while (producer.try_write(bytes_of(r), p, later ? detail::Wake::later : detail::Wake::now) ==
           detail::WriteStatus::full) {
      std::this_thread::yield();
    }
    if (later) producer.wake();
    const auto start = std::chrono::steady_clock::now();
    while (h.consumed.load() <= before) {
      if (h.stalls.load() > 0) return;  // another producer saw it: the run has failed
      if (std::chrono::steady_clock::now() - start > kStall) {
        h.stalls.fetch_add(1);
        return;
      }
      std::this_thread::yield();
    }
  }
}

// The consumer's side: reads `expected` records, sleeping (never spinning) whenever the ring is
// empty, for at most `limit` in all.
inline void handshake_consume(detail::RingConsumer& c, Tally& tally, std::uint64_t expected,
                              Handshake& h, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::uint64_t total = 0;
  while (total < expected && h.stalls.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    if (c.try_read(tally) == detail::ReadStatus::record) {
      h.consumed.store(++total);
      continue;
    }
    c.sleep(kWakeCap);
  }
}

}  // namespace shmcast::test
