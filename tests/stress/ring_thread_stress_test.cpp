// Ring under load from producer threads: nothing lost, drops counted exactly (also run under TSan).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "stress/stress_support.hpp"

namespace shmcast {
namespace {

using detail::ReadStatus;
using detail::RingConsumer;
using detail::RingProducer;
using detail::RingWritePoint;
using detail::WriteStatus;
using test::bytes_of;
using test::drain;
using test::kProducers;
using test::stress_check;
using test::StressRecord;
using test::Tally;

// Reads, gaps allowed, while the producers run, then what they left once they are joined.
Tally drain_until_done(RingConsumer& consumer, std::uint64_t expected,
                       std::vector<std::thread>& producers, const std::atomic<bool>& done) {
  Tally tally;
  tally.gaps_allowed = true;
  drain(consumer, tally, expected, std::chrono::seconds(240), &done);
  for (auto& t : producers) t.join();
  drain(consumer, tally, expected, std::chrono::seconds(1), &done);
  return tally;
}

TEST(RingStressThreads, FourProducersMillionEachNothingLost) {
  constexpr std::uint64_t kEach = 1'000'000;
  // A cache line a record: the whole run fits, so the ring never fills.
  test::HeapRing ring(std::size_t{1} << 28);
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::atomic<std::uint64_t> not_ok{0};
  std::vector<std::thread> producers;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    producers.emplace_back([&, p] {
      RingProducer producer(ring.memory(), ring.bytes());
      for (std::uint64_t s = 0; s < kEach; ++s) {
        const StressRecord r{p, 0, s, stress_check(p, s)};
        if (producer.try_write(bytes_of(r), p) != WriteStatus::ok) not_ok.fetch_add(1);
      }
    });
  }
  Tally tally;
  drain(consumer, tally, kProducers * kEach, std::chrono::seconds(240));
  for (auto& t : producers) t.join();
  EXPECT_EQ(not_ok.load(), 0U);
  EXPECT_EQ(consumer.dropped(), 0U);
  EXPECT_EQ(tally.bad, 0U);
  for (int p = 1; p <= kProducers; ++p) EXPECT_EQ(tally.received[p], kEach) << "producer " << p;
  EXPECT_EQ(consumer.skipped() + consumer.corrupt(), 0U);
}

TEST(RingStressThreads, SmallRingDropsAreCountedExactly) {
  constexpr std::uint64_t kEach = 200'000;
  test::HeapRing ring(4096);
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::array<std::atomic<std::uint64_t>, kProducers + 1> ok{};
  std::array<std::atomic<std::uint64_t>, kProducers + 1> full{};
  std::atomic<int> running{kProducers};
  std::atomic<bool> done{false};
  std::vector<std::thread> producers;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    producers.emplace_back([&, p] {
      RingProducer producer(ring.memory(), ring.bytes());
      for (std::uint64_t s = 0; s < kEach; ++s) {
        const StressRecord r{p, 0, s, stress_check(p, s)};
        (producer.try_write(bytes_of(r), p) == WriteStatus::ok ? ok[p] : full[p]).fetch_add(1);
      }
      if (running.fetch_sub(1) == 1) done.store(true);
    });
  }
  const Tally tally = drain_until_done(consumer, kProducers * kEach, producers, done);
  std::uint64_t all_full = 0;
  for (int p = 1; p <= kProducers; ++p) {
    EXPECT_EQ(tally.received[p], ok[p].load()) << "producer " << p;
    EXPECT_EQ(tally.received[p] + full[p].load(), kEach) << "producer " << p;
    all_full += full[p].load();
  }
  EXPECT_EQ(consumer.dropped(), all_full);
  EXPECT_GT(all_full, 0U) << "the ring was meant to fill";
  EXPECT_EQ(tally.bad, 0U);
}

// Producer threads hand records one at a time to a consumer that sleeps whenever its ring is
// empty: it must be woken for every one, never left asleep until its cap.
// Producers writing batches of up to eight records into a small ring, beside one another and a
// consumer: each batch is claimed whole or written record by record near the end of the ring
// and when the ring is full, and every record is read in its producer's order or counted as
// dropped, exactly.
TEST(RingStressThreads, BatchesInterleaveWithoutLossAndDropsAreCountedExactly) {
  constexpr std::uint64_t kEach = 200'000;
  test::HeapRing ring(8192);
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::array<std::atomic<std::uint64_t>, kProducers + 1> ok{};
  std::atomic<int> running{kProducers};
  std::atomic<bool> done{false};
  std::vector<std::thread> producers;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    producers.emplace_back([&, p] {
      RingProducer producer(ring.memory(), ring.bytes());
      std::vector<StressRecord> batch;
      std::vector<std::span<const std::byte>> parts;
      std::vector<std::span<const std::span<const std::byte>>> records;
      for (std::uint64_t s = 0; s < kEach;) {
        const std::uint64_t n = std::min<std::uint64_t>(1 + s % 8, kEach - s);
        batch.clear();
        for (std::uint64_t i = 0; i < n; ++i)
          batch.push_back({p, 0, s + i, stress_check(p, s + i)});
        parts.clear();
        for (const StressRecord& r : batch) parts.push_back(bytes_of(r));
        records.clear();
        for (const auto& part : parts) records.emplace_back(&part, 1);
        ok[p].fetch_add(producer.try_write_batch(records, p));
        s += n;
      }
      if (running.fetch_sub(1) == 1) done.store(true);
    });
  }
  const Tally tally = drain_until_done(consumer, kProducers * kEach, producers, done);
  std::uint64_t written = 0;
  for (int p = 1; p <= kProducers; ++p) {
    EXPECT_EQ(tally.received[p], ok[p].load()) << "producer " << p;
    written += ok[p].load();
  }
  EXPECT_EQ(written + consumer.dropped(), kProducers * kEach);
  EXPECT_GT(written, 0U);
  EXPECT_GT(consumer.dropped(), 0U);  // the ring filled, so batches also went record by record
  EXPECT_EQ(tally.bad, 0U);
  EXPECT_EQ(consumer.skipped() + consumer.corrupt(), 0U);
}

TEST(RingStressThreads, SleepingConsumerIsWokenForEveryRecord) {
  constexpr std::uint64_t kEach = 3000;
  constexpr std::uint32_t kHanders = 3;
  test::HeapRing ring(std::size_t{1} << 16);
  RingConsumer consumer(ring.memory(), ring.bytes());
  test::Handshake handshake;
  std::vector<std::thread> producers;
  for (std::uint32_t p = 1; p <= kHanders; ++p) {
    producers.emplace_back(
        [&, p] { test::handshake_produce(ring.memory(), ring.bytes(), p, kEach, handshake); });
  }
  Tally tally;
  test::handshake_consume(consumer, tally, kHanders * kEach, handshake, std::chrono::seconds(240));
  for (auto& t : producers) t.join();
  EXPECT_EQ(handshake.stalls.load(), 0U) << "records the consumer slept through";
  EXPECT_EQ(tally.bad, 0U);
  for (std::uint32_t p = 1; p <= kHanders; ++p) EXPECT_EQ(tally.received[p], kEach) << p;
}

}  // namespace
}  // namespace shmcast
