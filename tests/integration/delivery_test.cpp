// Delivery between real processes through a real shmcastd: a subscription is in force for the
// very next publish from another process, each publisher's messages reach every subscriber in
// order and intact, a SIGKILLed subscriber leaves the registry within a second, a full ring
// drops and says so, and stats() agrees with the PUBSUB commands.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {

// Kinds print by name in failure messages (GoogleTest finds this by argument lookup, so it
// lives in Kind's namespace).
inline void PrintTo(Kind kind, std::ostream* os) {
  *os << kind_name(kind);
}

namespace {

using test::Child;
using test::FrameReader;
using test::FrameWriter;
using test::Link;
using test::RemoteSubscriber;
using Clock = std::chrono::steady_clock;
using Names = std::vector<std::string>;
using NumSub = std::vector<std::pair<std::string, std::size_t>>;

// How long a frame or a reply that must come may take: generous, a loaded machine is slow.
constexpr std::chrono::milliseconds kWait{5000};
// How long to look for a frame that must not come. A publish writes into the rings before it
// returns, so a frame that leaked is already there when the test looks.
constexpr std::chrono::milliseconds kQuiet{50};
constexpr std::chrono::milliseconds kForever{-1};

NumSub numsub(const Bus& bus, const Names& names) {
  return bus.numsub(names);
}

Names sorted(Names names) {
  std::sort(names.begin(), names.end());
  return names;
}

// ---- A process that forks after it used shmcast ---------------------------------------------

// Prefork servers and test harnesses fork after they connected; the child is a process of its
// own and must attach as one (the Daemon's start-up already connected from this process).
TEST(DeliveryFork, ChildOfAConnectedProcessCanSubscribe) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  RemoteSubscriber child(bus);
  EXPECT_EQ(child.subscribe({"forked"}), 1U);
  EXPECT_EQ(bus.publish("forked", "hello"), 1U);
  const auto confirmation = child.receive(kWait);
  ASSERT_TRUE(confirmation.has_value());
  EXPECT_EQ(confirmation->kind, Kind::subscribe);
  const auto m = child.receive(kWait);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, Kind::message);
  EXPECT_EQ(m->payload, "hello");
}

// ---- Subscribe, then publish from another process --------------------------------------------

// A process that publishes "v:<channel>" on every channel the test sends it and answers with
// publish's return value.
class PublisherProcess {
 public:
  explicit PublisherProcess(const std::string& bus_name)
      : child_([bus_name](Link& link) {
          Bus bus = Bus::connect(bus_name);
          if (!link.send("ready")) return 1;
          while (const auto channel = link.receive(kForever)) {
            const std::size_t n = bus.publish(*channel, "v:" + *channel);
            if (!link.send(FrameWriter().u64(n).frame())) break;
          }
          return 0;
        }) {
    if (child_.link().receive(kWait * 2) != "ready") {
      throw std::runtime_error("the publisher process did not start");
    }
  }

  // publish's return value in the other process; nullopt if it did not answer.
  std::optional<std::uint64_t> publish(const std::string& channel) {
    if (!child_.link().send(channel)) return std::nullopt;
    const auto reply = child_.link().receive(kWait * 6);
    if (!reply) return std::nullopt;
    return FrameReader(*reply).u64();
  }

 private:
  Child child_;
};

// What went wrong over the rounds, by step, and the first failure in words.
struct RoundFailures {
  std::uint64_t reached_before = 0;    // a publish before subscribe() reached someone
  std::uint64_t bad_confirmation = 0;  // subscribe/unsubscribe return value or frame wrong
  std::uint64_t not_counted = 0;       // the publish after subscribe() did not return 1
  std::uint64_t not_received = 0;      // its message did not arrive, or arrived wrong
  std::uint64_t reached_after = 0;     // a publish after unsubscribe() still counted
  std::string first;

  [[nodiscard]] std::uint64_t total() const {
    return reached_before + bad_confirmation + not_counted + not_received + reached_after;
  }
  void note(std::uint64_t& counter, const std::string& what) {
    if (total() == 0) first = what;
    ++counter;
  }
};

