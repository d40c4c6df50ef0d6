// Subscriber::fd() in an event loop: readable when frames wait (messages, confirmations, gaps),
// not readable after a drain that found nothing, every message of other processes delivered
// in order through epoll, and an idle wait that costs no CPU.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fd_support.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using std::chrono::milliseconds;
using test::EpollLoop;
using test::InOrder;
using test::readable;

// How long a wake-up that must come may take: generous, a loaded machine is slow.
constexpr milliseconds kWait{5000};
// How long to watch for a wake-up that must not come. Publishes are in the ring before they
// return and the watcher posts within microseconds of a commit, so one that leaked shows.
constexpr milliseconds kQuiet{50};

std::vector<Message> drain(Subscriber& sub) {
  std::vector<Message> out;
  while (auto m = sub.receive(std::chrono::nanoseconds(0))) out.push_back(std::move(*m));
  return out;
}

// CPU time (user + system) of every thread of this process so far.
std::chrono::microseconds cpu_used() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return std::chrono::seconds(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         std::chrono::microseconds(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::size_t thread_count() {
  std::size_t n = 0;
  DIR* dir = opendir("/proc/self/task");
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n;
}

// A coordinator of its own, a connection, and one subscriber on it.
struct OneSubscriber {
  explicit OneSubscriber(std::vector<std::string> flags = {})
      : daemon(test::unique_bus("fd"), std::move(flags)),
        bus(Bus::connect(daemon.bus())),
        sub(bus.subscriber()) {}
  test::Daemon daemon;
  Bus bus;
  Subscriber sub;
};

TEST(SubscriberFd, ConfirmationsMakeItReadable) {
  OneSubscriber one;
  auto& [daemon, bus, sub] = one;
  const int fd = sub.fd();
  EXPECT_FALSE(readable(fd, kQuiet)) << "nothing waits yet";

  ASSERT_EQ(sub.subscribe({"a", "b"}), 2U);
  ASSERT_TRUE(readable(fd, milliseconds(0))) << "confirmations wait";
  std::vector<Message> frames = drain(sub);
  ASSERT_EQ(frames.size(), 2U);
  EXPECT_EQ(frames[0].kind, Kind::subscribe);
  EXPECT_EQ(frames[0].channel, "a");
  EXPECT_EQ(frames[1].channel, "b");
  EXPECT_EQ(frames[1].count, 2);
  EXPECT_FALSE(readable(fd, kQuiet));

  ASSERT_EQ(sub.unsubscribe({"a"}), 1U);
  ASSERT_TRUE(readable(fd, milliseconds(0)));
  frames = drain(sub);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].kind, Kind::unsubscribe);
  EXPECT_FALSE(readable(fd, kQuiet));
}

TEST(SubscriberFd, ReadableWhenConfirmationsWaitedBeforeTheFirstCall) {
  OneSubscriber one;
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"early"}), 1U);
  const int fd = sub.fd();
  ASSERT_TRUE(readable(fd, kWait));
  const std::vector<Message> frames = drain(sub);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].kind, Kind::subscribe);
  EXPECT_FALSE(readable(fd, kQuiet));
  EXPECT_EQ(sub.fd(), fd) << "every call returns the same descriptor";
}

TEST(SubscriberFd, NotReadableAfterADrainReadableOnTheNextPublish) {
  OneSubscriber one;
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"news"}), 1U);
  const int fd = sub.fd();
  ASSERT_EQ(drain(sub).size(), 1U);
  ASSERT_FALSE(readable(fd, kQuiet));

  for (int round = 0; round < 200; ++round) {
    const int burst = 1 + round % 4;
    for (int i = 0; i < burst; ++i) {
      ASSERT_EQ(bus.publish("news", fmt::format("{}.{}", round, i)), 1U);
    }
    ASSERT_TRUE(readable(fd, kWait)) << "round " << round;
    // A partial read leaves it readable: the rest still waits.
    if (burst > 1) {
      ASSERT_TRUE(sub.receive(std::chrono::nanoseconds(0)));
      ASSERT_TRUE(readable(fd, milliseconds(0))) << "round " << round;
    }
    std::vector<Message> frames = drain(sub);
    ASSERT_EQ(frames.size(), static_cast<std::size_t>(burst > 1 ? burst - 1 : 1));
    EXPECT_EQ(frames.back().payload, fmt::format("{}.{}", round, burst - 1));
    ASSERT_FALSE(readable(fd, round % 20 == 0 ? kQuiet : milliseconds(0))) << "round " << round;
  }
}

TEST(SubscriberFd, AGapMakesItReadableAndADrainEndsWithIt) {
  OneSubscriber one({"--ring-bytes", "4096", "--max-payload", "1024"});
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"flood"}), 1U);
  const int fd = sub.fd();
  ASSERT_EQ(drain(sub).size(), 1U);
  std::uint64_t sent = 0;
  while (sub.dropped() < 3) {
    bus.publish("flood", fmt::format("{:0>100}", sent++));
    ASSERT_LT(sent, 1000U) << "a 4 KiB ring must fill";
  }
  ASSERT_TRUE(readable(fd, kWait));
  const std::vector<Message> frames = drain(sub);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().kind, Kind::gap);
  EXPECT_EQ(frames.back().count, 3);
  EXPECT_EQ(frames.size(), sent - 3 + 1);
  EXPECT_FALSE(readable(fd, kQuiet));
}

