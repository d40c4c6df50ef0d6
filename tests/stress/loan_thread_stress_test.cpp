// Loans from many threads at once (also run under TSan): publisher threads loan, fill and
// publish on one Bus; subscriber threads check every byte in place and keep some payloads,
// which a third kind of thread releases. Every payload arrives intact, the books balance, and
// the pool is all free at the end.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"

namespace shmcast {
namespace {

using namespace std::chrono_literals;

constexpr int kPublishers = 3;
constexpr int kSubscribers = 2;
constexpr std::uint64_t kEach = 1500;

void fill(std::span<std::byte> bytes, std::uint64_t seq) {
  std::memcpy(bytes.data(), &seq, sizeof seq);
  for (std::size_t i = sizeof seq; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>((i ^ seq) & 0xff);
  }
}

bool intact(std::string_view payload) {
  std::uint64_t seq = 0;
  if (payload.size() < sizeof seq) return false;
  std::memcpy(&seq, payload.data(), sizeof seq);
  for (std::size_t i = sizeof seq; i < payload.size(); ++i) {
    if (static_cast<std::byte>(payload[i]) != static_cast<std::byte>((i ^ seq) & 0xff)) {
      return false;
    }
  }
  return true;
}

// Payloads handed from a subscriber thread to the thread that releases them.
class Releaser {
 public:
  void push(Payload p) {
    const std::lock_guard lock(mutex_);
    queue_.push_back(std::move(p));
    ready_.notify_one();
  }
  void run(const std::atomic<bool>& stop) {
    std::unique_lock lock(mutex_);
    while (!stop.load() || !queue_.empty()) {
      ready_.wait_for(lock, 1ms, [&] { return !queue_.empty(); });
      while (!queue_.empty()) {
        Payload p = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        if (!intact(p.view())) bad.fetch_add(1);
        p.reset();
        lock.lock();
      }
    }
  }
  std::atomic<std::uint64_t> bad{0};

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Payload> queue_;
};

TEST(LoanStressThreads, ThreadsLoanPublishReadKeepAndReleaseAtOnce) {
  test::Daemon d(test::unique_bus("loanstress"),
                 {"--pool-bytes", std::to_string(4U << 20), "--max-holds", "32"});
  Bus bus = Bus::connect(d.bus());
  std::vector<Subscriber> subs;
  for (int s = 0; s < kSubscribers; ++s) {
    subs.push_back(bus.subscriber());
    subs.back().subscribe({"stress"});
    ASSERT_EQ(subs.back().receive(1s)->kind, Kind::subscribe);
  }
  std::atomic<bool> publishing{true};
  std::atomic<bool> stop_releasing{false};
  Releaser releaser;
  std::thread release_thread([&] { releaser.run(stop_releasing); });
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> refused{0};
  std::vector<std::uint64_t> received(kSubscribers);
  std::vector<std::uint64_t> bad(kSubscribers);
  std::vector<std::uint64_t> too_many(kSubscribers);
  std::vector<std::thread> readers;
  for (int s = 0; s < kSubscribers; ++s) {
    readers.emplace_back([&, s] {
      Subscriber& sub = subs[s];
      std::uint64_t n = 0;
      for (;;) {
        const std::size_t got = sub.listen(
            [&](const MessageView& m) {
              if (m.kind != Kind::message) return true;
              ++received[s];
              if (!intact(m.payload)) ++bad[s];
              if (++n % 4 == 0) {
                try {
                  releaser.push(sub.keep(m));
                } catch (const Error&) {
                  ++too_many[s];
                }
              }
              return true;
            },
            50ms);
        if (got == 0 && !publishing.load()) return;
      }
    });
  }
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        const std::uint64_t seq = static_cast<std::uint64_t>(p) << 32 | i;
        try {
          Loan loan = bus.loan(8 + (seq * 2654435761U) % 20000, 1s);
          fill(loan.data(), seq);
          delivered.fetch_add(bus.publish("stress", std::move(loan)));
        } catch (const Error&) {
          refused.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : publishers) t.join();
  publishing.store(false);
  for (auto& t : readers) t.join();
  stop_releasing.store(true);
  release_thread.join();

  std::uint64_t total = 0;
  for (int s = 0; s < kSubscribers; ++s) {
    EXPECT_EQ(bad[s], 0U) << "subscriber " << s;
    total += received[s] + subs[s].dropped();
  }
  EXPECT_EQ(releaser.bad.load(), 0U);
  EXPECT_EQ(refused.load(), 0U);
  // Each delivery was read or dropped, and every publish reached both subscribers.
  EXPECT_EQ(total, kPublishers * kEach * kSubscribers);
  EXPECT_EQ(delivered.load() + subs[0].dropped() + subs[1].dropped(), total);
  std::uint64_t in_use = 0;
  for (const PoolStat& p : bus.stats().pools) in_use += p.bytes_in_use;
  EXPECT_EQ(in_use, 0U);
}

}  // namespace
}  // namespace shmcast
