// Ring micro-benchmarks: one thread writing and reading, and a producer thread feeding a
// consumer thread.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "ring.hpp"

namespace {

using shmcast::detail::ReadStatus;
using shmcast::detail::RingConsumer;
using shmcast::detail::RingProducer;
using shmcast::detail::WriteStatus;

class BenchRing {
 public:
  explicit BenchRing(std::size_t capacity)
      : bytes_(shmcast::detail::ring_bytes(capacity)),
        memory_(std::aligned_alloc(shmcast::detail::kCacheLine, (bytes_ + 63) & ~std::size_t{63})) {
    std::memset(memory_, 0, bytes_);
    shmcast::detail::ring_init(memory_, capacity);
  }
  ~BenchRing() { std::free(memory_); }
  BenchRing(const BenchRing&) = delete;
  BenchRing& operator=(const BenchRing&) = delete;
  [[nodiscard]] void* memory() const { return memory_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  std::size_t bytes_;
  void* memory_;
};

// Write one record, read it back: the cost of a record with no contention and a warm cache.
void BM_RingWriteRead(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  BenchRing ring(std::size_t{1} << 20);
  RingProducer producer(ring.memory(), ring.bytes());
  RingConsumer consumer(ring.memory(), ring.bytes());
  const std::vector<std::byte> payload(size, std::byte{0x42});
  std::size_t seen = 0;
  for (auto _ : state) {
    if (producer.try_write(payload, 1) != WriteStatus::ok) state.SkipWithError("ring full");
    consumer.try_read([&](std::span<const std::byte> b) { seen += b.size(); });
  }
  benchmark::DoNotOptimize(seen);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}
BENCHMARK(BM_RingWriteRead)->Arg(16)->Arg(64)->Arg(1024);

// A producer thread writes as fast as it can into a 1 MiB ring; a consumer thread busy-reads.
// Items are records delivered; drops (ring full) are reported as a counter.
void BM_RingProducerConsumer(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  BenchRing ring(std::size_t{1} << 20);
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::atomic<bool> stop{false};
  std::uint64_t received = 0;
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      if (consumer.try_read([&](std::span<const std::byte>) { ++received; }) !=
          ReadStatus::record) {
        shmcast::detail::cpu_relax();
      }
    }
    while (consumer.try_read([&](std::span<const std::byte>) { ++received; }) ==
           ReadStatus::record) {
    }
  });
  RingProducer producer(ring.memory(), ring.bytes());
  const std::vector<std::byte> payload(size, std::byte{0x42});
  std::uint64_t full = 0;
  for (auto _ : state) {
    while (producer.try_write(payload, 1) == WriteStatus::full) ++full;
  }
  stop.store(true);
  reader.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(received));
  state.SetBytesProcessed(static_cast<std::int64_t>(received * size));
  state.counters["full_retries"] = static_cast<double>(full);
}
BENCHMARK(BM_RingProducerConsumer)->Arg(16)->Arg(64)->Arg(1024)->UseRealTime();

}  // namespace
