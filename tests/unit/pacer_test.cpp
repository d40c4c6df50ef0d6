#include "pacer.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>

namespace shmcast {
namespace {

using detail::kPaceMargin;
using detail::Pacer;

constexpr std::int64_t kUs = 1000;
constexpr std::int64_t kMs = 1000 * kUs;
constexpr std::int64_t kStart = 1'000'000 * kMs;  // any steady-clock time well past 0

// Feeds `count` arrivals `gap` apart from `from`; returns the last one's time.
std::int64_t feed(Pacer& pacer, std::int64_t from, std::int64_t gap, int count) {
  std::int64_t t = from;
  for (int i = 0; i < count; ++i) {
    pacer.arrived(t);
    if (i + 1 < count) t += gap;
  }
  return t;
}

// Feeds kArrivals arrivals on a 1 ms grid from kStart, the odd ones `late` late; returns the
// grid time of the last.
std::int64_t feed_two_modes(Pacer& pacer, std::int64_t late) {
  std::int64_t grid = kStart;
  for (int i = 0; i < Pacer::kArrivals; ++i) {
    pacer.arrived(grid + (i % 2 == 1 ? late : 0));
    if (i + 1 < Pacer::kArrivals) grid += kMs;
  }
  return grid;
}

TEST(Pacer, NeedsAFullRowOfArrivalsBeforeItPlans) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kArrivals - 1);
  EXPECT_FALSE(pacer.plan(last + 1));
  pacer.arrived(last + kMs);
  EXPECT_TRUE(pacer.plan(last + kMs + 1));
}

TEST(Pacer, WakesTheLeadBeforeASteadyRecordIsDueAndSpinsPastIt) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kArrivals);
  const auto plan = pacer.plan(last + 10 * kUs);
  ASSERT_TRUE(plan);
  const std::int64_t due = last + kMs;
  EXPECT_EQ(plan->wake_ns, due - pacer.lead_ns());
  EXPECT_EQ(plan->spin_until_ns, due + kPaceMargin.count());
  EXPECT_GT(pacer.lead_ns(), 0);
}

TEST(Pacer, CoversTwoModesOfLatenessWithOneBand) {
  Pacer pacer;
  // Every other record 20 us late: the period is still 1 ms, and the window spans the 20 us.
  const std::int64_t last = feed_two_modes(pacer, 20 * kUs);
  const auto plan = pacer.plan(last);
  ASSERT_TRUE(plan);
  const std::int64_t due = last + kMs;
  EXPECT_EQ(plan->wake_ns, due - pacer.lead_ns());
  EXPECT_EQ(plan->spin_until_ns, due + 20 * kUs + kPaceMargin.count());
}

TEST(Pacer, DoesNotPlanForUnsteadyArrivals) {
  Pacer pacer;
  // Arrivals at 0, 1, 2, 3, 5, 6, 7 and 8 ms: one gap of 2 ms.
  std::int64_t t = feed(pacer, kStart, kMs, 4);
  t = feed(pacer, t + 2 * kMs, kMs, 4);
  EXPECT_FALSE(pacer.plan(t));
  // It plans again once the last kArrivals (5 to 12 ms) are steady.
  t = feed(pacer, t + kMs, kMs, 3);
  EXPECT_FALSE(pacer.plan(t));
  pacer.arrived(t + kMs);
  EXPECT_TRUE(pacer.plan(t + kMs));
}

TEST(Pacer, LeavesShortAndLongGapsAlone) {
  Pacer short_gaps;
  std::int64_t t = feed(short_gaps, kStart, 50 * kUs, Pacer::kArrivals);
  EXPECT_FALSE(short_gaps.plan(t)) << "gaps under 100 us are the spinning path's";
  Pacer long_gaps;
  t = feed(long_gaps, kStart, 2'000 * kMs, Pacer::kArrivals);
  EXPECT_FALSE(long_gaps.plan(t));
}

TEST(Pacer, RefusesAWindowBeyondItsSpinBudget) {
  Pacer pacer;
  // A band of 40 us: within an eighth of the period, but it alone fills the 40 us budget.
  const std::int64_t last = feed_two_modes(pacer, 40 * kUs);
  EXPECT_FALSE(pacer.plan(last));
}

TEST(Pacer, ForgetsThePaceWhenAnArrivalIsUnknownOrOutOfOrder) {
  Pacer pacer;
  std::int64_t t = feed(pacer, kStart, kMs, Pacer::kArrivals);
  ASSERT_TRUE(pacer.plan(t));
  pacer.arrived(std::nullopt);
  EXPECT_FALSE(pacer.plan(t));
  t = feed(pacer, t + kMs, kMs, Pacer::kArrivals);
  ASSERT_TRUE(pacer.plan(t));
  pacer.arrived(t - kUs);  // before the last one: a stamp nobody honest wrote
  EXPECT_FALSE(pacer.plan(t));
}

TEST(Pacer, NoPlanOnceTheWindowHasPassed) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kArrivals);
  const auto plan = pacer.plan(last);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(pacer.plan(plan->spin_until_ns - 1));
  EXPECT_FALSE(pacer.plan(plan->spin_until_ns));
}

TEST(Pacer, LearnsHowLateTheTimerWakes) {
  Pacer pacer;
  const std::int64_t first = pacer.lead_ns();
  // Timed wake-ups that come 1 us late bring the lead down, slowly.
  for (int i = 0; i < 100; ++i) pacer.woke(kStart, kStart + kUs);
  const std::int64_t low = pacer.lead_ns();
  EXPECT_LT(low, first);
  EXPECT_GE(low, kUs + kPaceMargin.count());
  EXPECT_LE(low, kUs + kPaceMargin.count() + kUs / 4);
  // One that comes 20 us late raises it at once, by half the difference.
  pacer.woke(kStart, kStart + 20 * kUs);
  EXPECT_GE(pacer.lead_ns(), low + 9 * kUs);
  // However late the timer, the lead stays within its bound.
  for (int i = 0; i < 20; ++i) pacer.woke(kStart, kStart + 500 * kUs);
  EXPECT_EQ(pacer.lead_ns(), detail::kLongestLead.count());
}

TEST(Pacer, GivesUpLeadBeforeItGivesUpTheWindow) {
  Pacer pacer;
  for (int i = 0; i < 20; ++i) pacer.woke(kStart, kStart + 500 * kUs);  // the longest lead
  // A band of 20 us: it and the margin take 22 us of the 40 us budget, the lead the rest.
  const std::int64_t last = feed_two_modes(pacer, 20 * kUs);
  const auto plan = pacer.plan(last);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->spin_until_ns - plan->wake_ns, detail::kPacedSpinBudget.count());
}

}  // namespace
}  // namespace shmcast
