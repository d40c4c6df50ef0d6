// Crashes while the bus is busy: subscribers SIGKILLed at random moments while publishers run
// flat out, a publisher SIGKILLed inside Bus::publish at each point of a ring write, and the
// coordinator SIGKILLed under load and restarted. Each test prints the figures it measures.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "ring.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using test::Child;
using test::FrameReader;
using test::FrameWriter;
using test::Link;
using test::now_ns;
using Clock = std::chrono::steady_clock;
using Names = std::vector<std::string>;
using NumSub = std::vector<std::pair<std::string, std::size_t>>;
using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kForever{-1};

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// ---- 1. Subscribers SIGKILLed at random moments ---------------------------------------------

constexpr int kPublishers = 2;

struct PublisherBoard {
  std::array<std::atomic<std::uint64_t>, kPublishers> published{};
  std::array<std::atomic<std::uint64_t>, kPublishers> slowest_ns{};  // longest single publish
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint32_t> stop{0};
};

// Publishes as fast as it can on the channels the victims hold, until told to stop.
int flat_out_publisher(const std::string& bus_name, int id, PublisherBoard& board, Link& link) {
  Bus bus = Bus::connect(bus_name);
  if (!link.send("ready")) return 1;
  const std::array<std::string, 4> channels{"crash.a", "crash.b", "crash.c", "quiet"};
  const std::string payload(48, 'p');
  std::uint64_t slowest = 0;
  for (std::uint64_t i = 0; board.stop.load(std::memory_order_relaxed) == 0; ++i) {
    const std::uint64_t start = now_ns();
    try {
      (void)bus.publish(channels[i % channels.size()], payload);
    } catch (const Error&) {
      board.errors.fetch_add(1);
    }
    const std::uint64_t took = now_ns() - start;
    if (took > slowest) {
      slowest = took;
      board.slowest_ns[id].store(slowest, std::memory_order_relaxed);
    }
    board.published[id].store(i + 1, std::memory_order_relaxed);
  }
  return 0;
}

// A victim: subscribes to shared channels, a channel of its own and patterns, says so, then
// reads until it is killed.
int victim_subscriber(const std::string& bus_name, int round, int index, Link& link) {
  Bus bus = Bus::connect(bus_name);
  Subscriber sub = bus.subscriber();
  // The publishers fill its ring between two confirmations: read, then go on (Errc::ring_full).
  const auto take = [&sub](const std::string& name, bool pattern) {
    for (;;) {
      try {
        pattern ? sub.psubscribe({name}) : sub.subscribe({name});
        return;
      } catch (const Error& e) {
        if (e.code() != Errc::ring_full) throw;
        while (sub.try_receive()) {
        }
      }
    }
  };
  take(fmt::format("own.{}.{}", round, index), false);
  take(fmt::format("own.{}.*", round), true);
  take("crash.a", false);
  take("crash.b", false);
  take("crash.*", true);
  if (!link.send("ready")) return 1;
  for (;;) (void)sub.receive(10ms);
}

std::uint64_t total_published(const PublisherBoard& board) {
  std::uint64_t n = 0;
  for (const auto& p : board.published) n += p.load();
  return n;
}

