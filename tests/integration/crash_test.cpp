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
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "client_link.hpp"
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

Names sorted(Names v) {
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
  sub.subscribe({fmt::format("own.{}.{}", round, index)});
  sub.psubscribe({fmt::format("own.{}.*", round)});
  sub.subscribe({"crash.a", "crash.b"});
  sub.psubscribe({"crash.*"});
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
  // A death wakes the coordinator through its pidfd. On two cores shared with other builds this
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

// A client killed after claiming its slot and before attaching holds the slot only until the
// coordinator sees it dead, even while it is a zombie its parent has not reaped yet.
TEST(CrashSubscriber, KilledWhileAttachingFreesItsSlotBeforeItsParentReapsIt) {
  test::Daemon daemon(test::unique_bus("claim"), {"--max-clients", "2"});
  const std::string name = daemon.bus();
  Bus bus = Bus::connect(name);  // one of the two slots
  Child claimer([&name](Link& link) {
    detail::ClientLink claim(detail::open_control(name), name, ConnectOptions{});
    if (!link.send("claimed")) return 1;
    ::pause();
    return 0;
  });
  ASSERT_EQ(claimer.link().receive(30s), "claimed");
  const auto connects = [&name] {
    try {
      (void)Bus::connect(name);
      return true;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::too_many_clients) << e.what();
      return false;
    }
  };
  EXPECT_FALSE(connects()) << "the claimed slot is taken";
  const auto killed = Clock::now();
  claimer.kill(SIGKILL, false);  // left a zombie: this test reaps it only at its end
  bool freed = false;
  while (!(freed = connects()) && Clock::now() - killed < 5s) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(freed) << "the dead claim still holds its slot 5 s on";
  EXPECT_LT(Clock::now() - killed, 1s);
}

// ---- 2. A publisher SIGKILLed inside Bus::publish --------------------------------------------

constexpr int kMidSubscribers = 3;  // the last one by a pattern
constexpr std::uint32_t kSurvivors = 2;
constexpr std::uint32_t kVictimId = kSurvivors;
constexpr std::uint64_t kSurvivorMessages = 4000;
constexpr std::uint64_t kBurst = 10;          // messages per millisecond per publisher
constexpr std::uint64_t kVictimDiesIn = 300;  // the publish the victim dies inside

struct MidWriteBoard {
  std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint64_t> death_ns{0};
  std::array<std::atomic<std::uint64_t>, kSurvivors> progress{};  // messages published so far
};

detail::RingWritePoint g_kill_point;
std::uint64_t g_kill_call;  // the ring write, counted from 1, the victim dies in
std::uint64_t g_calls;
MidWriteBoard* g_board;

void kill_inside_write(detail::RingWritePoint point) {
  if (point != g_kill_point || ++g_calls != g_kill_call) return;
  g_board->death_ns.store(now_ns());
  raise(SIGKILL);
}

// Publishes numbered messages in bursts of kBurst a millisecond, so the stream goes on long
// after the victim's death and the rings never fill.
int paced_publisher(const std::string& bus_name, const std::string& channel, std::uint32_t id,
                    std::uint64_t count, MidWriteBoard& board, Link& link) {
  Bus bus = Bus::connect(bus_name);
  if (!link.send("ready")) return 1;
  while (board.go.load() == 0) std::this_thread::sleep_for(100us);
  const auto start = Clock::now();
  std::uint64_t miscounted = 0;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    if (seq % kBurst == 0) std::this_thread::sleep_until(start + 1ms * (seq / kBurst));
    if (bus.publish(channel, test::numbered(id, seq, now_ns())) != kMidSubscribers) ++miscounted;
    if (id < kSurvivors) board.progress[id].store(seq + 1);
  }
  return link.send(FrameWriter().u64(miscounted).frame()) ? 0 : 1;
}

struct MidWriteTally {
  std::array<std::uint64_t, kSurvivors + 1> received{};
  std::uint64_t out_of_order = 0;
  std::uint64_t corrupt = 0;
  std::uint64_t other = 0;  // frames that are neither the confirmation nor a message
  std::uint64_t dropped = 0;
  std::uint64_t resume_ns = 0;  // from the victim's death to the first message sent after it
};

