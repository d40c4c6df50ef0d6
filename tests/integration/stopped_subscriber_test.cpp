// A subscriber process stopped with SIGSTOP while publishers flood its channel: the publishers
// never wait for it, every subscriber's books balance exactly (received + dropped = published
// to it), the stopped one finds the gap in its own stream, and shm-stat shows its drops.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using test::Child;
using test::FrameReader;
using test::FrameWriter;
using test::Link;
using test::now_ns;
using namespace std::chrono_literals;

constexpr std::uint32_t kPublishers = 2;
constexpr std::uint64_t kEach = 20'000;
constexpr int kSubscribers = 3;  // the first one is stopped; the last one holds a pattern
constexpr std::chrono::milliseconds kForever{-1};

struct Books {
  std::uint64_t received = 0;
  std::uint64_t gap_frames = 0;
  std::uint64_t gap_total = 0;  // the counts the gap frames announced
  std::uint64_t dropped = 0;    // Subscriber::dropped() at the end
  std::uint64_t out_of_order = 0;
  std::uint64_t corrupt = 0;
  std::uint64_t gap_before_first_message = 0;  // a gap announced before any message came
};

// Reads until every message published to it is either received or announced as dropped.
int counting_subscriber(const std::string& bus_name, bool pattern, Link& link) {
  Bus bus = Bus::connect(bus_name);
  Subscriber sub = bus.subscriber();
  pattern ? sub.psubscribe({"fl*"}) : sub.subscribe({"flood"});
  if (!sub.receive(10s)) return 2;
  if (!link.send("ready")) return 1;
  Books books;
  std::array<std::uint64_t, kPublishers> next{};
  while (books.received + books.gap_total < kPublishers * kEach) {
    const auto m = sub.receive(30s);
    if (!m) break;
    if (m->kind == Kind::gap) {
      ++books.gap_frames;
      books.gap_total += static_cast<std::uint64_t>(m->count);
      if (books.received == 0) ++books.gap_before_first_message;
      continue;
    }
    const auto n = test::parse_numbered(m->payload);
    if (!n || n->publisher >= kPublishers) {
      ++books.corrupt;
      continue;
    }
    // Drops skip numbers; they never reorder them.
    if (n->seq < next[n->publisher]) ++books.out_of_order;
    next[n->publisher] = n->seq + 1;
    ++books.received;
  }
  books.dropped = sub.dropped();
  if (!link.send(test::frame_of(books))) return 1;
  (void)link.receive(kForever);
  return 0;
}

// Publishes its messages as fast as it can and reports the deliveries publish() counted and
// its slowest single publish.
int flooding_publisher(const std::string& bus_name, std::uint32_t id, Link& link) {
  Bus bus = Bus::connect(bus_name);
  if (!link.send("ready") || !link.receive(kForever)) return 1;
  std::uint64_t deliveries = 0;
  std::uint64_t slowest = 0;
  const std::uint64_t start = now_ns();
  for (std::uint64_t seq = 0; seq < kEach; ++seq) {
    const std::uint64_t before = now_ns();
    deliveries += bus.publish("flood", test::numbered(id, seq, before));
    slowest = std::max(slowest, now_ns() - before);
  }
  return link.send(FrameWriter().u64(deliveries).u64(slowest).u64(now_ns() - start).frame()) ? 0
                                                                                             : 1;
}

TEST(StoppedSubscriber, PublishersGoOnAndEveryBookBalances) {
  test::Daemon daemon(test::unique_bus("stopped"),
                      {"--ring-bytes", "65536", "--max-payload", "1024"});
  const std::string name = daemon.bus();
  std::vector<std::unique_ptr<Child>> subscribers;
  for (int s = 0; s < kSubscribers; ++s) {
    const bool pattern = s == kSubscribers - 1;
    subscribers.push_back(std::make_unique<Child>(
        [&name, pattern](Link& link) { return counting_subscriber(name, pattern, link); }));
  }
  for (auto& s : subscribers) ASSERT_EQ(s->link().receive(30s), "ready");
  Child& stopped = *subscribers[0];
  ASSERT_EQ(::kill(stopped.pid(), SIGSTOP), 0);

  std::vector<std::unique_ptr<Child>> publishers;
  for (std::uint32_t p = 0; p < kPublishers; ++p) {
    publishers.push_back(std::make_unique<Child>(
        [&name, p](Link& link) { return flooding_publisher(name, p, link); }));
  }
  for (auto& p : publishers) ASSERT_EQ(p->link().receive(30s), "ready");
  for (auto& p : publishers) ASSERT_TRUE(p->link().send("go"));
  std::uint64_t deliveries = 0;
  std::uint64_t slowest = 0;
  std::uint64_t longest_run = 0;
  for (std::uint32_t p = 0; p < kPublishers; ++p) {
    // A publisher that waited for the stopped subscriber would never report.
    const auto report = publishers[p]->link().receive(60s);
    ASSERT_TRUE(report.has_value()) << "publisher " << p << " did not finish";
    FrameReader r(*report);
    deliveries += r.u64();
    slowest = std::max(slowest, r.u64());
    longest_run = std::max(longest_run, r.u64());
  }

  // While it is still stopped, shm-stat shows what it dropped.
  const test::Json stat = test::shm_stat_json(name);
  std::uint64_t stat_dropped = 0;
  for (const auto& c : stat["clients"].items) {
    if (c["pid"].u64() == static_cast<std::uint64_t>(stopped.pid())) {
      stat_dropped += c["dropped"].u64();
    }
  }
  ASSERT_EQ(::kill(stopped.pid(), SIGCONT), 0);

  std::uint64_t received = 0;
  for (int s = 0; s < kSubscribers; ++s) {
    const auto report = subscribers[s]->link().receive(60s);
    ASSERT_TRUE(report.has_value()) << "subscriber " << s;
    const auto b = test::from_frame<Books>(*report);
    EXPECT_EQ(b.received + b.dropped, kPublishers * kEach)
        << "subscriber " << s << ": received " << b.received << ", dropped " << b.dropped;
    EXPECT_EQ(b.gap_total, b.dropped) << "subscriber " << s << ": its stream announced them all";
    EXPECT_EQ(b.out_of_order, 0U) << "subscriber " << s;
    EXPECT_EQ(b.corrupt, 0U) << "subscriber " << s;
    EXPECT_EQ(b.gap_before_first_message, 0U)
        << "subscriber " << s << ": a gap comes after the messages that were in the ring";
    if (s == 0) {
      EXPECT_GT(b.dropped, 0U) << "the stopped subscriber's ring never filled";
      EXPECT_GE(b.gap_frames, 1U);
      EXPECT_EQ(stat_dropped, b.dropped) << "shm-stat while it was stopped";
      fmt::print("stopped subscriber: {} received, {} dropped, {} gap frame(s)\n", b.received,
                 b.dropped, b.gap_frames);
    } else {
      fmt::print("live subscriber {}: {} received, {} dropped\n", s, b.received, b.dropped);
    }
    received += b.received;
  }
  EXPECT_EQ(deliveries, received) << "publish() counted exactly the messages that arrived";
  fmt::print("{} publishers x {} messages in {:.1f} ms, slowest single publish {:.2f} ms\n",
             kPublishers, kEach, test::ms_of(longest_run), test::ms_of(slowest));
}

}  // namespace
}  // namespace shmcast
