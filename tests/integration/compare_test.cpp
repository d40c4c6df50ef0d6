// The programs bench/compare.sh puts next to shmcast-bench: redis-bench-pubsub against a private
// redis-server, and uds-bench with its own fan-out server. Short runs only: a timed run must
// deliver something, and a --count run must deliver every message exactly once per subscriber.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/redis_server.hpp"
#include "integration/run_command.hpp"

namespace {

using namespace std::chrono_literals;
using shmcast::test::Command;
using shmcast::test::join;
using shmcast::test::on_path;
using shmcast::test::RedisServer;
using shmcast::test::run;

std::string program(const std::string& name) {
  return std::string(SHMCAST_BIN_DIR) + "/" + name;
}

// The integer after "name": in a JSON report, if there is one.
std::optional<std::uint64_t> json_field(const std::string& json, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + name + "\":([0-9]+)"))) return std::nullopt;
  return std::stoull(m[1].str());
}

// A private redis-server as bench/compare.sh starts it: no pub/sub output-buffer limit.
RedisServer bench_redis(std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"--client-output-buffer-limit", "pubsub 0 0 0"});
  return RedisServer(std::move(extra));
}

// Runs a benchmark with --json; returns its report, after checking it succeeded.
std::string report(std::vector<std::string> argv) {
  argv.emplace_back("--json");
  const auto r = run(argv);
  EXPECT_EQ(r.status, 0) << join(argv) << "\n" << r.err;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one JSON line: " << r.out;
  return r.out;
}

TEST(RedisBenchPubsub, TimedRunDelivers) {
  if (!on_path("redis-server")) GTEST_SKIP() << "redis-server not installed";
  const RedisServer redis = bench_redis();
  const std::string json = report({program("redis-bench-pubsub"), "--socket", redis.socket(),
                                   "--scenario", "single", "--seconds", "0.2"});
  EXPECT_GT(json_field(json, "received").value_or(0), 0U) << json;
  EXPECT_GT(json_field(json, "publishes_per_s").value_or(0), 0U) << json;
  EXPECT_GT(json_field(json, "p50").value_or(0), 0U) << json;
}

TEST(RedisBenchPubsub, CountRunDeliversEveryMessageToEverySubscriber) {
  if (!on_path("redis-server")) GTEST_SKIP() << "redis-server not installed";
  const RedisServer redis = bench_redis();
  const std::string json =
      report({program("redis-bench-pubsub"), "--socket", redis.socket(), "--scenario", "fanout-10",
              "--subscribers", "3", "--publishers", "2", "--count", "500", "--pipeline", "16"});
  EXPECT_EQ(json_field(json, "expected"), 3000U) << json;
  EXPECT_EQ(json_field(json, "received"), 3000U) << json;
}

TEST(RedisBenchPubsub, RunsWhenConfigIsRefused) {
  if (!on_path("redis-server")) GTEST_SKIP() << "redis-server not installed";
  const RedisServer redis = bench_redis({"--rename-command", "CONFIG", ""});
  const std::string json =
      report({program("redis-bench-pubsub"), "--socket", redis.socket(), "--scenario", "fanout-10",
              "--subscribers", "2", "--publishers", "1", "--count", "100"});
  EXPECT_EQ(json_field(json, "received"), 200U) << json;
}

TEST(UdsBench, TimedRunDelivers) {
  const std::string json =
      report({program("uds-bench"), "--scenario", "single", "--seconds", "0.2"});
  EXPECT_GT(json_field(json, "received").value_or(0), 0U) << json;
  EXPECT_GT(json_field(json, "p50").value_or(0), 0U) << json;
  // The server's CPU time counts, and the whole run's is more than the server's.
  const std::uint64_t server = json_field(json, "server_cpu_ns_per_delivery").value_or(0);
  EXPECT_GT(server, 0U) << json;
  EXPECT_GT(json_field(json, "cpu_ns_per_delivery").value_or(0), server) << json;
}

TEST(UdsBench, SparseRunPacesAndSamplesEveryMessage) {
  const std::string json =
      report({program("uds-bench"), "--scenario", "sparse", "--seconds", "0.5", "--rate", "200"});
  const std::uint64_t received = json_field(json, "received").value_or(0);
  // 200 messages/s for 0.5 s: about 100, however busy the machine, never thousands.
  EXPECT_GT(received, 50U) << json;
  EXPECT_LE(received, 101U) << json;
  EXPECT_EQ(json_field(json, "samples"), received) << json;
  EXPECT_GT(json_field(json, "p90").value_or(0), 0U) << json;
}

TEST(UdsBench, IdleRunReportsTheCpuShareOfWaiting) {
  const std::string json = report(
      {program("uds-bench"), "--scenario", "idle", "--subscribers", "20", "--seconds", "0.3"});
  EXPECT_EQ(json_field(json, "subscribers"), 20U) << json;
  EXPECT_EQ(json_field(json, "received"), 0U) << json;
  EXPECT_NE(json.find("\"subscribers_cpu_percent\":"), std::string::npos) << json;
  EXPECT_NE(json.find("\"server_cpu_percent\":"), std::string::npos) << json;
}

TEST(UdsBench, CountRunDeliversEveryMessageToEverySubscriber) {
  const std::string json = report(
      {program("uds-bench"), "--scenario", "fanout-10", "--publishers", "2", "--count", "1000"});
  EXPECT_EQ(json_field(json, "expected"), 20000U) << json;
  EXPECT_EQ(json_field(json, "received"), 20000U) << json;
}

TEST(UdsBench, PingPongMeasuresRoundTrips) {
  const std::string json =
      report({program("uds-bench"), "--scenario", "pingpong-block", "--seconds", "0.2"});
  EXPECT_GT(json_field(json, "received").value_or(0), 0U) << json;
}

// Whether `pid` is gone or only a zombie waiting for init to reap it.
bool dead(pid_t pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && line.substr(close + 2, 1) == "Z";
}

TEST(UdsBench, AKilledRunLeavesNoProcessesBehind) {
  const shmcast::test::TempDir tmp("compare-test");
  std::vector<pid_t> children;
  {
    Command bench({"env", "TMPDIR=" + tmp.path(), program("uds-bench"), "--scenario", "single",
                   "--seconds", "60", "--wait", "block"});
    bench.close_stdin();
    // The server, the subscriber and the publisher.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (children.size() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      std::ifstream list(fmt::format("/proc/{0}/task/{0}/children", bench.pid()));
      children.clear();
      for (pid_t child = 0; list >> child;) children.push_back(child);
    }
    ASSERT_EQ(children.size(), 3U) << bench.err();
    bench.signal(SIGKILL);
    EXPECT_EQ(bench.wait(10s), 128 + SIGKILL);
  }
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  for (const pid_t child : children) {
    while (!dead(child) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(dead(child)) << "child " << child << " outlived uds-bench";
    if (!dead(child)) ::kill(child, SIGKILL);
  }
}

TEST(UdsBench, RefusesAnUnknownScenario) {
  const auto r = run({program("uds-bench"), "--scenario", "channels-100k"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown scenario"), std::string::npos) << r.err;
}

}  // namespace