// Subscribes to `channel` (by the pattern "<its first two bytes>*" if `pattern`) and reads the
// survivors' messages to the end.
int numbered_subscriber(const std::string& bus_name, const std::string& channel, bool pattern,
                        std::uint64_t each, MidWriteBoard& board, Link& link) {
  Bus bus = Bus::connect(bus_name);
  Subscriber sub = bus.subscriber();
  pattern ? sub.psubscribe({channel.substr(0, 2) + "*"}) : sub.subscribe({channel});
  const auto confirmation = sub.receive(10s);
  if (!confirmation || confirmation->count != 1) return 2;
  if (!link.send("ready")) return 1;
  MidWriteTally tally;
  const auto take = [&](const Message& m) {
    if (m.kind != (pattern ? Kind::pmessage : Kind::message) || m.channel != channel) {
      ++tally.other;
      return;
    }
    const auto n = test::parse_numbered(m.payload);
    if (!n || n->publisher > kVictimId) {
      ++tally.corrupt;
      return;
    }
    if (n->seq != tally.received[n->publisher]) ++tally.out_of_order;
    tally.received[n->publisher] = n->seq + 1;
    const std::uint64_t death = board.death_ns.load();
    if (tally.resume_ns == 0 && death != 0 && n->sent_ns > death)
      tally.resume_ns = now_ns() - death;
  };
  while (tally.received[0] < each || tally.received[1] < each) {
    const auto m = sub.receive(30s);
    if (!m) break;
    take(*m);
  }
  while (const auto m = sub.receive(100ms)) take(*m);
  tally.dropped = sub.dropped();
  if (!link.send(test::frame_of(tally))) return 1;
  // Subscribed until the test lets go, so its subscription outlives the publishers.
  (void)link.receive(kForever);
  return 0;
}

const char* point_name(detail::RingWritePoint point) {
  switch (point) {
    case detail::RingWritePoint::before_claim: return "BeforeClaim";
    case detail::RingWritePoint::after_claim: return "AfterClaim";
    case detail::RingWritePoint::after_header: return "AfterHeader";
    case detail::RingWritePoint::mid_copy: return "MidCopy";
    case detail::RingWritePoint::before_commit: return "BeforeCommit";
    case detail::RingWritePoint::after_commit: return "AfterCommit";
  }
  return "Unknown";
}

// The subscribers (the last by pattern) and the surviving publishers of a run of `count`
// numbered messages each on `channel`, started and reported ready; they publish once the
// board says go.
struct NumberedRun {
  std::vector<std::unique_ptr<Child>> subscribers;
  std::vector<std::unique_ptr<Child>> publishers;
};

void start_numbered_run(const std::string& name, const std::string& channel, std::uint64_t count,
                        MidWriteBoard& board, NumberedRun& run) {
  for (int s = 0; s < kMidSubscribers; ++s) {
    const bool pattern = s == kMidSubscribers - 1;
    run.subscribers.push_back(
        std::make_unique<Child>([&name, &channel, pattern, count, &board](Link& link) {
          return numbered_subscriber(name, channel, pattern, count, board, link);
        }));
  }
  for (auto& s : run.subscribers) ASSERT_EQ(s->link().receive(30s), "ready");
  for (std::uint32_t p = 0; p < kSurvivors; ++p) {
    run.publishers.push_back(
        std::make_unique<Child>([&name, &channel, p, count, &board](Link& link) {
          return paced_publisher(name, channel, p, count, board, link);
        }));
  }
  for (auto& p : run.publishers) ASSERT_EQ(p->link().receive(30s), "ready");
}

// Each surviving publisher reports its publishes that missed a subscriber: there must be none.
void expect_every_publish_reached_every_subscriber(const NumberedRun& run) {
  for (std::uint32_t p = 0; p < kSurvivors; ++p) {
    const auto report = run.publishers[p]->link().receive(60s);
    ASSERT_TRUE(report.has_value()) << "publisher " << p;
    EXPECT_EQ(FrameReader(*report).u64(), 0U)
        << "publishes of publisher " << p << " that did not reach every subscriber";
  }
}

// What every subscriber's tally must show: each surviving publisher's `count` messages, intact
// and in order, nothing else, nothing dropped.
void expect_survivor_messages(const MidWriteTally& t, int s, std::uint64_t count) {
  for (std::uint32_t p = 0; p < kSurvivors; ++p) {
    EXPECT_EQ(t.received[p], count) << "subscriber " << s << ", publisher " << p;
  }
  EXPECT_EQ(t.out_of_order, 0U) << "subscriber " << s;
  EXPECT_EQ(t.corrupt, 0U) << "subscriber " << s;
  EXPECT_EQ(t.other, 0U) << "subscriber " << s;
  EXPECT_EQ(t.dropped, 0U) << "subscriber " << s;
}

class CrashPublisher : public ::testing::TestWithParam<detail::RingWritePoint> {};

