// Cached routes: a publisher keeps the route of a channel while the route version of the
// channel's bucket stays where it was. Every change that alters the route must move it before
// the coordinator answers, so the very next publish counts the change; a change to a channel
// of another bucket must not, so that subscribing elsewhere costs the publisher nothing.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "publish.hpp"
#include "registry.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using test::RemoteSubscriber;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kWait{5000};

// A bus where "a" has a warm route in this thread, through a subscription to the channel and
// one to a pattern.
class WarmRoute : public ::testing::Test {
 protected:
  WarmRoute()
      : bus_(Bus::connect(daemon_.bus())),
        view_(detail::Segment::open(detail::control_name(daemon_.bus()),
                                    detail::SegmentKind::control, detail::kLayoutVersion)) {
    EXPECT_EQ(direct_.subscribe({"a"}), 1U);
    EXPECT_EQ(via_pattern_.psubscribe({"a*"}), 1U);
    EXPECT_EQ(bus_.publish("a", "warm"), 2U);
    EXPECT_EQ(bus_.publish("a", "warm"), 2U);
  }

  [[nodiscard]] std::uint32_t bucket_of(const std::string& channel) const {
    return detail::route_bucket(detail::name_hash(channel), view_.geometry().route_buckets);
  }

  // The first name "<prefix><n>" whose bucket is (or is not) the bucket of "a".
  [[nodiscard]] std::string name_in_bucket_of_a(const std::string& prefix, bool same) const {
    for (int n = 0;; ++n) {
      std::string name = fmt::format("{}{}", prefix, n);
      if ((bucket_of(name) == bucket_of("a")) == same) return name;
    }
  }

  test::Daemon daemon_{test::unique_bus("routes")};
  Bus bus_;
  Subscriber direct_ = bus_.subscriber();
  Subscriber via_pattern_ = bus_.subscriber();
  detail::ControlView view_;
};

TEST_F(WarmRoute, AnotherSubscriberOfTheChannelCountsAtTheNextPublish) {
  RemoteSubscriber other(bus_);
  ASSERT_EQ(other.subscribe({"a"}), 1U);
  EXPECT_EQ(bus_.publish("a", "after"), 3U);
}

TEST_F(WarmRoute, ANewMatchingPatternCountsAtTheNextPublish) {
  RemoteSubscriber other(bus_);
  ASSERT_EQ(other.psubscribe({"?"}), 1U);
  EXPECT_EQ(bus_.publish("a", "after"), 3U);
}

TEST_F(WarmRoute, LeavingTheChannelCountsAtTheNextPublish) {
  ASSERT_EQ(direct_.unsubscribe({"a"}), 0U);
  EXPECT_EQ(bus_.publish("a", "after"), 1U);
}

TEST_F(WarmRoute, LeavingThePatternCountsAtTheNextPublish) {
  ASSERT_EQ(via_pattern_.punsubscribe({"a*"}), 0U);
  EXPECT_EQ(bus_.publish("a", "after"), 1U);
}

// A dead holder's ring stays mapped in the publisher: a route kept past its removal would
// still write there and count it.
TEST_F(WarmRoute, AHolderThatDiesStopsCountingOnceRemoved) {
  RemoteSubscriber victim(bus_);
  ASSERT_EQ(victim.subscribe({"a"}), 1U);
  ASSERT_EQ(victim.psubscribe({"[a]"}), 2U);
  ASSERT_EQ(bus_.publish("a", "before"), 4U);
  victim.process().kill(SIGKILL);
  const auto deadline = Clock::now() + kWait;
  while ((bus_.numsub(std::vector<std::string>{"a"})[0].second != 1 || bus_.numpat() != 1) &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(bus_.numpat(), 1U) << "the coordinator did not remove the dead subscriber";
  EXPECT_EQ(bus_.publish("a", "after"), 2U);
}

TEST_F(WarmRoute, ChurnOnAChannelOfAnotherBucketLeavesTheRouteCached) {
  const std::string elsewhere = name_in_bucket_of_a("elsewhere:", false);
  RemoteSubscriber churner(bus_);
  const std::uint64_t resolved = detail::resolved_routes();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(churner.subscribe({elsewhere}), 1U);
    EXPECT_EQ(bus_.publish("a", "during"), 2U);
    ASSERT_EQ(churner.unsubscribe({elsewhere}), 0U);
    EXPECT_EQ(bus_.publish("a", "during"), 2U);
  }
  EXPECT_EQ(detail::resolved_routes(), resolved) << "'a' was resolved again";
}