// Rounds of: the publisher process publishes on a fresh channel (no one hears it), this
// process subscribes (a channel, or a pattern that matches it), the publisher publishes again
// at once and must reach it, this process unsubscribes, and a third publish must reach no one.
// The first publish leaves the channel in the publisher's route cache as "nobody", which the
// subscribe must invalidate before it returns.
RoundFailures visibility_rounds(int rounds, bool pattern, int& rounds_run) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  PublisherProcess publisher(daemon.bus());
  Subscriber sub = bus.subscriber();
  const Kind sub_kind = pattern ? Kind::psubscribe : Kind::subscribe;
  const Kind unsub_kind = pattern ? Kind::punsubscribe : Kind::unsubscribe;
  RoundFailures f;
  // A failing round may wait kWait; stop early rather than run for hours.
  for (rounds_run = 0; rounds_run < rounds && f.total() < 20; ++rounds_run) {
    const int i = rounds_run;
    const std::string channel = pattern ? fmt::format("p{}.x", i) : fmt::format("r{}", i);
    const std::string name = pattern ? fmt::format("p{}.*", i) : channel;

    if (publisher.publish(channel) != 0U) {
      f.note(f.reached_before, fmt::format("round {}: publish before subscribing counted", i));
    }
    const std::size_t held = pattern ? sub.psubscribe({name}) : sub.subscribe({name});
    const auto confirmation = sub.receive(kWait);
    if (held != 1 || !confirmation || confirmation->kind != sub_kind ||
        confirmation->channel != name || confirmation->count != 1) {
      f.note(f.bad_confirmation, fmt::format("round {}: subscribe confirmation wrong", i));
    }

    const auto counted = publisher.publish(channel);
    if (counted != 1U) {
      f.note(f.not_counted, fmt::format("round {}: publish right after subscribe() returned {}", i,
                                        counted ? std::to_string(*counted) : "nothing"));
    }
    const auto m = sub.receive(counted == 1U ? kWait : kQuiet);
    const bool right =
        m && m->channel == channel && m->payload == "v:" + channel &&
        (pattern ? m->kind == Kind::pmessage && m->pattern == name : m->kind == Kind::message);
    if (!right) {
      f.note(f.not_received, fmt::format("round {}: {} instead of the message", i,
                                         m ? kind_name(m->kind) : "none"));
    }

    const std::size_t left = pattern ? sub.punsubscribe({name}) : sub.unsubscribe({name});
    const auto unconfirmation = sub.receive(kWait);
    if (left != 0 || !unconfirmation || unconfirmation->kind != unsub_kind ||
        unconfirmation->channel != name || unconfirmation->count != 0) {
      f.note(f.bad_confirmation, fmt::format("round {}: unsubscribe confirmation wrong", i));
    }
    if (publisher.publish(channel) != 0U) {
      f.note(f.reached_after, fmt::format("round {}: publish after unsubscribe() counted", i));
    }
  }
  if (const auto extra = sub.receive(kQuiet)) {
    f.note(f.reached_after, fmt::format("a {} frame after the last round", kind_name(extra->kind)));
  }
  return f;
}

void expect_no_failures(const RoundFailures& f, int rounds, int rounds_run) {
  EXPECT_EQ(rounds_run, rounds);
  EXPECT_EQ(f.reached_before, 0U);
  EXPECT_EQ(f.bad_confirmation, 0U);
  EXPECT_EQ(f.not_counted, 0U);
  EXPECT_EQ(f.not_received, 0U);
  EXPECT_EQ(f.reached_after, 0U);
  EXPECT_EQ(f.first, "") << "the first failure";
}

