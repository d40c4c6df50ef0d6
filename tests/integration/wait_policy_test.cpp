// Wait::adaptive changes the calling thread's scheduling policy only while it must, and gives
// it back: with no core to spare and messages coming, it naps and keeps the thread SCHED_BATCH
// from one nap to the next; a wait with a core to spare, a wait that ends with no message, or
// the Subscriber's end returns the thread to SCHED_OTHER, and a policy the caller chose
// meanwhile is left alone.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using namespace std::chrono_literals;

// Keeps more threads runnable than Wait::adaptive counts as a core to spare (twice the CPUs),
// and a publisher sending a message every 50 us, while it lives (the publisher until quiet()).
class Overload {
 public:
  explicit Overload(const std::string& bus) {
    const unsigned spinners = 2 * std::max(1U, std::thread::hardware_concurrency()) + 2;
    for (unsigned i = 0; i < spinners; ++i) {
      threads_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
    }
    publisher_ = std::thread([this, bus] {
      Bus own = Bus::connect(bus);
      while (!quiet_.load(std::memory_order_relaxed)) {
        own.publish("load", std::string("x"));
        std::this_thread::sleep_for(50us);
      }
    });
  }
  ~Overload() {
    quiet();
    stop_.store(true);
    for (auto& t : threads_) t.join();
  }
  // Stops the publisher; the other threads keep the cores busy.
  void quiet() {
    quiet_.store(true);
    if (publisher_.joinable()) publisher_.join();
  }
  Overload(const Overload&) = delete;
  Overload& operator=(const Overload&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> quiet_{false};
  std::vector<std::thread> threads_;
  std::thread publisher_;
};

// Receives until a read finds this thread SCHED_BATCH between two receives (the waits napped
// and kept it so), at most `reads` messages; true if it did.
bool napped_into_batch(Subscriber& sub, int reads) {
  for (int i = 0; i < reads; ++i) {
    if (!sub.receive(5s)) return false;
    if (sched_getscheduler(0) == SCHED_BATCH) return true;
  }
  return false;
}

TEST(WaitPolicy, NappingKeepsBatchUntilTheLoadOrTheMessagesStop) {
  test::Daemon daemon(test::unique_bus("policy"));
  Bus bus = Bus::connect(daemon.bus());
  ASSERT_EQ(sched_getscheduler(0), SCHED_OTHER);
  Subscriber sub = bus.subscriber();
  sub.subscribe({"load"});
  ASSERT_EQ(sub.receive(5s)->kind, Kind::subscribe);
  {
    const Overload load(daemon.bus());
    ASSERT_TRUE(napped_into_batch(sub, 20'000)) << "the waits never napped under the overload";
  }
  // The load is gone: what is left is read, then a wait with nothing coming sleeps and ends.
  while (sub.receive(50ms)) {
  }
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);

  // Messages stop while no core is spare: a wait that finds nothing after a nap sleeps, and
  // the thread is SCHED_OTHER again once that sleep ends.
  {
    Overload load(daemon.bus());
    ASSERT_TRUE(napped_into_batch(sub, 20'000));
    load.quiet();
    while (sub.receive(50ms)) {
    }
    EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  }

  // The Subscriber's end gives the thread back too.
  {
    const Overload load(daemon.bus());
    ASSERT_TRUE(napped_into_batch(sub, 20'000));
    sub = bus.subscriber();  // the napping one is destroyed
    EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  }
}

TEST(WaitPolicy, APolicyChosenBetweenNapsIsLeftAlone) {
  test::Daemon daemon(test::unique_bus("policy"));
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"load"});
  ASSERT_EQ(sub.receive(5s)->kind, Kind::subscribe);
  {
    const Overload load(daemon.bus());
    ASSERT_TRUE(napped_into_batch(sub, 20'000));
    const sched_param param{};
    ASSERT_EQ(sched_setscheduler(0, SCHED_IDLE, &param), 0);
  }
  while (sub.receive(50ms)) {
  }
  EXPECT_EQ(sched_getscheduler(0), SCHED_IDLE);
  // Back to normal for the rest of this process (SCHED_IDLE to SCHED_OTHER needs no privilege
  // on Linux 2.6.39 and later, within RLIMIT_NICE).
  const sched_param param{};
  sched_setscheduler(0, SCHED_OTHER, &param);
}

}  // namespace
}  // namespace shmcast
