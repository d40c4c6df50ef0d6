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

TEST(Pacer, NeedsAFullRowOfGapsBeforeItPlans) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kGaps);  // one gap short
  EXPECT_FALSE(pacer.plan(last + 1));
  pacer.arrived(last + kMs);
  EXPECT_TRUE(pacer.plan(last + kMs + 1));
}

TEST(Pacer, WakesTheLeadBeforeASteadyRecordIsDueAndSpinsPastIt) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kGaps + 1);
  const auto plan = pacer.plan(last + 10 * kUs);
  ASSERT_TRUE(plan);
  const std::int64_t due = last + kMs;
  EXPECT_EQ(plan->wake_ns, due - pacer.lead_ns());
  EXPECT_EQ(plan->spin_until_ns, due + kPaceMargin.count());
  EXPECT_GT(pacer.lead_ns(), 0);
}

TEST(Pacer, WidensTheWindowByTheSpreadOfTheGaps) {
  Pacer pacer;
  // Gaps of 1 ms +- 2 us: mean 1 ms, spread 2 us.
  std::int64_t t = kStart;
  pacer.arrived(t);
  for (const std::int64_t gap : {kMs - 2 * kUs, kMs + 2 * kUs, kMs - 2 * kUs, kMs + 2 * kUs}) {
    t += gap;
    pacer.arrived(t);
  }
  const auto plan = pacer.plan(t);
  ASSERT_TRUE(plan);
  const std::int64_t due = t + kMs;
  EXPECT_EQ(plan->wake_ns, due - 2 * kUs - pacer.lead_ns());
  EXPECT_EQ(plan->spin_until_ns, due + 2 * kUs + kPaceMargin.count());
}

TEST(Pacer, DoesNotPlanForUnsteadyGaps) {
  Pacer pacer;
  std::int64_t t = kStart;
  pacer.arrived(t);
  // One gap off by more than an eighth of the mean.
  for (const std::int64_t gap : {kMs, kMs, kMs, 2 * kMs}) {
    t += gap;
    pacer.arrived(t);
  }
  EXPECT_FALSE(pacer.plan(t));
  // Four steady gaps later it plans again.
  t = feed(pacer, t + kMs, kMs, Pacer::kGaps);
  EXPECT_TRUE(pacer.plan(t));
}

TEST(Pacer, LeavesShortAndLongGapsAlone) {
  Pacer short_gaps;
  std::int64_t t = feed(short_gaps, kStart, 50 * kUs, Pacer::kGaps + 1);
  EXPECT_FALSE(short_gaps.plan(t)) << "gaps under 100 us are the spinning path's";
  Pacer long_gaps;
  t = feed(long_gaps, kStart, 2'000 * kMs, Pacer::kGaps + 1);
  EXPECT_FALSE(long_gaps.plan(t));
}

TEST(Pacer, RefusesAWindowBeyondItsSpinBudget) {
  Pacer pacer;
  // 1 ms +- 30 us: within an eighth, but 60 us of spread alone passes the 40 us budget.
  std::int64_t t = kStart;
  pacer.arrived(t);
  for (const std::int64_t gap : {kMs - 30 * kUs, kMs + 30 * kUs, kMs - 30 * kUs, kMs + 30 * kUs}) {
    t += gap;
    pacer.arrived(t);
  }
  EXPECT_FALSE(pacer.plan(t));
}

TEST(Pacer, ForgetsThePaceWhenAnArrivalIsUnknown) {
  Pacer pacer;
  std::int64_t t = feed(pacer, kStart, kMs, Pacer::kGaps + 1);
  ASSERT_TRUE(pacer.plan(t));
  pacer.arrived(std::nullopt);
  EXPECT_FALSE(pacer.plan(t));
  t = feed(pacer, t + kMs, kMs, Pacer::kGaps);  // one short of a full row again
  EXPECT_FALSE(pacer.plan(t));
  pacer.arrived(t + kMs);
  EXPECT_TRUE(pacer.plan(t + kMs));
}

TEST(Pacer, NoPlanOnceTheWindowHasPassed) {
  Pacer pacer;
  const std::int64_t last = feed(pacer, kStart, kMs, Pacer::kGaps + 1);
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
  // 1 ms +- 10 us: the spread and margins take 22 us of the 40 us budget.
  std::int64_t t = kStart;
  pacer.arrived(t);
  for (const std::int64_t gap : {kMs - 10 * kUs, kMs + 10 * kUs, kMs - 10 * kUs, kMs + 10 * kUs}) {
    t += gap;
    pacer.arrived(t);
  }
  const auto plan = pacer.plan(t);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->spin_until_ns - plan->wake_ns, detail::kPacedSpinBudget.count());
}

}  // namespace
}  // namespace shmcast