TEST(DeliveryVisibility, SubscribeThenPublishFromAnotherProcess) {
  constexpr int kRounds = 10'000;
  int rounds_run = 0;
  const auto start = Clock::now();
  const RoundFailures f = visibility_rounds(kRounds, false, rounds_run);
  fmt::print("{} rounds in {} ms\n", rounds_run,
             std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
  expect_no_failures(f, kRounds, rounds_run);
}

TEST(DeliveryVisibility, PsubscribeThenPublishFromAnotherProcess) {
  constexpr int kRounds = 2'000;
  int rounds_run = 0;
  const RoundFailures f = visibility_rounds(kRounds, true, rounds_run);
  expect_no_failures(f, kRounds, rounds_run);
}

// ---- Per-publisher FIFO, 4 publisher processes x 8 subscriber processes ---------------------

constexpr std::uint32_t kPublishers = 4;
constexpr std::uint32_t kSubscribers = 8;  // the last one by a pattern
constexpr std::uint64_t kEach = 20'000;
const std::string kFifoChannel = "fifo";
const std::string kFifoPattern = "fi?o";

// The head of every FIFO payload; a filler of varying length follows, so records vary in size
// and the checksum covers bytes that differ per message.
struct Stamp {
  std::uint32_t publisher;
  std::uint32_t filler;
  std::uint64_t seq;
  std::uint64_t check;
};

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

char filler_byte(std::uint64_t seq, std::size_t i) {
  return static_cast<char>((seq * 31 + i) & 0xff);
}

std::uint64_t stamp_check(std::uint32_t publisher, std::uint64_t seq, std::uint32_t filler) {
  return mix(mix(publisher) ^ mix(seq ^ 0x5555) ^ filler);
}

std::string stamped(std::uint32_t publisher, std::uint64_t seq) {
  Stamp s{publisher, static_cast<std::uint32_t>(seq % 29), seq, 0};
  s.check = stamp_check(s.publisher, s.seq, s.filler);
  std::string out(sizeof s + s.filler, '\0');
  std::memcpy(out.data(), &s, sizeof s);
  for (std::size_t i = 0; i < s.filler; ++i) out[sizeof s + i] = filler_byte(seq, i);
  return out;
}

// One subscriber's account of what it received.
struct FifoTally {
  std::array<std::uint64_t, kPublishers> received{};
  std::array<std::uint64_t, kPublishers> next{};  // the sequence expected next, per publisher
  std::uint64_t out_of_order = 0;
  std::uint64_t corrupt = 0;
  std::uint64_t wrong_frame = 0;
  std::uint64_t gaps = 0;
  std::uint64_t dropped = 0;
  std::uint64_t extra = 0;
  std::uint64_t confirmed = 0;
  std::uint64_t timed_out = 0;

  void take(const Message& m, bool pattern) {
    const bool frame_ok =
        pattern ? m.kind == Kind::pmessage && m.pattern == kFifoPattern : m.kind == Kind::message;
    if (!frame_ok || m.channel != kFifoChannel) {
      ++wrong_frame;
      return;
    }
    Stamp s{};
    if (m.payload.size() < sizeof s) {
      ++corrupt;
      return;
    }
    std::memcpy(&s, m.payload.data(), sizeof s);
    bool intact = s.publisher < kPublishers && m.payload.size() == sizeof s + s.filler &&
                  s.check == stamp_check(s.publisher, s.seq, s.filler);
    for (std::size_t i = 0; intact && i < s.filler; ++i) {
      intact = m.payload[sizeof s + i] == filler_byte(s.seq, i);
    }
    if (!intact) {
      ++corrupt;
      return;
    }
    // Strictly the next one; a later one only after the stream announced a gap.
    auto& expected = next[s.publisher];
    if (s.seq != expected && !(s.seq > expected && gaps > 0)) ++out_of_order;
    if (s.seq >= expected) expected = s.seq + 1;
    ++received[s.publisher];
  }
};

int fifo_subscriber(const std::string& bus_name, bool pattern, Link& link) {
  Bus bus = Bus::connect(bus_name);
  Subscriber sub = bus.subscriber();
  FifoTally tally;
  const std::size_t held = pattern ? sub.psubscribe({kFifoPattern}) : sub.subscribe({kFifoChannel});
  const auto c = sub.receive(kWait);
  tally.confirmed = held == 1 && c && c->count == 1 &&
                    c->kind == (pattern ? Kind::psubscribe : Kind::subscribe) &&
                    c->channel == (pattern ? kFifoPattern : kFifoChannel);
  if (!link.send("ready")) return 1;
  std::uint64_t messages = 0;
  while (messages < kPublishers * kEach) {
    // Only a stalled bus is this quiet; the bound keeps a broken run from hanging.
    const auto m = sub.receive(std::chrono::seconds(60));
    if (!m) {
      tally.timed_out = 1;
      break;
    }
    if (m->kind == Kind::gap) {
      ++tally.gaps;
      continue;
    }
    ++messages;
    tally.take(*m, pattern);
  }
  while (sub.receive(kQuiet * 4)) ++tally.extra;
  tally.dropped = sub.dropped();
  return link.send(test::frame_of(tally)) ? 0 : 1;
}

int fifo_publisher(const std::string& bus_name, std::uint32_t id, Link& link) {
  Bus bus = Bus::connect(bus_name);
  if (!link.send("ready") || !link.receive(kForever)) return 1;
  std::uint64_t miscounted = 0;
  for (std::uint64_t seq = 0; seq < kEach; ++seq) {
    if (bus.publish(kFifoChannel, stamped(id, seq)) != kSubscribers) ++miscounted;
  }
  return link.send(FrameWriter().u64(miscounted).frame()) ? 0 : 1;
}

TEST(DeliveryFifo, FourPublishersEightSubscribersInOrderAndIntact) {
  // 80,000 records of under 100 bytes each fit even if a subscriber reads nothing until the
  // publishers are done: nothing may drop.
  test::Daemon daemon(test::unique_bus("fifo"), {"--ring-bytes", "16777216"});
  const std::string bus_name = daemon.bus();
  Bus bus = Bus::connect(bus_name);

  std::vector<std::unique_ptr<Child>> subscribers;
  for (std::uint32_t s = 0; s < kSubscribers; ++s) {
    const bool pattern = s == kSubscribers - 1;
    subscribers.push_back(std::make_unique<Child>(
        [&bus_name, pattern](Link& link) { return fifo_subscriber(bus_name, pattern, link); }));
  }
  for (auto& s : subscribers) ASSERT_EQ(s->link().receive(kWait * 6), "ready");
  EXPECT_EQ(numsub(bus, {kFifoChannel}), (NumSub{{kFifoChannel, kSubscribers - 1}}));
  EXPECT_EQ(bus.numpat(), 1U);

  std::vector<std::unique_ptr<Child>> publishers;
  for (std::uint32_t p = 0; p < kPublishers; ++p) {
    publishers.push_back(std::make_unique<Child>(
        [&bus_name, p](Link& link) { return fifo_publisher(bus_name, p, link); }));
  }
  for (auto& p : publishers) ASSERT_EQ(p->link().receive(kWait * 6), "ready");
  const auto start = Clock::now();
  for (auto& p : publishers) ASSERT_TRUE(p->link().send("go"));

  for (std::uint32_t p = 0; p < kPublishers; ++p) {
    const auto report = publishers[p]->link().receive(std::chrono::minutes(3));
    ASSERT_TRUE(report.has_value()) << "publisher " << p << " did not report";
    EXPECT_EQ(FrameReader(*report).u64(), 0U)
        << "publisher " << p << ": publishes that did not return " << kSubscribers;
  }
  for (std::uint32_t s = 0; s < kSubscribers; ++s) {
    const auto report = subscribers[s]->link().receive(std::chrono::minutes(3));
    ASSERT_TRUE(report.has_value()) << "subscriber " << s << " did not report";
    const auto t = test::from_frame<FifoTally>(*report);
    for (std::uint32_t p = 0; p < kPublishers; ++p) {
      EXPECT_EQ(t.received[p], kEach) << "subscriber " << s << ", publisher " << p;
    }
    EXPECT_EQ(t.out_of_order, 0U) << "subscriber " << s;
    EXPECT_EQ(t.corrupt, 0U) << "subscriber " << s;
    EXPECT_EQ(t.wrong_frame, 0U) << "subscriber " << s;
    EXPECT_EQ(t.gaps, 0U) << "subscriber " << s;
    EXPECT_EQ(t.dropped, 0U) << "subscriber " << s;
    EXPECT_EQ(t.extra, 0U) << "subscriber " << s << ": frames beyond the expected ones";
    EXPECT_EQ(t.confirmed, 1U) << "subscriber " << s << ": its confirmation";
    EXPECT_EQ(t.timed_out, 0U) << "subscriber " << s;
  }
  fmt::print("{} publishers x {} messages to {} subscribers in {} ms\n", kPublishers, kEach,
             kSubscribers,
             std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
  for (auto& c : subscribers) {
    ASSERT_TRUE(c->wait(std::chrono::seconds(30)));
    EXPECT_TRUE(c->exited_cleanly()) << "status " << c->status();
  }
  for (auto& c : publishers) {
    ASSERT_TRUE(c->wait(std::chrono::seconds(30)));
    EXPECT_TRUE(c->exited_cleanly()) << "status " << c->status();
  }
}

// ---- A subscriber killed with SIGKILL --------------------------------------------------------

// Clients of this process and of `pid` that stats() lists.
std::size_t clients_of(const BusStats& stats, pid_t pid) {
  return static_cast<std::size_t>(
      std::count_if(stats.clients.begin(), stats.clients.end(),
                    [pid](const ClientStat& c) { return c.pid == pid; }));
}

// A survivor in this process and a victim in another share a channel; the victim also holds a
// channel and a pattern of its own. After SIGKILL, everything the victim held must go within a
// second, whether or not its parent has reaped it yet (a zombie is dead: its pid is not).
void killed_subscriber_leaves(bool reap_first) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber survivor = bus.subscriber();
  ASSERT_EQ(survivor.subscribe({"reap"}), 1U);
  ASSERT_TRUE(survivor.receive(kWait).has_value());

  RemoteSubscriber victim(bus);
  EXPECT_EQ(victim.subscribe({"reap", "victim.only"}), 2U);
  EXPECT_EQ(victim.psubscribe({"rea?"}), 3U);
  EXPECT_EQ(numsub(bus, {"reap", "victim.only"}), (NumSub{{"reap", 2}, {"victim.only", 1}}));
  EXPECT_EQ(bus.numpat(), 1U);
  EXPECT_EQ(bus.publish("reap", "before"), 3U);
  const auto before = survivor.receive(kWait);
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->payload, "before");

  const BusStats stats_before = bus.stats();
  const std::size_t victim_clients = clients_of(stats_before, victim.pid());
  EXPECT_GE(victim_clients, 1U) << "stats() lists the victim's subscriber";

  const auto killed = Clock::now();
  victim.process().kill(SIGKILL, reap_first);
  const auto gone = [&] {
    return numsub(bus, {"reap", "victim.only"}) == NumSub{{"reap", 1}, {"victim.only", 0}} &&
           bus.numpat() == 0;
  };
  while (!gone() && Clock::now() - killed < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto took = Clock::now() - killed;
  EXPECT_EQ(numsub(bus, {"reap", "victim.only"}), (NumSub{{"reap", 1}, {"victim.only", 0}}));
  EXPECT_EQ(bus.numpat(), 0U);
  EXPECT_EQ(sorted(bus.channels()), (Names{"reap"}));
  EXPECT_LT(took, std::chrono::seconds(1))
      << "took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  ASSERT_TRUE(victim.process().wait(kWait));

  // Its subscriptions no longer count, and nothing reaches the survivor twice.
  EXPECT_EQ(bus.publish("reap", "after"), 1U);
  const auto after = survivor.receive(kWait);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->kind, Kind::message);
  EXPECT_EQ(after->payload, "after");
  EXPECT_FALSE(survivor.receive(kQuiet).has_value());

  const BusStats stats_after = bus.stats();
  EXPECT_EQ(clients_of(stats_after, victim.pid()), 0U);
  EXPECT_EQ(stats_after.reaped, stats_before.reaped + victim_clients);
}