TEST(SubscriberFd, MessagesOfOtherProcessesArriveInOrderThroughEpoll) {
  constexpr int kPublishers = 2;
  constexpr std::uint64_t kEach = 5000;
  // Room for every message at once: a slow reader must not drop any.
  OneSubscriber one({"--ring-bytes", "4194304"});
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"feed"}), 1U);
  EpollLoop loop(sub);
  InOrder tally;
  ASSERT_TRUE(loop.wait(kWait));
  while (auto m = sub.receive(std::chrono::nanoseconds(0))) tally(*m);
  ASSERT_EQ(tally.confirmations, 1U);

  std::vector<std::unique_ptr<test::Child>> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.push_back(std::make_unique<test::Child>([&, p](test::Link&) {
      Bus own = Bus::connect(daemon.bus());
      for (std::uint64_t i = 0; i < kEach; ++i) {
        if (own.publish("feed", test::numbered(p, i)) != 1) return 1;
        // Now and then let the reader catch up, so it also sleeps between messages.
        if (i % 500 == 0) std::this_thread::sleep_for(milliseconds(1));
      }
      return 0;
    }));
  }
  const std::uint64_t empty = loop.run(tally, kPublishers * kEach, kWait);
  for (auto& child : publishers) {
    ASSERT_TRUE(child->wait(kWait));
    EXPECT_TRUE(child->exited_cleanly());
  }
  EXPECT_EQ(tally.messages, kPublishers * kEach);
  EXPECT_EQ(tally.wrong, 0U);
  for (int p = 0; p < kPublishers; ++p) EXPECT_EQ(tally.next[p], kEach);
  EXPECT_EQ(sub.dropped(), 0U);
  EXPECT_FALSE(readable(sub.fd(), kQuiet));
  std::printf("wake-ups that found nothing: %lu\n", static_cast<unsigned long>(empty));
}

TEST(SubscriberFd, AnIdleEpollWaitCostsNoCpu) {
  OneSubscriber one;
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"quiet"}), 1U);
  EpollLoop loop(sub);
  ASSERT_EQ(drain(sub).size(), 1U);

  const auto before = cpu_used();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(loop.wait(milliseconds(1000)));
  const auto waited = std::chrono::steady_clock::now() - start;
  const auto used = cpu_used() - before;
  std::printf("idle epoll_wait on the fd: %ld us of CPU in %ld ms\n",
              static_cast<long>(used.count()),
              static_cast<long>(std::chrono::duration_cast<milliseconds>(waited).count()));
  // Not a timing target: a watcher that polls or spins would use most of the second.
  EXPECT_LT(used, milliseconds(50));
}

TEST(SubscriberFd, MovesWithTheSubscriberAndItsThreadEndsWithIt) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  const std::size_t threads = thread_count();
  std::optional<Subscriber> first(bus.subscriber());
  ASSERT_EQ(first->subscribe({"m"}), 1U);
  const int fd = first->fd();
  EXPECT_EQ(thread_count(), threads + 1);

  Subscriber moved = std::move(*first);
  first.reset();
  EXPECT_EQ(moved.fd(), fd);
  ASSERT_EQ(drain(moved).size(), 1U);
  ASSERT_EQ(bus.publish("m", "after the move"), 1U);
  ASSERT_TRUE(readable(fd, kWait));
  const std::vector<Message> frames = drain(moved);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].payload, "after the move");

  // Assigning over it destroys its state: the watcher stops and the fd closes.
  moved = bus.subscriber();
  EXPECT_EQ(thread_count(), threads);
  EXPECT_NE(::fcntl(fd, F_GETFD), 0) << "the old fd must be closed";
}

TEST(SubscriberFd, BlockingReceiveStillWorksOnceTheFdIsInUse) {
  OneSubscriber one;
  auto& [daemon, bus, sub] = one;
  ASSERT_EQ(sub.subscribe({"both"}), 1U);
  (void)sub.fd();
  ASSERT_TRUE(sub.receive(kWait));
  EXPECT_FALSE(sub.receive(kQuiet)) << "nothing was published";

  std::thread publisher([&] {
    Bus own = Bus::connect(daemon.bus());
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(milliseconds(1));
      own.publish("both", std::to_string(i));
    }
  });
  for (int i = 0; i < 100; ++i) {
    const auto m = sub.receive(kWait);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->payload, std::to_string(i));
  }
  publisher.join();
  EXPECT_TRUE(drain(sub).empty());
  EXPECT_FALSE(readable(sub.fd(), kQuiet));
}

}  // namespace
}  // namespace shmcast
