// One Bus shared by several publishing threads: each thread's messages arrive in its order, and
// every publish is counted.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"

namespace shmcast {
namespace {

TEST(PublishThreads, FourThreadsOnOneBusKeepTheirOrder) {
  constexpr int kThreads = 4;
  constexpr int kEach = 20'000;
  test::Daemon daemon(test::unique_bus("threads"), {"--ring-bytes", "16777216"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"t"});
  ASSERT_TRUE(sub.receive(std::chrono::seconds(5)).has_value());  // the confirmation

  std::atomic<std::uint64_t> delivered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        delivered += bus.publish("t", std::to_string(t) + ":" + std::to_string(i));
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(delivered.load(), static_cast<std::uint64_t>(kThreads) * kEach);

  std::array<int, kThreads> next{};
  int received = 0;
  int out_of_order = 0;
  while (auto m = sub.receive(std::chrono::milliseconds(500))) {
    ASSERT_EQ(m->kind, Kind::message);
    const auto colon = m->payload.find(':');
    const int t = std::stoi(m->payload.substr(0, colon));
    const int i = std::stoi(m->payload.substr(colon + 1));
    if (i != next[t]) ++out_of_order;
    next[t] = i + 1;
    ++received;
  }
  EXPECT_EQ(received, kThreads * kEach);
  EXPECT_EQ(out_of_order, 0);
  EXPECT_EQ(sub.dropped(), 0U);
}

// Segments of `bus` mapped into this process now.
int mapped_segments(const std::string& bus) {
  std::ifstream maps("/proc/self/maps");
  const std::string needle = "/shmcast." + bus + ".";
  int n = 0;
  for (std::string line; std::getline(maps, line);) n += line.find(needle) != std::string::npos;
  return n;
}

// A thread that opens a Bus per task keeps only the buses still open mapped, not every one it
// published through.
TEST(PublishThreads, ClosedBusesDoNotStayMapped) {
  test::Daemon daemon(test::unique_bus("remap"));
  Bus listener = Bus::connect(daemon.bus());
  Subscriber sub = listener.subscriber();
  sub.subscribe({"t"});
  ASSERT_TRUE(sub.receive(std::chrono::seconds(5)).has_value());
  const int before = mapped_segments(daemon.bus());
  for (int i = 0; i < 200; ++i) {
    Bus bus = Bus::connect(daemon.bus());
    ASSERT_EQ(bus.publish("t", std::to_string(i)), 1U);
  }
  // The last closed bus's cache stays until the next bus is opened: its control segment and the
  // subscriber's ring.
  EXPECT_LE(mapped_segments(daemon.bus()), before + 2);
  for (int i = 0; i < 200; ++i) {
    const auto m = sub.receive(std::chrono::seconds(5));
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->payload, std::to_string(i));
  }
}

}  // namespace
}  // namespace shmcast
