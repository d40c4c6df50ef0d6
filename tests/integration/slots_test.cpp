// What costs a client slot: a Bus takes one, and its first Subscriber holds its ring in that
// slot, so a subscribing process (`shmcast subscribe`, a Bus with one Subscriber) costs one.
// A Subscriber that goes away while its Bus lives releases its ring and subscriptions and
// leaves the slot to the Bus.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/fault_support.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::size_t numsub_of(const Bus& bus, const std::string& channel) {
  const std::vector<std::string> names{channel};
  return bus.numsub(names).at(0).second;
}

// The clients of the bus as stats() lists them: (pid, has a ring).
std::vector<std::pair<pid_t, bool>> clients(const BusStats& stats) {
  std::vector<std::pair<pid_t, bool>> out;
  for (const ClientStat& c : stats.clients) out.emplace_back(c.pid, c.ring_bytes > 0);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<Error> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  return std::nullopt;
}

// A `shmcast subscribe CHANNEL` process, returned once its confirmation is printed.
std::unique_ptr<Command> subscribe_process(const std::string& bus, const std::string& channel) {
  auto child = std::make_unique<Command>(
      std::vector<std::string>{bin_dir() + "/shmcast", "--bus", bus, "subscribe", channel});
  child->close_stdin();
  return child;
}

TEST(Slots, EachSubscribeProcessTakesOneSlot) {
  constexpr std::size_t kProcesses = 6;
  Daemon daemon(unique_bus("oneslot"), {"--max-clients", std::to_string(kProcesses)});
  ASSERT_TRUE(wait_for_clients(daemon.bus(), 0));
  std::vector<std::unique_ptr<Command>> subscribers;
  for (std::size_t i = 0; i < kProcesses; ++i) {
    subscribers.push_back(subscribe_process(daemon.bus(), "all"));
  }
  const std::string confirmed = "subscribe\nall\n1\n";
  for (auto& s : subscribers) {
    EXPECT_TRUE(s->read_until_text(confirmed)) << s->out() << s->err();
  }
  const BusStats stats = inspect(daemon.bus());
  ASSERT_EQ(stats.clients.size(), kProcesses);
  std::set<pid_t> pids;
  for (const ClientStat& c : stats.clients) {
    pids.insert(c.pid);
    EXPECT_EQ(c.ring_bytes, stats.limits.ring_bytes) << "pid " << c.pid;
    EXPECT_EQ(c.subscriptions, 1U) << "pid " << c.pid;
  }
  EXPECT_EQ(pids.size(), kProcesses) << "one client per process";
  ASSERT_EQ(stats.channels.size(), 1U);
  EXPECT_EQ(stats.channels[0].subscribers, kProcesses);

  // The table is full: one more process is refused, and the others carry on.
  const Result refused = run({bin_dir() + "/shmcast", "--bus", daemon.bus(), "subscribe", "all"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("--max-clients"), std::string::npos) << refused.err;

  // A process that leaves gives its one slot back: a publisher takes it and reaches the rest.
  subscribers.back().reset();
  const auto deadline = Clock::now() + 5s;
  std::optional<Bus> bus;
  while (!bus && Clock::now() < deadline) {
    try {
      bus.emplace(Bus::connect(daemon.bus()));
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::too_many_clients) << e.what();
      std::this_thread::sleep_for(5ms);
    }
  }
  ASSERT_TRUE(bus.has_value());
  EXPECT_EQ(bus->publish("all", "hello"), kProcesses - 1);
  subscribers.pop_back();
  for (auto& s : subscribers) {
    EXPECT_TRUE(s->read_until_text("message\nall\nhello\n")) << s->out() << s->err();
  }
}

TEST(Slots, SubscriberOfABusHoldsItsRingInTheBusSlot) {
  Daemon daemon(unique_bus("lent"), {"--max-clients", "2"});
  const RemoveSegments cleanup{daemon.bus()};
  ASSERT_TRUE(wait_for_clients(daemon.bus(), 0));
  Bus bus = Bus::connect(daemon.bus());
  const pid_t me = getpid();
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, false}}));

  std::set<std::string> first_ring;
  {
    Subscriber sub = bus.subscriber();
    EXPECT_EQ(sub.subscribe({"x"}), 1U);
    EXPECT_EQ(sub.psubscribe({"x*"}), 2U);
    EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, true}}));
    first_ring = ring_files(daemon.bus());
    EXPECT_EQ(first_ring.size(), 1U);
    EXPECT_EQ(bus.publish("x", "one"), 2U);
  }
  // Released at once: the subscriptions, the ring, but not the slot.
  EXPECT_EQ(numsub_of(bus, "x"), 0U);
  EXPECT_EQ(bus.numpat(), 0U);
  EXPECT_EQ(ring_files(daemon.bus()), std::set<std::string>{});
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, false}}));
  EXPECT_EQ(bus.publish("x", "nobody"), 0U);

  // The next Subscriber holds a new ring in the same slot, and sees nothing of the old one's.
  Subscriber again = bus.subscriber();
  EXPECT_EQ(again.subscribe({"x"}), 1U);
  const std::set<std::string> second_ring = ring_files(daemon.bus());
  ASSERT_EQ(second_ring.size(), 1U);
  EXPECT_NE(second_ring, first_ring);
  EXPECT_EQ(bus.publish("x", "two"), 1U);
  const auto confirmation = again.receive(5s);
  ASSERT_TRUE(confirmation.has_value());
  EXPECT_EQ(confirmation->kind, Kind::subscribe);
  const auto message = again.receive(5s);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->payload, "two");
  EXPECT_FALSE(again.receive(100ms).has_value());

  // A second Subscriber at the same time takes a slot of its own: the table of two is full.
  auto other = std::make_unique<Subscriber>(bus.subscriber());
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, true}, {me, true}}));
  const auto refused = error_of([&] { (void)bus.subscriber(); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code(), Errc::too_many_clients);
  EXPECT_EQ(other->subscribe({"x"}), 1U);
  EXPECT_EQ(bus.publish("x", "three"), 2U);
  other.reset();
  const auto deadline = Clock::now() + 5s;
  while (bus.stats().clients.size() != 1U && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, true}}));
  EXPECT_EQ(numsub_of(bus, "x"), 1U);
}

