// shmcast-bench's loaned publish paths, as bench/loan_sweep.sh runs them. Counted runs only: a
// loaned message waits for room in the pool instead of being dropped, so every one arrives.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "integration/run_command.hpp"

namespace {

using shmcast::test::join;
using shmcast::test::run;

// The integer after "name": in a JSON report, if there is one.
std::optional<std::uint64_t> json_field(const std::string& json, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + name + "\":([0-9]+)"))) return std::nullopt;
  return std::stoull(m[1].str());
}

std::string bench(std::vector<std::string> args) {
  args.insert(args.begin(), std::string(SHMCAST_BIN_DIR) + "/shmcast-bench");
  args.emplace_back("--json");
  const auto r = run(args);
  EXPECT_EQ(r.status, 0) << join(args) << "\n" << r.err;
  return r.out;
}

TEST(ShmcastBench, LoanedMessagesLargerThanAnyRingReachEverySubscriber) {
  // 1 MiB payloads through the default 1 MiB rings: only their descriptors travel there, and
  // 300 of them fill the 64 MiB pool several times over.
  const std::string json = bench({"--scenario", "fanout-10", "--subscribers", "3", "--count", "300",
                                  "--payload", "1048576", "--fill", "--publish", "loan"});
  EXPECT_NE(json.find("\"transport\":\"shmcast-loan\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"fill\":true"), std::string::npos) << json;
  EXPECT_EQ(json_field(json, "expected"), 900U) << json;
  EXPECT_EQ(json_field(json, "received"), 900U) << json;
  EXPECT_EQ(json_field(json, "dropped"), 0U) << json;
}

TEST(ShmcastBench, CopiesIntoLoansReachEverySubscriber) {
  const std::string json = bench({"--scenario", "fanout-10", "--subscribers", "2", "--count", "500",
                                  "--payload", "100000", "--publish", "loan-copy"});
  EXPECT_NE(json.find("\"transport\":\"shmcast-loan-copy\""), std::string::npos) << json;
  EXPECT_EQ(json_field(json, "received"), 1000U) << json;
}

TEST(ShmcastBench, LoanedLatencyRunSamplesEveryMessage) {
  const std::string json = bench({"--scenario", "latency-spin", "--seconds", "0.2", "--payload",
                                  "4194304", "--fill", "--publish", "loan"});
  const std::uint64_t received = json_field(json, "received").value_or(0);
  EXPECT_GT(received, 0U) << json;
  EXPECT_EQ(json_field(json, "samples"), received) << json;
}

TEST(ShmcastBench, PingPongRefusesWhatItCannotDo) {
  const std::string program = std::string(SHMCAST_BIN_DIR) + "/shmcast-bench";
  const auto loan = run({program, "--scenario", "pingpong-spin", "--publish", "loan"});
  EXPECT_EQ(loan.status, 2);
  EXPECT_NE(loan.err.find("drop --publish"), std::string::npos) << loan.err;
  const auto fill = run({program, "--scenario", "pingpong-spin", "--fill"});
  EXPECT_EQ(fill.status, 2);
  EXPECT_NE(fill.err.find("drop --fill"), std::string::npos) << fill.err;
}

}  // namespace
