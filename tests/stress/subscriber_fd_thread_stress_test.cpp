// Subscriber::fd() against publishers in other threads (also run under TSan): the watcher
// thread, the owner's drains and re-arms, and the publishers' wake-ups race, and every message
// still arrives, in order, through an epoll loop.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/fd_support.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kWait{5000};

TEST(SubscriberFdStressThreads, ThousandsOfMessagesFromThreadsArriveInOrderThroughEpoll) {
  constexpr int kPublishers = 3;
  constexpr std::uint64_t kEach = 4000;
  constexpr std::uint64_t kSideEvery = 1500;  // a subscribe mid-stream, for its confirmation
  // Room for every message at once: a slow reader (TSan) must not drop any.
  test::Daemon daemon(test::unique_bus("fdthreads"), {"--ring-bytes", "4194304"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  ASSERT_EQ(sub.subscribe({"feed"}), 1U);
  test::EpollLoop loop(sub);

  std::vector<std::thread> publishers;
  std::atomic<int> failures{0};
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&, p] {
      Bus own = Bus::connect(daemon.bus());
      for (std::uint64_t i = 0; i < kEach; ++i) {
        if (own.publish("feed", test::numbered(p, i)) != 1) failures.fetch_add(1);
        if (i % 200 == static_cast<std::uint64_t>(p))
          std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  test::InOrder tally;
  std::uint64_t side = 0;
  while (tally.messages < kPublishers * kEach) {
    const std::uint64_t before = tally.messages;
    loop.run(tally, before + 1, kWait);
    if (tally.messages == before) break;  // run() reported the missing wake-up
    if (tally.messages / kSideEvery > side) {
      ++side;
      ASSERT_EQ(sub.subscribe({fmt::format("side{}", side)}), side + 1);
    }
  }
  for (auto& t : publishers) t.join();
  // The last confirmation may still wait: one more drain.
  if (loop.wait(milliseconds(0))) {
    while (auto m = sub.receive(std::chrono::nanoseconds(0))) tally(*m);
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(tally.messages, kPublishers * kEach);
  EXPECT_EQ(tally.wrong, 0U);
  EXPECT_EQ(tally.confirmations, side + 1);
  for (int p = 0; p < kPublishers; ++p) EXPECT_EQ(tally.next[p], kEach) << "publisher " << p;
  EXPECT_EQ(sub.dropped(), 0U);
  EXPECT_FALSE(loop.wait(milliseconds(50)));
}

TEST(SubscriberFdStressThreads, AMessageRightAfterEachDrainIsNeverMissed) {
  constexpr std::uint64_t kMessages = 3000;
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  ASSERT_EQ(sub.subscribe({"pingpong"}), 1U);
  test::EpollLoop loop(sub);
  ASSERT_TRUE(loop.wait(kWait));
  ASSERT_TRUE(sub.receive(std::chrono::nanoseconds(0)));

  // The publisher sends the next message the moment the reader has the last one, so messages
  // land while the reader finishes its drain and re-arms the fd.
  std::atomic<std::uint64_t> received{0};
  std::thread publisher([&] {
    Bus own = Bus::connect(daemon.bus());
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      own.publish("pingpong", test::numbered(0, i));
      while (received.load(std::memory_order_acquire) <= i) std::this_thread::yield();
    }
  });
  test::InOrder tally;
  // Below the watcher's one-second guard: a wake-up lost in the re-arm shows as a wait this long.
  const milliseconds patience{900};
  std::uint64_t empty = 0;
  while (tally.messages < kMessages) {
    if (!loop.wait(patience)) {
      ADD_FAILURE() << "no wake-up within " << patience.count() << " ms after " << tally.messages
                    << " messages";
      received.store(kMessages, std::memory_order_release);
      break;
    }
    std::uint64_t drained = 0;
    while (auto m = sub.receive(std::chrono::nanoseconds(0))) {
      tally(*m);
      ++drained;
      received.store(tally.messages, std::memory_order_release);
    }
    empty += drained == 0;
  }
  publisher.join();
  EXPECT_EQ(tally.messages, kMessages);
  EXPECT_EQ(tally.wrong, 0U);
  std::printf("wake-ups that found nothing: %lu of %lu messages\n",
              static_cast<unsigned long>(empty), static_cast<unsigned long>(kMessages));
}

}  // namespace
}  // namespace shmcast