TEST(DeliveryReap, KilledSubscriberLeavesNumsubWithinOneSecond) {
  killed_subscriber_leaves(true);
}

TEST(DeliveryReap, KilledSubscriberLeavesBeforeItsParentReapsIt) {
  killed_subscriber_leaves(false);
}

// ---- A full ring -----------------------------------------------------------------------------

std::string flood_payload(int i) {
  std::string p = fmt::format("{:06}", i);
  p.resize(1000, static_cast<char>('a' + i % 26));
  return p;
}

// A subscriber of "flood", its confirmation read, on a bus whose rings hold 64 KiB.
class DeliveryDrops : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(sub_.subscribe({"flood"}), 1U);
    ASSERT_TRUE(sub_.receive(kWait).has_value());
  }

  test::Daemon daemon_{test::unique_bus("drops"),
                       {"--ring-bytes", "65536", "--max-payload", "1024"}};
  Bus bus_ = Bus::connect(daemon_.bus());
  Subscriber sub_ = bus_.subscriber();
};

TEST_F(DeliveryDrops, FullRingDropsCountsAndMarksTheGap) {
  // Nobody reads: the ring fills, and then every publish skips this subscriber.
  int accepted = 0;
  while (accepted < 1000 && bus_.publish("flood", flood_payload(accepted)) == 1) ++accepted;
  ASSERT_GT(accepted, 0);
  ASSERT_LE(accepted, 65536 / 1000) << "more records than a 64 KiB ring can hold";
  constexpr int kRefused = 10;
  for (int i = 1; i < kRefused; ++i) {
    EXPECT_EQ(bus_.publish("flood", flood_payload(accepted + i)), 0U);
  }
  EXPECT_EQ(sub_.dropped(), static_cast<std::uint64_t>(kRefused));
  const BusStats stats = bus_.stats();
  std::uint64_t dropped_in_stats = 0;
  for (const auto& c : stats.clients) {
    if (c.pid == getpid()) dropped_in_stats += c.dropped;
  }
  EXPECT_EQ(dropped_in_stats, static_cast<std::uint64_t>(kRefused));

  // The messages that fit, in order, then the gap where the others were, then the rest.
  for (int i = 0; i < accepted; ++i) {
    const auto m = sub_.receive(kWait);
    ASSERT_TRUE(m.has_value()) << "message " << i;
    ASSERT_EQ(m->kind, Kind::message) << "message " << i;
    EXPECT_EQ(m->payload, flood_payload(i));
  }
  EXPECT_EQ(bus_.publish("flood", "after the gap"), 1U);
  const auto gap = sub_.receive(kWait);
  ASSERT_TRUE(gap.has_value());
  EXPECT_EQ(gap->kind, Kind::gap) << kind_name(gap->kind) << " " << gap->payload;
  EXPECT_EQ(gap->count, kRefused);
  const auto last = sub_.receive(kWait);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->kind, Kind::message);
  EXPECT_EQ(last->payload, "after the gap");
  EXPECT_FALSE(sub_.receive(kQuiet).has_value());
  EXPECT_EQ(sub_.dropped(), static_cast<std::uint64_t>(kRefused));
}