// A channel whose name shares the bucket: the route is resolved again, and stays right.
TEST_F(WarmRoute, ChurnOnAChannelOfTheSameBucketResolvesAgainAndStaysRight) {
  const std::string neighbour = name_in_bucket_of_a("neighbour:", true);
  RemoteSubscriber churner(bus_);
  const std::uint64_t resolved = detail::resolved_routes();
  ASSERT_EQ(churner.subscribe({neighbour}), 1U);
  EXPECT_EQ(bus_.publish("a", "during"), 2U);
  EXPECT_EQ(bus_.publish("a", "during"), 2U);
  EXPECT_EQ(detail::resolved_routes(), resolved + 1);
  EXPECT_EQ(bus_.publish(neighbour, "to the neighbour"), 1U);
  ASSERT_EQ(churner.unsubscribe({neighbour}), 0U);
  EXPECT_EQ(bus_.publish(neighbour, "to nobody"), 0U);
  EXPECT_EQ(bus_.publish("a", "after"), 2U);
}

// A coordinator that adopts a bus lays the registry out afresh and drops what fails its checks;
// a route cached before must be resolved again, though no request changed anything.
TEST(AdoptedRoutes, ARouteCachedBeforeTheRestartIsResolvedAgain) {
  const std::string name = test::unique_bus("adopted-routes");
  test::RemoveSegments cleanup{name};
  auto daemon = std::make_unique<test::Daemon>(name);
  Bus bus = Bus::connect(name);
  Subscriber sub = bus.subscriber();
  ASSERT_EQ(sub.subscribe({"a"}), 1U);
  ASSERT_EQ(bus.publish("a", "before"), 1U);
  daemon->kill_now();
  daemon.reset();
  {
    // The subscription now names a client slot nobody attached: the next coordinator drops it.
    detail::ControlView view(detail::Segment::open(
        detail::control_name(name), detail::SegmentKind::control, detail::kLayoutVersion));
    const std::int64_t a = detail::find_entry(view, detail::Table::channels, "a");
    ASSERT_GE(a, 0);
    const std::uint32_t first =
        view.entry(detail::Table::channels, static_cast<std::uint32_t>(a)).first;
    ASSERT_NE(first, detail::kNoNode);
    view.node(first - 1).client = view.limits().max_clients - 1;
  }
  daemon = std::make_unique<test::Daemon>(name);
  EXPECT_EQ(bus.publish("a", "after"), 0U);
}

// Publishers index the route versions with their own copy of the geometry, made from the
// limits: a header that places them elsewhere is refused, not followed.
TEST(RouteVersionsHeader, ABusThatPlacesThemOtherwiseIsRefused) {
  test::Daemon daemon(test::unique_bus("route-header"));
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  detail::BusHeader& h = view.header();
  ASSERT_TRUE(test::pause_child(daemon.pid()));  // or it repairs the header at once
  const std::vector<std::function<void(bool)>> overwrites = {
      [&h, was = h.route_buckets](bool on) { h.route_buckets = on ? was * 2 : was; },
      [&h, was = h.route_versions_offset](bool on) {
        h.route_versions_offset = on ? was + 64 : was;
      },
  };
  for (const auto& overwrite : overwrites) {
    overwrite(true);
    try {
      (void)Bus::connect(daemon.bus());
      ADD_FAILURE() << "connected to a bus with misplaced route versions";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::bad_segment) << e.what();
    }
    overwrite(false);
  }
  ASSERT_EQ(::kill(daemon.pid(), SIGCONT), 0);
  EXPECT_NO_THROW((void)Bus::connect(daemon.bus()));
}

}  // namespace
}  // namespace shmcast