// Two publisher processes and a victim publish numbered messages to three subscriber processes.
// The victim dies inside its publish number kVictimDiesIn, at the tested point of its write to
// the second of the three rings: the first ring has that message, the second holds what the
// victim left, the third never sees it. Every subscriber must get past it within 100 ms and
// receive every survivor message, intact and in order.
TEST_P(CrashPublisher, SubscribersResumeAndLoseNoSurvivorMessage) {
  test::Daemon daemon(test::unique_bus("midwrite"), {"--ring-bytes", "4194304"});
  const std::string name = daemon.bus();
  test::SharedMemory<MidWriteBoard> board;

  const std::string channel = "mid";
  NumberedRun run;
  ASSERT_NO_FATAL_FAILURE(start_numbered_run(name, channel, kSurvivorMessages, *board, run));
  const detail::RingWritePoint point = GetParam();
  Child victim([&name, &channel, point, &board](Link& link) {
    g_kill_point = point;
    g_kill_call = kVictimDiesIn * kMidSubscribers + 2;
    g_board = &*board;
    detail::ring_write_hook = kill_inside_write;
    return paced_publisher(name, channel, kVictimId, kSurvivorMessages, *board, link);
  });
  ASSERT_EQ(victim.link().receive(30s), "ready");
  board->go.store(1);

  expect_every_publish_reached_every_subscriber(run);
  ASSERT_TRUE(victim.wait(10s));
  EXPECT_TRUE(WIFSIGNALED(victim.status()) && WTERMSIG(victim.status()) == SIGKILL)
      << "the victim was not killed inside its write: status " << victim.status();

  std::uint64_t slowest_resume = 0;
  int with_the_last_message = 0;
  for (int s = 0; s < kMidSubscribers; ++s) {
    const auto report = run.subscribers[s]->link().receive(60s);
    ASSERT_TRUE(report.has_value()) << "subscriber " << s;
    const auto t = test::from_frame<MidWriteTally>(*report);
    expect_survivor_messages(t, s, kSurvivorMessages);
    // The victim's messages up to its death, in order; the one it died in only on the ring it
    // had finished.
    EXPECT_GE(t.received[kVictimId], kVictimDiesIn) << "subscriber " << s;
    EXPECT_LE(t.received[kVictimId], kVictimDiesIn + 1) << "subscriber " << s;
    if (t.received[kVictimId] == kVictimDiesIn + 1) ++with_the_last_message;
    EXPECT_GT(t.resume_ns, 0U) << "subscriber " << s << " saw no message sent after the death";
    slowest_resume = std::max(slowest_resume, t.resume_ns);
  }
  EXPECT_EQ(with_the_last_message, 1) << "only the ring written before the death has it";
  fmt::print("publisher killed at {}: slowest subscriber resumed {:.2f} ms after the death\n",
             point_name(point), test::ms_of(slowest_resume));
  RecordProperty("resume_ms", fmt::format("{:.2f}", test::ms_of(slowest_resume)));
  EXPECT_LT(test::ms_of(slowest_resume), 100.0);
}

INSTANTIATE_TEST_SUITE_P(AtEachPoint, CrashPublisher,
                         ::testing::Values(detail::RingWritePoint::before_claim,
                                           detail::RingWritePoint::after_claim,
                                           detail::RingWritePoint::after_header,
                                           detail::RingWritePoint::mid_copy,
                                           detail::RingWritePoint::before_commit),
                         [](const auto& info) { return std::string(point_name(info.param)); });

// ---- 3. The coordinator SIGKILLed under load, and restarted ---------------------------------