// A gap stands where its drops happened: drops after the subscriber noticed the first ones,
// behind messages that were accepted meanwhile, get a gap of their own after those messages.
TEST_F(DeliveryDrops, LaterDropsGetAGapOfTheirOwnAfterTheMessagesBeforeThem) {
  int next = 0;
  auto fill = [&] {  // publishes until one is refused; returns how many were accepted
    int accepted = 0;
    while (next < 1000 && bus_.publish("flood", flood_payload(next++)) == 1) ++accepted;
    return accepted;
  };
  const int first = fill();
  ASSERT_GT(first, 1);
  constexpr int kEarly = 3;
  for (int i = 1; i < kEarly; ++i) EXPECT_EQ(bus_.publish("flood", flood_payload(next++)), 0U);

  // Reading the first message frees room and notices the early drops.
  auto m = sub_.receive(kWait);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, flood_payload(0));
  const int refilled_from = next;
  const int refilled = fill();
  ASSERT_GT(refilled, 0);
  constexpr int kLate = 2;
  for (int i = 1; i < kLate; ++i) EXPECT_EQ(bus_.publish("flood", flood_payload(next++)), 0U);
  EXPECT_EQ(sub_.dropped(), static_cast<std::uint64_t>(kEarly + kLate));

  std::vector<std::string> stream;
  while (auto f = sub_.receive(kQuiet)) {
    // Each flood payload is known by its number, its first six characters.
    stream.push_back(f->kind == Kind::gap ? fmt::format("gap {}", f->count)
                                          : f->payload.substr(0, 6));
  }
  std::vector<std::string> expected;
  for (int i = 1; i < first; ++i) expected.push_back(fmt::format("{:06}", i));
  expected.push_back(fmt::format("gap {}", kEarly));
  for (int i = 0; i < refilled; ++i) expected.push_back(fmt::format("{:06}", refilled_from + i));
  expected.push_back(fmt::format("gap {}", kLate));
  EXPECT_EQ(stream, expected);
}

