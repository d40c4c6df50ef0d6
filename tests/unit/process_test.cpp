// The child processes that tests and benchmarks start: what reaches them, what comes back, and
// that a stop ends even a program that ignores SIGTERM.
#include "support/process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace shmcast::testing {
namespace {

using namespace std::chrono_literals;

Options piped() {
  Options options;
  options.in = options.out = options.err = Stream::pipe;
  return options;
}

TEST(Process, InputGoesInAndOutputComesBack) {
  Process cat({"cat"}, piped());
  cat.feed("one\ntwo\n");
  cat.close_stdin();
  ASSERT_TRUE(cat.wait(10s));
  EXPECT_EQ(cat.exit_code(), 0);
  EXPECT_EQ(cat.out(), "one\ntwo\n");
  EXPECT_EQ(cat.err(), "");
}

TEST(Process, EnvironmentSettingsAreAddedOrReplaceInheritedOnes) {
  Options options = piped();
  options.env = {"SHMCAST_PROCESS_TEST=a b", "HOME=/nowhere"};
  Process sh({"sh", "-c", "printf '%s|%s' \"$SHMCAST_PROCESS_TEST\" \"$HOME\""}, options);
  ASSERT_TRUE(sh.wait(10s));
  EXPECT_EQ(sh.out(), "a b|/nowhere");
}

TEST(Process, BothStreamsGoToTheLogInTheOrderWritten) {
  const std::string log = fmt::format("/tmp/shmcast-process-test-{}.log", ::getpid());
  {
    Process sh({"sh", "-c", "echo out; echo err >&2; echo out again"}, output_to(log));
    ASSERT_TRUE(sh.wait(10s));
    EXPECT_EQ(sh.exit_code(), 0);
  }
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  ::unlink(log.c_str());
  EXPECT_EQ(text.str(), "out\nerr\nout again\n");
}

TEST(Process, AProgramThatCannotRunExitsWith127) {
  Process missing({"/nonexistent/shmcast-no-such-program"});
  ASSERT_TRUE(missing.wait(10s));
  EXPECT_EQ(missing.exit_code(), 127);
}

TEST(Process, AFunctionChildExitsWithItsResultOr101IfItThrows) {
  Process returns([] { return 7; });
  Process throws([]() -> int { throw std::runtime_error("expected by the test"); });
  ASSERT_TRUE(returns.wait(10s));
  ASSERT_TRUE(throws.wait(10s));
  EXPECT_EQ(returns.exit_code(), 7);
  EXPECT_EQ(throws.exit_code(), 101);
}

TEST(Process, WaitGivesUpOnAChildThatRunsAndStopEndsItWithSigterm) {
  Process sleeper({"sleep", "30"});
  EXPECT_FALSE(sleeper.wait(50ms));
  EXPECT_TRUE(sleeper.running());
  const int status = sleeper.stop();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
  EXPECT_FALSE(sleeper.running());
}

TEST(Process, StopKillsAChildThatIgnoresSigtermOnceTheGraceIsOver) {
  Options options;
  options.out = Stream::pipe;
  Process stubborn({"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"}, options);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (stubborn.out().find("ready") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the child did not start";
    stubborn.collect(10ms);
  }
  const int status = stubborn.stop(200ms);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

TEST(Process, AReleasedChildIsStoppedByItsPid) {
  pid_t pid = 0;
  {
    Process sleeper({"sleep", "30"});
    pid = sleeper.release();
  }
  EXPECT_EQ(::kill(pid, 0), 0) << "the Process stopped a child it had released";
  const int status = kill_and_reap(pid, SIGTERM);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
}

// The state letter of /proc/PID/stat: 'T' while stopped.
char state_of(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto end_of_name = stat.rfind(')');
  return end_of_name == std::string::npos || end_of_name + 2 >= stat.size() ? '?'
                                                                            : stat[end_of_name + 2];
}

TEST(Process, PauseReturnsOnceTheChildIsStopped) {
  Process sleeper({"sleep", "30"});
  ASSERT_TRUE(pause(sleeper.pid()));
  EXPECT_EQ(state_of(sleeper.pid()), 'T');
  ::kill(sleeper.pid(), SIGCONT);
  sleeper.kill(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(sleeper.status()) && WTERMSIG(sleeper.status()) == SIGKILL);
}

}  // namespace
}  // namespace shmcast::testing
