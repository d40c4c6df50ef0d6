// The programs bench/compare.sh puts next to shmcast-bench: redis-bench-pubsub against a private
// redis-server, and uds-bench with its own fan-out server. Short runs only: a timed run must
// deliver something, and a --count run must deliver every message exactly once per subscriber.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/run_command.hpp"

namespace {

using namespace std::chrono_literals;
using shmcast::test::Command;
using shmcast::test::join;
using shmcast::test::run;

std::string program(const std::string& name) {
  return std::string(SHMCAST_BIN_DIR) + "/" + name;
}

bool redis_installed() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && ::access((dir + "/redis-server").c_str(), X_OK) == 0) return true;
  }
  return false;
}

// The integer after "name": in a JSON report, if there is one.
std::optional<std::uint64_t> json_field(const std::string& json, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + name + "\":([0-9]+)"))) return std::nullopt;
  return std::stoull(m[1].str());
}

// A private redis-server on a unix socket, with nothing written to disk and no pub/sub
// output-buffer limit (as bench/compare.sh starts it), stopped by its pid.
class RedisServer {
 public:
  explicit RedisServer(const std::vector<std::string>& extra = {}) {
    // A directory of its own: nobody else can put a socket of that name in the way.
    std::string dir = fmt::format("/tmp/shmcast-compare-test-{}-XXXXXX", getpid());
    if (::mkdtemp(dir.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = dir;
    socket_ = dir_ + "/redis.sock";
    std::vector<std::string> argv{
        "redis-server", "--port", "0", "--unixsocket", socket_, "--unixsocketperm",
        "700",          "--save", "",  "--appendonly", "no",    "--client-output-buffer-limit",
        "pubsub 0 0 0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_ = std::make_unique<Command>(std::move(argv));
    server_->close_stdin();
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    socket_.copy(address.sun_path, sizeof address.sun_path - 1);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
      ::close(fd);
      if (up) return;
      std::this_thread::sleep_for(10ms);
    }
    const std::string out = server_->out();
    server_.reset();
    ::unlink(socket_.c_str());
    ::rmdir(dir_.c_str());
    throw std::runtime_error("redis-server did not start: " + out);
  }
  ~RedisServer() {
    server_->signal(SIGTERM);
    (void)server_->wait(10s);
    ::unlink(socket_.c_str());
    ::rmdir(dir_.c_str());
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  [[nodiscard]] const std::string& socket() const { return socket_; }

 private:
  std::string dir_;
  std::string socket_;
  std::unique_ptr<Command> server_;
};

// Runs a benchmark with --json; returns its report, after checking it succeeded.
std::string report(std::vector<std::string> argv) {
  argv.emplace_back("--json");
  const auto r = run(argv);
  EXPECT_EQ(r.status, 0) << join(argv) << "\n" << r.err;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one JSON line: " << r.out;
  return r.out;
}

TEST(RedisBenchPubsub, TimedRunDelivers) {
  if (!redis_installed()) GTEST_SKIP() << "redis-server not installed";
  RedisServer redis;
  const std::string json = report({program("redis-bench-pubsub"), "--socket", redis.socket(),
                                   "--scenario", "single", "--seconds", "0.2"});
  EXPECT_GT(json_field(json, "received").value_or(0), 0U) << json;
  EXPECT_GT(json_field(json, "publishes_per_s").value_or(0), 0U) << json;
  EXPECT_GT(json_field(json, "p50").value_or(0), 0U) << json;
}

TEST(RedisBenchPubsub, CountRunDeliversEveryMessageToEverySubscriber) {
  if (!redis_installed()) GTEST_SKIP() << "redis-server not installed";
  RedisServer redis;
  const std::string json =
      report({program("redis-bench-pubsub"), "--socket", redis.socket(), "--scenario", "fanout-10",
              "--subscribers", "3", "--publishers", "2", "--count", "500", "--pipeline", "16"});
  EXPECT_EQ(json_field(json, "expected"), 3000U) << json;
  EXPECT_EQ(json_field(json, "received"), 3000U) << json;
}

TEST(RedisBenchPubsub, RunsWhenConfigIsRefused) {
  if (!redis_installed()) GTEST_SKIP() << "redis-server not installed";
  RedisServer redis({"--rename-command", "CONFIG", ""});
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
  std::string tmp = fmt::format("/tmp/shmcast-compare-test-{}-XXXXXX", getpid());
  ASSERT_NE(::mkdtemp(tmp.data()), nullptr);
  std::vector<pid_t> children;
  {
    Command bench({"env", "TMPDIR=" + tmp, program("uds-bench"), "--scenario", "single",
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
  std::filesystem::remove_all(tmp);
}

TEST(UdsBench, RefusesAnUnknownScenario) {
  const auto r = run({program("uds-bench"), "--scenario", "channels-100k"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown scenario"), std::string::npos) << r.err;
}

}  // namespace