// Waits up to kWait for `done`; false if it never held.
template <class F>
bool eventually(F&& done) {
  const auto deadline = Clock::now() + kWait;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// As UNSUBSCRIBE in Redis, (un)subscribing works whatever the stream holds: a subscriber
// flooded by one channel leaves it and joins another without reading first. A thread publishes
// flat out on "flood", and on "calm" every eighth message, into a ring nobody reads.
TEST_F(DeliveryDrops, SubscribeAndUnsubscribeOnARingKeptFullByAFloodingPublisher) {
  std::atomic<int> calm_delivered{0};
  std::vector<int> calm_seqs;  // the calm messages that reached the subscriber, read after join
  // Stopped and joined on any way out of the test, a failed call included.
  std::jthread flooder([&](const std::stop_token& stop) {
    const std::string filler(200, 'f');
    for (int n = 0; !stop.stop_requested(); ++n) {
      if (n % 8 != 7) {
        (void)bus_.publish("flood", fmt::format("{:08}", n) + filler);
      } else if (bus_.publish("calm", fmt::format("{:08}", n)) == 1) {
        calm_seqs.push_back(n);
        calm_delivered.fetch_add(1);
      }
    }
  });
  ASSERT_TRUE(eventually([&] { return sub_.dropped() > 0; })) << "the ring never filled";
  EXPECT_EQ(sub_.subscribe({"calm"}), 2U);
  const std::uint64_t dropped_before = sub_.dropped();
  ASSERT_TRUE(eventually([&] { return sub_.dropped() > dropped_before; }))
      << "the ring is no longer full";
  EXPECT_EQ(sub_.unsubscribe({"flood"}), 1U);

  // Reading makes room, which now only calm messages take.
  std::vector<Message> stream;
  const auto deadline = Clock::now() + kWait;
  while (calm_delivered.load() < 100 && Clock::now() < deadline) {
    if (auto m = sub_.receive(std::chrono::milliseconds(10))) stream.push_back(std::move(*m));
  }
  flooder.request_stop();
  flooder.join();
  while (auto m = sub_.receive(kQuiet)) stream.push_back(std::move(*m));
  ASSERT_GE(calm_delivered.load(), 100);

  // Before the subscribe confirmation only flood; between the two confirmations both; after
  // the unsubscribe confirmation only calm. Gaps anywhere, adding up to the drops.
  int phase = 0;
  int last_flood = -1;
  std::vector<int> calm_seen;
  std::uint64_t gaps = 0;
  for (const Message& m : stream) {
    SCOPED_TRACE(fmt::format("{} {} {}", kind_name(m.kind), m.channel, m.payload.substr(0, 8)));
    switch (m.kind) {
      case Kind::gap: gaps += static_cast<std::uint64_t>(m.count); break;
      case Kind::subscribe:
      case Kind::unsubscribe:  // [subscribe calm 2], then [unsubscribe flood 1]
        ASSERT_LT(phase, 2) << "a confirmation too many";
        EXPECT_EQ(m.kind, phase == 0 ? Kind::subscribe : Kind::unsubscribe);
        EXPECT_EQ(m.channel, phase == 0 ? "calm" : "flood");
        EXPECT_EQ(m.count, phase == 0 ? 2 : 1);
        ++phase;
        break;
      case Kind::message:
        if (m.channel == "flood") {
          EXPECT_LT(phase, 2) << "a flood message after its unsubscribe confirmation";
          const int seq = std::stoi(m.payload.substr(0, 8));
          EXPECT_GT(seq, last_flood);
          last_flood = seq;
        } else {
          EXPECT_EQ(m.channel, "calm");
          EXPECT_NE(phase, 0) << "a calm message before its subscribe confirmation";
          calm_seen.push_back(std::stoi(m.payload));
        }
        break;
      default: ADD_FAILURE() << "unexpected frame";
    }
  }
  EXPECT_EQ(phase, 2) << "both confirmations arrived";
  EXPECT_EQ(calm_seen, calm_seqs) << "every calm message that was delivered, in order";
  EXPECT_EQ(gaps, sub_.dropped()) << "the gaps account for every drop";
  EXPECT_EQ(sub_.subscription_count(), 1U);
  EXPECT_EQ(numsub(bus_, {"flood", "calm"}), (NumSub{{"flood", 0}, {"calm", 1}}));
}

// ---- stats() against the PUBSUB commands -----------------------------------------------------

using Counted = std::map<std::string, std::size_t>;

// The registry as stats(), inspect(), NUMSUB, CHANNELS and NUMPAT each see it: all must be
// `channels` and `patterns` exactly.
void expect_registry(const Bus& bus, const Counted& channels, const Counted& patterns) {
  for (const BusStats& stats : {bus.stats(), inspect(bus.name())}) {
    Counted stat_channels;
    for (const auto& c : stats.channels) stat_channels[c.name] += c.subscribers;
    EXPECT_EQ(stat_channels, channels);
    EXPECT_EQ(stats.channels.size(), channels.size()) << "one entry per channel";
    Counted stat_patterns;
    for (const auto& p : stats.patterns) stat_patterns[p.pattern] += p.subscribers;
    EXPECT_EQ(stat_patterns, patterns);
    EXPECT_EQ(stats.patterns.size(), patterns.size()) << "one entry per pattern";
  }
  Names names;
  NumSub expected;
  for (const auto& [name, n] : channels) {
    names.push_back(name);
    expected.emplace_back(name, n);
  }
  EXPECT_EQ(numsub(bus, names), expected);
  EXPECT_EQ(sorted(bus.channels()), names);
  EXPECT_EQ(bus.numpat(), patterns.size());
}

// Subscriptions of each subscriber (a client with a ring), by pid, sorted.
std::map<pid_t, std::vector<std::uint32_t>> subscriptions_by_pid(const Bus& bus) {
  std::map<pid_t, std::vector<std::uint32_t>> by_pid;
  for (const auto& c : bus.stats().clients) {
    if (c.ring_bytes == 0) continue;
    EXPECT_EQ(c.ring_bytes, bus.limits().ring_bytes) << "pid " << c.pid;
    EXPECT_EQ(c.dropped, 0U) << "pid " << c.pid;
    by_pid[c.pid].push_back(c.subscriptions);
  }
  for (auto& [pid, counts] : by_pid) std::sort(counts.begin(), counts.end());
  return by_pid;
}

TEST(DeliveryStats, StatsAgreeWithNumsubAndNumpat) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  const BusStats stats = bus.stats();
  EXPECT_EQ(stats.bus, daemon.bus());
  EXPECT_EQ(stats.coordinator_pid, daemon.pid());
  EXPECT_TRUE(stats.coordinator_alive);
  const Limits& l = bus.limits();
  const Limits& s = stats.limits;
  EXPECT_EQ(
      std::tie(s.max_clients, s.max_channel, s.max_pattern, s.max_subscriptions, s.max_channels,
               s.max_patterns, s.max_total_subscriptions, s.ring_bytes, s.max_payload),
      std::tie(l.max_clients, l.max_channel, l.max_pattern, l.max_subscriptions, l.max_channels,
               l.max_patterns, l.max_total_subscriptions, l.ring_bytes, l.max_payload));
  expect_registry(bus, {}, {});

  Subscriber a = bus.subscriber();
  EXPECT_EQ(a.subscribe({"news", "sport"}), 2U);
  EXPECT_EQ(a.psubscribe({"n*"}), 3U);
  RemoteSubscriber b(bus);
  EXPECT_EQ(b.subscribe({"news"}), 1U);
  EXPECT_EQ(b.psubscribe({"n*", "s*"}), 3U);
  std::optional<RemoteSubscriber> c;
  c.emplace(bus);
  EXPECT_EQ(c->subscribe({"news", "weather", ""}), 3U);
  EXPECT_EQ(c->psubscribe({"w?ather"}), 4U);
  const pid_t c_pid = c->pid();

  expect_registry(bus, {{"", 1}, {"news", 3}, {"sport", 1}, {"weather", 1}},
                  {{"n*", 2}, {"s*", 1}, {"w?ather", 1}});
  EXPECT_EQ(subscriptions_by_pid(bus), (std::map<pid_t, std::vector<std::uint32_t>>{
                                           {getpid(), {3}}, {b.pid(), {3}}, {c_pid, {4}}}));
  // a: message + pmessage n*, b: message + pmessage n*, c: message.
  EXPECT_EQ(bus.publish("news", "x"), 5U);

  EXPECT_EQ(b.punsubscribe(), 1U);
  expect_registry(bus, {{"", 1}, {"news", 3}, {"sport", 1}, {"weather", 1}},
                  {{"n*", 1}, {"w?ather", 1}});

  c.reset();
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline && clients_of(bus.stats(), c_pid) != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  expect_registry(bus, {{"news", 2}, {"sport", 1}}, {{"n*", 1}});
  EXPECT_EQ(subscriptions_by_pid(bus),
            (std::map<pid_t, std::vector<std::uint32_t>>{{getpid(), {3}}, {b.pid(), {1}}}));

  EXPECT_EQ(a.unsubscribe(), 1U);
  expect_registry(bus, {{"news", 1}}, {{"n*", 1}});
  EXPECT_EQ(a.punsubscribe(), 0U);
  EXPECT_EQ(b.unsubscribe(), 0U);
  expect_registry(bus, {}, {});
}