// Publisher and subscriber processes run through a coordinator's SIGKILL and its restart. While
// it is down: every message still arrives (rings never fill here, so exactly all of them), the
// bus says the coordinator is dead, a subscribe with a 300 ms timeout fails after that long, and
// a subscribe and an unsubscribe with a long timeout wait and succeed once the next coordinator
// runs. That one adopts the bus with every live subscription and reaps a subscriber that died
// meanwhile.
TEST(CrashCoordinator, DataFlowsWhileItIsDownAndTheNextOneAdoptsTheBus) {
  constexpr std::uint64_t kEach = 12'000;  // 1.2 s at kBurst a millisecond
  const std::string name = test::unique_bus("coordkill");
  const test::RemoveSegments cleanup{name};  // if anything below fails
  const std::vector<std::string> flags{"--ring-bytes", "4194304"};
  auto first = std::make_unique<test::Daemon>(name, flags);
  std::unique_ptr<test::Daemon> second;  // before the clients, so they leave before it stops
  test::SharedMemory<MidWriteBoard> board;

  const std::string channel = "load";
  NumberedRun run;
  ASSERT_NO_FATAL_FAILURE(start_numbered_run(name, channel, kEach, *board, run));

  Bus impatient_bus = Bus::connect(name, ConnectOptions{300ms});
  Subscriber impatient = impatient_bus.subscriber();
  Bus patient_bus = Bus::connect(name, ConnectOptions{20s});
  Subscriber patient = patient_bus.subscriber();
  ASSERT_EQ(patient.subscribe({"held"}), 1U);
  test::RemoteSubscriber victim(name);
  ASSERT_EQ(victim.subscribe({"victim.ch"}), 1U);
  const Names watched{"load", "held", "victim.ch", "meanwhile", "late"};
  ASSERT_EQ(patient_bus.numsub(watched),
            (NumSub{{"load", 2}, {"held", 1}, {"victim.ch", 1}, {"meanwhile", 0}, {"late", 0}}));

  board->go.store(1);
  std::this_thread::sleep_for(200ms);
  const auto total_progress = [&] { return board->progress[0].load() + board->progress[1].load(); };
  const std::uint64_t progress_at_kill = total_progress();
  const auto killed = Clock::now();
  first->kill_now();

  EXPECT_FALSE(patient_bus.coordinator_alive());
  const test::Json stat = test::shm_stat_json(name);
  EXPECT_FALSE(stat["coordinator"]["alive"].flag());
  victim.process().kill(SIGKILL);

  // Made while no coordinator runs: it waits its whole timeout, then fails with the typed error.
  const auto asked = Clock::now();
  try {
    impatient.subscribe({"late"});
    ADD_FAILURE() << "subscribe succeeded without a coordinator";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::coordinator_gone) << e.what();
    EXPECT_NE(std::string(e.what()).find("shmcastd --bus " + name), std::string::npos) << e.what();
  }
  const double failed_after =
      std::chrono::duration<double, std::milli>(Clock::now() - asked).count();
  EXPECT_GE(failed_after, 300.0);
  EXPECT_LT(failed_after, 1300.0);

  // Made while no coordinator runs, with a timeout long enough for a restart.
  std::atomic<bool> answered{false};
  std::size_t after_subscribe = 0;
  std::size_t after_unsubscribe = 0;
  std::string waiter_error;
  std::thread waiter([&] {
    try {
      after_subscribe = patient.subscribe({"meanwhile"});
      after_unsubscribe = patient.unsubscribe({"held"});
    } catch (const Error& e) {
      waiter_error = e.what();
    }
    answered.store(true);
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(answered.load()) << "a request was answered while no coordinator ran";
  const std::uint64_t progress_at_restart = total_progress();
  const double down_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
  const auto restarted = Clock::now();
  second = std::make_unique<test::Daemon>(name, flags);
  waiter.join();
  const double waited_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - restarted).count();
  EXPECT_EQ(waiter_error, "");
  EXPECT_EQ(after_subscribe, 2U);
  EXPECT_EQ(after_unsubscribe, 1U);
  EXPECT_TRUE(patient_bus.coordinator_alive());
  EXPECT_TRUE(test::shm_stat_json(name)["coordinator"]["alive"].flag());

  // Adopted: the live subscriptions, the ones made meanwhile, and not the dead victim's nor the
  // one that gave up.
  const NumSub adopted{{"load", 2}, {"held", 0}, {"victim.ch", 0}, {"meanwhile", 1}, {"late", 0}};
  const auto deadline = Clock::now() + 2s;
  while (patient_bus.numsub(watched) != adopted && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(patient_bus.numsub(watched), adopted);
  EXPECT_EQ(patient_bus.numpat(), 1U);
  for (const ClientStat& c : patient_bus.stats().clients) EXPECT_NE(c.pid, victim.pid());

  expect_every_publish_reached_every_subscriber(run);
  for (int s = 0; s < kMidSubscribers; ++s) {
    const auto report = run.subscribers[s]->link().receive(60s);
    ASSERT_TRUE(report.has_value()) << "subscriber " << s;
    expect_survivor_messages(test::from_frame<MidWriteTally>(*report), s, kEach);
  }
  const std::uint64_t while_down = progress_at_restart - progress_at_kill;
  EXPECT_GT(while_down, 0U);
  fmt::print(
      "coordinator down {:.0f} ms: {} messages published meanwhile, each to 3 subscribers, none "
      "lost; a 300 ms request failed after {:.0f} ms; waiting requests answered {:.0f} ms after "
      "the restart began\n",
      down_ms, while_down, failed_after, waited_ms);
  RecordProperty("published_while_down", std::to_string(while_down));
}

}  // namespace
}  // namespace shmcast
