// The coordinator sleeps until something needs it: a request, the death of a client, a stop. It
// runs here in the test process with its timed passes an hour apart, so whatever these tests see
// done was not done by a timed pass.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "client_link.hpp"
#include "coordinator.hpp"
#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast::daemon {
namespace {

using test::Child;
using test::Link;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kNoTimedPass = std::chrono::hours(1);

// Coordinator::run on a thread of the test process.
class Serving {
 public:
  explicit Serving(Coordinator& coordinator) : coordinator_(coordinator) {
    thread_ = std::thread([this] {
      coordinator_.run(stop_);
      returned_.store(true);
    });
  }
  ~Serving() {
    stop_.store(true);
    coordinator_.wake();
    thread_.join();
    coordinator_.shutdown();
  }
  Serving(const Serving&) = delete;
  Serving& operator=(const Serving&) = delete;

  void stop() { stop_.store(true); }
  [[nodiscard]] bool returned_within(std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (!returned_.load() && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    return returned_.load();
  }

 private:
  Coordinator& coordinator_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> returned_{false};
  std::thread thread_;
};

TEST(CoordinatorWake, SigkilledSubscriberIsReapedByItsDeathAlone) {
  const std::string name = test::unique_bus("wake-reap");
  Coordinator coordinator({name, Limits{}, 0600, std::nullopt, kNoTimedPass});
  // Forked before the coordinator's threads start.
  Child victim([&name](Link& link) {
    if (link.receive(30s) != "go") return 1;
    Bus bus = Bus::connect(name);
    Subscriber sub = bus.subscriber();
    sub.subscribe({"wake.news"});
    sub.psubscribe({"wake.*"});
    if (!link.send("subscribed")) return 1;
    ::pause();
    return 0;
  });
  Serving serving(coordinator);
  ASSERT_TRUE(victim.link().send("go"));
  ASSERT_EQ(victim.link().receive(30s), "subscribed");

  Bus observer = Bus::connect(name);
  const std::vector<std::string> news{"wake.news"};
  ASSERT_EQ(observer.numsub(news)[0].second, 1U);
  ASSERT_EQ(observer.numpat(), 1U);
  ASSERT_EQ(test::ring_files(name).size(), 1U);
  const auto pid_listed = [&observer, pid = victim.pid()] {
    const auto clients = observer.stats().clients;
    return std::any_of(clients.begin(), clients.end(),
                       [pid](const ClientStat& c) { return c.pid == pid; });
  };
  ASSERT_TRUE(pid_listed());

  victim.kill(SIGKILL);
  const auto deadline = Clock::now() + 10s;
  while (observer.numsub(news)[0].second != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(observer.numsub(news)[0].second, 0U) << "the dead subscriber is still counted 10 s on";
  EXPECT_EQ(observer.numpat(), 0U);
  EXPECT_FALSE(pid_listed()) << "its slot is not free";
  EXPECT_TRUE(test::ring_files(name).empty()) << "its ring is still in /dev/shm";
  EXPECT_EQ(observer.stats().reaped, 1U);
}

TEST(CoordinatorWake, StopThenWakeEndsTheRunAtOnce) {
  Coordinator coordinator(
      {test::unique_bus("wake-stop"), Limits{}, 0600, std::nullopt, kNoTimedPass});
  Serving serving(coordinator);
  std::this_thread::sleep_for(50ms);  // asleep on the doorbell by now
  serving.stop();
  // Nothing rings: the flag alone is seen at the next timed pass, an hour away.
  EXPECT_FALSE(serving.returned_within(200ms));
  coordinator.wake();
  EXPECT_TRUE(serving.returned_within(10s)) << "still serving 10 s after stop and wake";
}

// A client whose attach failed leaves its claimed slot marked detached as it goes; the ring that
// follows lets the coordinator free the slot then, not at its next timed pass.
TEST(CoordinatorWake, SlotOfAClientThatNeverAttachedIsFreedWhenItLeaves) {
  const std::string name = test::unique_bus("wake-unattached");
  Coordinator coordinator({name, Limits{}, 0600, std::nullopt, kNoTimedPass});
  Serving serving(coordinator);
  const auto view = detail::open_control(name);
  const auto state_of_slot = [&view](std::uint32_t slot) {
    return static_cast<detail::SlotState>(view->slot(slot).state.load());
  };
  std::uint32_t slot = 0;
  {
    detail::ClientLink claim(view, name, ConnectOptions{});
    slot = claim.slot();
    ASSERT_EQ(state_of_slot(slot), detail::SlotState::claimed);
    std::this_thread::sleep_for(50ms);  // asleep on the doorbell by now
  }
  const auto deadline = Clock::now() + 10s;
  while (state_of_slot(slot) != detail::SlotState::free && Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(state_of_slot(slot), detail::SlotState::free) << "the slot is not free 10 s on";
  EXPECT_EQ(view->slot(slot).pid.load(), 0) << "the slot still holds its claimer's pid";
}

}  // namespace
}  // namespace shmcast::daemon
