// The coordinator's budget of repair lines: a burst per kind, then one line per interval, and
// the count of what was left out on the next line let through.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "coordinator.hpp"

namespace shmcast::daemon {
namespace {

using Clock = std::chrono::steady_clock;

TEST(RepairLog, ABurstPerKindThenOneLinePerIntervalWithTheCountLeftOut) {
  RepairLog log;
  const Clock::time_point start{};
  for (std::uint32_t i = 0; i < RepairLog::kBurst; ++i) {
    const auto line = log.admit("nodes", "repaired " + std::to_string(i), start);
    ASSERT_TRUE(line.has_value()) << i;
    EXPECT_EQ(*line, "repaired " + std::to_string(i));
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(log.admit("nodes", "left out", start).has_value());
  // Another kind has a budget of its own.
  EXPECT_EQ(log.admit("version", "other kind", start), std::optional<std::string>("other kind"));

  const auto almost = start + RepairLog::kInterval - std::chrono::milliseconds(1);
  EXPECT_FALSE(log.admit("nodes", "left out", almost).has_value());
  const auto later = start + RepairLog::kInterval;
  EXPECT_EQ(log.admit("nodes", "again", later),
            std::optional<std::string>("again (6 more like this were not logged before it)"));
  EXPECT_FALSE(log.admit("nodes", "left out", later).has_value());
  // A long quiet spell gives back the whole burst, and no more.
  const auto much_later = later + 100 * RepairLog::kInterval;
  EXPECT_EQ(log.admit("nodes", "after", much_later),
            std::optional<std::string>("after (1 more like this were not logged before it)"));
  for (std::uint32_t i = 1; i < RepairLog::kBurst; ++i) {
    EXPECT_TRUE(log.admit("nodes", "burst", much_later).has_value()) << i;
  }
  EXPECT_FALSE(log.admit("nodes", "spent", much_later).has_value());
}

}  // namespace
}  // namespace shmcast::daemon