TEST(CrashSubscriber, HundredRoundsOfKilledSubscribersWhilePublishersRunFlatOut) {
  constexpr int kRounds = 100;
  constexpr int kVictims = 3;
  test::Daemon daemon(test::unique_bus("crashloop"),
                      {"--ring-bytes", "65536", "--max-payload", "1024"});
  const std::string name = daemon.bus();
  Bus bus = Bus::connect(name);
  // What the registry holds without the victims: one survivor on crash.a and crash.*.
  Subscriber survivor = bus.subscriber();
  survivor.subscribe({"crash.a"});
  survivor.psubscribe({"crash.*"});
  const Names watched{"crash.a", "crash.b", "crash.c"};
  const NumSub baseline{{"crash.a", 1}, {"crash.b", 0}, {"crash.c", 0}};
  const std::set<std::string> baseline_rings = test::ring_files(name);
  ASSERT_EQ(baseline_rings.size(), 1U);

  test::SharedMemory<PublisherBoard> board;
  std::vector<std::unique_ptr<Child>> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.push_back(std::make_unique<Child>(
        [&name, p, &board](Link& link) { return flat_out_publisher(name, p, *board, link); }));
  }
  for (auto& p : publishers) ASSERT_EQ(p->link().receive(30s), "ready");

  std::mt19937 random(20261126);
  std::vector<double> reap_ms;
  int stalled_rounds = 0;
  int late_rounds = 0;
  int killed_before_ready = 0;
  const auto loop_start = Clock::now();
  for (int round = 0; round < kRounds; ++round) {
    const std::uint64_t published_before = total_published(*board);
    std::vector<std::unique_ptr<Child>> victims;
    for (int v = 0; v < kVictims; ++v) {
      victims.push_back(std::make_unique<Child>(
          [&name, round, v](Link& link) { return victim_subscriber(name, round, v, link); }));
    }
    // Odd rounds kill wherever the victims are (connecting, attaching, subscribing); even
    // rounds kill them while they read, once all of their subscriptions are in force.
    if (round % 2 == 0) {
      for (auto& v : victims) ASSERT_EQ(v->link().receive(30s), "ready") << "round " << round;
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 5000));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 20000));
    }
    const auto killed = Clock::now();
    std::vector<pid_t> pids;
    for (auto& v : victims) {
      pids.push_back(v->pid());
      v->kill(SIGKILL, false);
    }
    for (auto& v : victims) {
      v->kill(SIGKILL);  // reaps it
      EXPECT_TRUE(WIFSIGNALED(v->status()) && WTERMSIG(v->status()) == SIGKILL) << v->status();
    }
    if (round % 2 == 1) {
      for (auto& v : victims) {
        if (!v->link().receive(0ms)) ++killed_before_ready;
      }
    }

    const auto forgotten = [&] {
      if (bus.numsub(watched) != baseline || bus.numpat() != 1 ||
          sorted(bus.channels()) != Names{"crash.a"} || test::ring_files(name) != baseline_rings) {
        return false;
      }
      for (const ClientStat& c : bus.stats().clients) {
        if (std::find(pids.begin(), pids.end(), c.pid) != pids.end()) return false;
      }
      return true;
    };
    while (!forgotten() && Clock::now() - killed < 5s) std::this_thread::sleep_for(1ms);
    const double took = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
    if (!forgotten()) {
      std::string clients;
      for (const ClientStat& c : bus.stats().clients) clients += fmt::format(" {}", c.pid);
      FAIL() << "round " << round << ": the victims are still registered 5 s on: numpat "
             << bus.numpat() << ", channels " << fmt::format("{}", fmt::join(bus.channels(), ","))
             << ", rings " << fmt::format("{}", fmt::join(test::ring_files(name), ","))
             << ", client pids" << clients << ", victims "
             << fmt::format("{}", fmt::join(pids, ","));
    }
    reap_ms.push_back(took);
    if (took >= 200) ++late_rounds;

    // shm-stat, from outside, agrees.
    const test::Json j = test::shm_stat_json(name);
    ASSERT_EQ(j["channels"].items.size(), 1U) << "round " << round;
    EXPECT_EQ(j["channels"].items[0]["name"].str(), "crash.a");
    EXPECT_EQ(j["channels"].items[0]["subscribers"].u64(), 1U);
    ASSERT_EQ(j["patterns"].items.size(), 1U) << "round " << round;
    EXPECT_EQ(j["patterns"].items[0]["pattern"].str(), "crash.*");
    for (const auto& c : j["clients"].items) {
      const auto pid = static_cast<pid_t>(c["pid"].u64());
      EXPECT_TRUE(std::find(pids.begin(), pids.end(), pid) == pids.end()) << "round " << round;
    }
    if (total_published(*board) <= published_before) ++stalled_rounds;
  }
  const double loop_s = std::chrono::duration<double>(Clock::now() - loop_start).count();
  board->stop.store(1);
  for (auto& p : publishers) {
    ASSERT_TRUE(p->wait(30s));
    EXPECT_TRUE(p->exited_cleanly()) << p->status();
  }

  const auto [median, max] = test::median_max(reap_ms);
  std::uint64_t slowest = 0;
  for (const auto& s : board->slowest_ns) slowest = std::max(slowest, s.load());
  fmt::print(
      "crash loop: {} rounds x {} victims in {:.1f} s ({} killed before subscribing); reaped "
      "within median {:.1f} ms, max {:.1f} ms, {} rounds over 200 ms; {} publishes, slowest "
      "publish {:.2f} ms\n",
      kRounds, kVictims, loop_s, killed_before_ready, median, max, late_rounds,
      total_published(*board), test::ms_of(slowest));
  RecordProperty("reap_median_ms", fmt::format("{:.1f}", median));
  RecordProperty("reap_max_ms", fmt::format("{:.1f}", max));
  // The coordinator looks for deaths every 20 ms. On two cores shared with other builds this
  // process itself is sometimes descheduled for hundreds of ms (the publishers then see single
  // publishes that slow), which no reaping can hide: two such rounds in a hundred are allowed,
  // none over a second.
  EXPECT_LE(late_rounds, 2) << "rounds whose victims took 200 ms or more to be forgotten";
  EXPECT_LT(max, 1000) << "ms to forget the victims of the slowest round";
  EXPECT_EQ(board->errors.load(), 0U) << "publishes that threw";
  EXPECT_EQ(stalled_rounds, 0) << "rounds in which the publishers made no progress";
  // The survivor is untouched: its subscriptions still route.
  EXPECT_EQ(bus.numsub(watched), baseline);
}

}  // namespace
}  // namespace shmcast