TEST(Slots, SubscribersMadeOnManyThreadsShareOneBusSlotAtMost) {
  constexpr int kThreads = 4;
  Daemon daemon(unique_bus("threads"), {"--max-clients", std::to_string(kThreads)});
  ASSERT_TRUE(wait_for_clients(daemon.bus(), 0));
  Bus bus = Bus::connect(daemon.bus());
  std::vector<std::optional<Subscriber>> subs(kThreads);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        subs[t].emplace(bus.subscriber());
        subs[t]->subscribe({fmt::format("t{}", t)});
      } catch (const Error& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors, std::vector<std::string>(kThreads));
  ASSERT_TRUE(std::all_of(subs.begin(), subs.end(), [](const auto& s) { return s.has_value(); }));
  EXPECT_EQ(bus.stats().clients.size(), static_cast<std::size_t>(kThreads));
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(bus.publish(fmt::format("t{}", t), "m"), 1U);
    ASSERT_TRUE(subs[t]->receive(5s).has_value());  // the confirmation
    const auto m = subs[t]->receive(5s);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->channel, fmt::format("t{}", t));
  }
}

// A Subscriber refused while no coordinator runs gives the Bus's slot back: the next one, once a
// coordinator runs again, holds its ring there.
TEST(Slots, SubscriberRefusedWhileNoCoordinatorRunsLeavesTheBusSlotFree) {
  const std::string name = unique_bus("refused");
  const RemoveSegments cleanup{name};
  auto daemon = std::make_unique<Daemon>(name);
  ASSERT_TRUE(wait_for_clients(name, 0));
  ConnectOptions options;
  options.request_timeout = 300ms;
  Bus bus = Bus::connect(name, options);
  daemon->terminate();  // the bus stays: the Bus is attached

  const auto refused = error_of([&] { (void)bus.subscriber(); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code(), Errc::no_coordinator) << refused->what();
  EXPECT_EQ(ring_files(name), std::set<std::string>{});

  daemon.reset();
  Daemon second(name);
  ASSERT_TRUE(wait_for_clients(name, 1));
  Subscriber sub = bus.subscriber();
  EXPECT_EQ(sub.subscribe({"x"}), 1U);
  EXPECT_EQ(bus.publish("x", "back"), 1U);
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{getpid(), true}}));
}

// Destroyed while no coordinator runs, the Subscriber cannot release its ring. The slot stays
// the Bus's, ring and subscriptions included, so the process still counts as a client: a
// stopping coordinator keeps the bus for it, and its death is still counted. The Bus asks for
// the release again before it lends the slot to its next Subscriber.
TEST(Slots, SubscriberLeavingWhileTheCoordinatorIsDownIsReleasedBeforeTheSlotIsLentAgain) {
  const std::string name = unique_bus("down");
  const RemoveSegments cleanup{name};
  auto daemon = std::make_unique<Daemon>(name);
  Bus bus = Bus::connect(name);
  auto sub = std::make_unique<Subscriber>(bus.subscriber());
  EXPECT_EQ(sub->subscribe({"x"}), 1U);
  daemon->terminate();  // the bus stays: a client is attached

  const auto leaving = Clock::now();
  sub.reset();
  EXPECT_LT(Clock::now() - leaving, 1s) << "waited for a coordinator that is not running";
  EXPECT_EQ(bus.publish("x", "while down"), 1U) << "still registered until released";

  const pid_t me = getpid();
  daemon = std::make_unique<Daemon>(name);
  ASSERT_TRUE(wait_for_clients(name, 1));
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, true}}))
      << "the Bus keeps its slot, with the ring it could not release";
  daemon->terminate();
  EXPECT_TRUE(std::filesystem::exists("/dev/shm/shmcast." + name + ".ctl"))
      << "a stopping coordinator keeps the bus of a live Bus";

  daemon = std::make_unique<Daemon>(name);
  Subscriber next = bus.subscriber();
  EXPECT_EQ(numsub_of(bus, "x"), 0U) << "released before the slot was lent again";
  EXPECT_EQ(ring_files(name).size(), 1U) << "the new Subscriber's ring only";
  EXPECT_EQ(next.subscribe({"x"}), 1U);
  EXPECT_EQ(bus.publish("x", "again"), 1U);
  ASSERT_TRUE(wait_for_clients(name, 1));
  EXPECT_EQ(clients(bus.stats()), (std::vector<std::pair<pid_t, bool>>{{me, true}}))
      << "one slot in all";
}

}  // namespace
}  // namespace shmcast::test
