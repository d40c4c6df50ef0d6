// The examples as a newcomer runs them: each against its own shmcastd, to completion, with the
// exit status and the output the example promises.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "bus_fixture.hpp"

namespace shmcast::test {
namespace {

using std::chrono::seconds;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The wait status of `pid` once it exits; nullopt (and the process killed) if it runs past
/// `limit`, so a hung example fails its test instead of stalling the suite.
std::optional<int> wait_exit(pid_t pid, std::chrono::steady_clock::duration limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (std::chrono::steady_clock::now() > deadline) {
      stop(pid, SIGKILL);
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

/// Waits until the file `log` contains `text` (at most 10 s); true if it does.
bool wait_for_output(const std::string& log, const std::string& text) {
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (read_file(log).find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct ExampleRun {
  std::optional<int> status;
  std::string output;  ///< stdout and stderr together
};

/// Runs build/bin/example-<name> --bus <bus> to completion.
ExampleRun run_example(const std::string& name, const std::string& bus) {
  const std::string log = fmt::format("/tmp/example-{}.log", bus);
  const pid_t pid = spawn("example-" + name, {"--bus", bus}, log);
  ExampleRun run{wait_exit(pid, seconds(60)), read_file(log)};
  ::unlink(log.c_str());
  return run;
}

void expect_success(const ExampleRun& run, const std::string& expected_line) {
  ASSERT_TRUE(run.status.has_value()) << "still running after 60 s:\n" << run.output;
  EXPECT_TRUE(WIFEXITED(*run.status) && WEXITSTATUS(*run.status) == 0) << run.output;
  EXPECT_NE(run.output.find(expected_line), std::string::npos)
      << "no '" << expected_line << "' in:\n"
      << run.output;
}

// The README's example: its bus comes from $SHMCAST_BUS, as the README says.
TEST(Examples, HelloReadsWhatItPublished) {
  Daemon daemon(unique_bus("hello"));
  ASSERT_EQ(setenv("SHMCAST_BUS", daemon.bus().c_str(), 1), 0);
  const std::string log = fmt::format("/tmp/example-{}.log", daemon.bus());
  const pid_t pid = spawn("example-hello", {}, log);
  unsetenv("SHMCAST_BUS");
  const ExampleRun run{wait_exit(pid, seconds(60)), read_file(log)};
  ::unlink(log.c_str());
  expect_success(run,
                 "subscribe news \npsubscribe user:* \nmessage news hello\npmessage user:42 hi\n");
}

TEST(Examples, NotificationsReachOnlyTheirUser) {
  Daemon daemon(unique_bus("notif"));
  const ExampleRun run = run_example("notifications", daemon.bus());
  expect_success(run, "user 3 received 3 notification(s) on user:3:notifications");
  expect_success(run, "notifications: every user got exactly their own notifications");
}

TEST(Examples, ChatDeliversEscapedJsonToEveryMember) {
  Daemon daemon(unique_bus("chat"));
  const ExampleRun run = run_example("chat", daemon.bus());
  expect_success(run, R"({"room":"lobby","user":"bob","text":"hey alice, did you see the )"
                      R"(\"release\" notes?"})");
  expect_success(run, R"(\u0007 is escaped as \\u0007)");
  expect_success(run, "chat: alice and bob each received all 4 messages intact");
}

TEST(Examples, CacheInvalidationReachesEveryCacheProcess) {
  Daemon daemon(unique_bus("cache"));
  const ExampleRun run = run_example("cache_invalidation", daemon.bus());
  expect_success(run, "writer: invalidated product:7, reached 3 caches");
  expect_success(run, "dropped product:3 product:7; 8 keys left");
  expect_success(run, "cache_invalidation: all 3 caches dropped the stale keys");
}

TEST(Examples, LeaderboardKeepsTheTopFive) {
  Daemon daemon(unique_bus("board"));
  const ExampleRun run = run_example("leaderboard", daemon.bus());
  expect_success(run, "leaderboard: 30 updates on game:scores, top 5:");
  expect_success(run, "  1. hal 97\n  2. ada 94\n  3. bob 84\n  4. cy 74\n  5. dee 57\n");
}

TEST(Examples, FanoutReachesEverySubscriberProcess) {
  Daemon daemon(unique_bus("fanout"));
  const ExampleRun run = run_example("fanout", daemon.bus());
  expect_success(run, "publisher: 1000 messages, 4000 deliveries");
  expect_success(run, "fanout: all 4 subscribers got all 1000 messages");
}

TEST(Examples, PatternsMatchEveryUsersAlerts) {
  Daemon daemon(unique_bus("patterns"));
  const ExampleRun run = run_example("patterns", daemon.bus());
  expect_success(run, "publish user:42:notifications \"you have mail\" -> 0");
  expect_success(run, "pmessage user:*:alerts user:7:alerts password changed");
  expect_success(run, "patterns: user:*:alerts matched 3 of 5 channels");
}

TEST(Examples, LargeFramesReachBothSubscribersIntact) {
  Daemon daemon(unique_bus("frames"));
  const ExampleRun run = run_example("large_frames", daemon.bus());
  expect_success(run, "publisher: 50 frames of 4194304 bytes, 100 deliveries");
  expect_success(run, "subscriber 1: 50 of 50 frames, every byte as drawn, in order");
  expect_success(run, "subscriber 2: 50 of 50 frames, every byte as drawn, in order");
  expect_success(run, "large_frames: both subscribers checked all 50 frames");
  // Every frame went back to the pool once both had read it, and the pool left with its
  // publisher.
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (!inspect(daemon.bus()).pools.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(inspect(daemon.bus()).pools.empty());
}

// Started by hand rather than with spawn(): its stdin is a pipe the test writes a line into.
TEST(Examples, EventLoopMultiplexesTheSubscriberATimerAndStdin) {
  Daemon daemon(unique_bus("evloop"));
  const std::string log = fmt::format("/tmp/example-{}.log", daemon.bus());
  int input[2];
  ASSERT_EQ(::pipe2(input, O_CLOEXEC), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || dup2(input[0], 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(127);
    const std::string program = bin_dir() + "/example-event_loop";
    execl(program.c_str(), program.c_str(), "--bus", daemon.bus().c_str(), "--count", "3000",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(input[0]);
  const std::string line = "typed on stdin\n";
  EXPECT_EQ(::write(input[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
  ::close(input[1]);
  const ExampleRun run{wait_exit(pid, seconds(60)), read_file(log)};
  ::unlink(log.c_str());
  expect_success(run, "subscribed to ticks\nsubscribed to chat\n");
  expect_success(run, "chat: typed on stdin\n");
  expect_success(run, "timer: ");
  expect_success(run, "event_loop: received all 3000 messages in order in ");
}

// What `systemctl restart shmcastd` does to a running subscriber: nothing it would notice.
TEST(Examples, SurviveRestartReceivesBeforeDuringAndAfterACoordinatorRestart) {
  auto daemon = std::make_unique<Daemon>(unique_bus("survive"));
  const std::string name = daemon->bus();
  const std::string log = fmt::format("/tmp/example-{}.log", name);
  const pid_t example =
      spawn("example-survive_restart", {"--bus", name, "--count", "6", "--timeout", "30"}, log);
  // The example prints this line once its subscription is in force. Each phase waits until the
  // example has printed the previous one, so it receives each message in the phase it was sent.
  EXPECT_TRUE(wait_for_output(log, "subscribed to events"));
  {
    Bus bus = Bus::connect(name);
    EXPECT_EQ(bus.publish("events", "before-1"), 1U);
    EXPECT_EQ(bus.publish("events", "before-2"), 1U);
    EXPECT_TRUE(wait_for_output(log, "received before-2"));
    daemon.reset();  // SIGTERM: the bus stays, since clients are attached
    EXPECT_EQ(bus.publish("events", "during-1"), 1U);
    EXPECT_EQ(bus.publish("events", "during-2"), 1U);
    EXPECT_TRUE(wait_for_output(log, "received during-2"));
    daemon = std::make_unique<Daemon>(name);  // adopts the bus
    EXPECT_EQ(bus.publish("events", "after-1"), 1U);
    EXPECT_EQ(bus.publish("events", "after-2"), 1U);
  }
  const std::optional<int> status = wait_exit(example, seconds(40));
  const std::string output = read_file(log);
  ::unlink(log.c_str());
  ASSERT_TRUE(status.has_value()) << "still running after 40 s:\n" << output;
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output;
  for (const char* line :
       {"received before-1 (coordinator running)", "received during-1 (coordinator down)",
        "received after-1 (coordinator running)", "received after-2",
        "survive_restart: received all 6 messages"}) {
    EXPECT_NE(output.find(line), std::string::npos) << "no '" << line << "' in:\n" << output;
  }
}

}  // namespace
}  // namespace shmcast::test