// publish_batch is that many publishes: the same frames, in the same order, to channel and
// pattern subscribers, the same drops and gaps when a ring fills, and a payload over the limit
// refuses the whole batch before any of it is published.
TEST(PublishBatch, IsThatManyPublishesInOrder) {
  test::Daemon d(test::unique_bus("batch"), {"--ring-bytes", "4096", "--max-payload", "1024"});
  Bus bus = Bus::connect(d.bus());
  Subscriber a = bus.subscriber();
  Subscriber b = bus.subscriber();
  a.subscribe({"b"});
  b.psubscribe({"b*"});
  ASSERT_EQ(a.receive(std::chrono::seconds(5))->kind, Kind::subscribe);
  ASSERT_EQ(b.receive(std::chrono::seconds(5))->kind, Kind::psubscribe);
  std::vector<std::string> texts;
  for (int i = 0; i < 10; ++i) texts.push_back(fmt::format("m{}", i));
  const std::vector<std::string_view> ten(texts.begin(), texts.end());
  EXPECT_EQ(bus.publish_batch("b", ten), 20U);
  for (int i = 0; i < 10; ++i) {
    const auto m = a.receive(std::chrono::seconds(5));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->kind, Kind::message);
    EXPECT_EQ(m->payload, texts[i]);
    const auto p = b.receive(std::chrono::seconds(5));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->kind, Kind::pmessage);
    EXPECT_EQ(p->pattern, "b*");
    EXPECT_EQ(p->channel, "b");
    EXPECT_EQ(p->payload, texts[i]);
  }

  const std::string too_big(1025, 'x');
  const std::vector<std::string_view> refused{"first", too_big};
  try {
    bus.publish_batch("b", refused);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::payload_too_large);
  }
  EXPECT_FALSE(a.receive(std::chrono::milliseconds(50)));

  // 100 records of 128 bytes into a ring of 4096: what fits is delivered, the rest is a gap.
  const std::string hundred_bytes(100, 'h');
  const std::vector<std::string_view> many(100, hundred_bytes);
  const std::size_t delivered = bus.publish_batch("b", many);
  EXPECT_GT(delivered, 20U);
  EXPECT_LT(delivered, 100U);
  std::size_t read = 0;
  std::int64_t gap = 0;
  while (const auto m = a.receive(std::chrono::milliseconds(50))) {
    if (m->kind == Kind::gap) {
      gap += m->count;
    } else {
      EXPECT_EQ(m->payload, hundred_bytes);
      ++read;
    }
  }
  EXPECT_EQ(read + static_cast<std::size_t>(gap), 100U);
  EXPECT_EQ(2 * read, delivered);  // both rings are alike
}

}  // namespace
}  // namespace shmcast
