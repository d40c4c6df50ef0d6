// The arguments of the `shmcast` command line client: options before the command, and every
// word after it a channel, pattern or message taken byte for byte, as redis-cli takes it.

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/cli_support.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;

// Names a CLI parser could take for options or lists.
const std::vector<std::string> kTrickyNames = {"[x]", "[]", "a[b]",   "[a,b]", "-x", "--count",
                                               "0",   "",   "--help", "-",     "--", "-h"};

TEST(CliSubscribe, ArgumentsAfterTheCommandAreVerbatim) {
  Daemon daemon;
  std::vector<std::string> args{"--count", "1", "subscribe"};
  args.insert(args.end(), kTrickyNames.begin(), kTrickyNames.end());
  Command sub(shm(daemon.bus(), args));
  sub.close_stdin();
  const std::string confirmed = confirmations("subscribe", kTrickyNames);
  ASSERT_TRUE(sub.read_until_size(confirmed.size())) << sub.out() << sub.err();
  EXPECT_EQ(sub.out(), confirmed);

  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numsub", "[]", "-x", "", "x", "a"}),
            "[]\n1\n-x\n1\n\n1\nx\n0\na\n0\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "[a,b]", "--count"}), "1\n");
  EXPECT_EQ(sub.wait(10s), 0) << sub.err();
  EXPECT_EQ(sub.out(), confirmed + message("[a,b]", "--count"));
  EXPECT_EQ(sub.err(), "");
}

TEST(CliPsubscribe, ArgumentsAfterTheCommandAreVerbatim) {
  Daemon daemon;
  const std::vector<std::string> patterns{"[x]", "-*", "[a,b]", "--timeout", "[]*"};
  std::vector<std::string> args{"--count", "2", "psubscribe"};
  args.insert(args.end(), patterns.begin(), patterns.end());
  Command psub(shm(daemon.bus(), args));
  psub.close_stdin();
  const std::string confirmed = confirmations("psubscribe", patterns);
  ASSERT_TRUE(psub.read_until_size(confirmed.size())) << psub.out() << psub.err();
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numpat"}), "5\n");

  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "x", "one"}), "1\n");     // [x]
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "-y", "--two"}), "1\n");  // -*
  EXPECT_EQ(psub.wait(10s), 0) << psub.err();
  EXPECT_EQ(psub.out(), confirmed + pmessage("[x]", "x", "one") + pmessage("-*", "-y", "--two"));
}

/// A bad option value: exit status 2, nothing on stdout, and `line` alone on stderr.
void expect_refused(const std::vector<std::string>& args, const std::string& line) {
  SCOPED_TRACE(join(args));
  const Result r = run(shm(unique_bus("values"), args));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "shmcast: " + line + ": see shmcast --help\n");
}

TEST(CliErrors, BadOptionValuesAreOneShortLine) {
  expect_refused({"--count", "0", "subscribe", "news"},
                 "--count must be a whole number >= 1, got '0'");
  expect_refused({"--count", "-3", "subscribe", "news"},
                 "--count must be a whole number >= 1, got '-3'");
  expect_refused({"--count", "1.5", "psubscribe", "n*"},
                 "--count must be a whole number >= 1, got '1.5'");
  expect_refused({"--count", "99999999999999999999999", "subscribe", "news"},
                 "--count must be a whole number >= 1, got '99999999999999999999999'");
  expect_refused({"--timeout", "0", "subscribe", "news"},
                 "--timeout must be a number of seconds > 0 and at most 1000000000, got '0'");
  expect_refused({"--timeout", "inf", "subscribe", "news"},
                 "--timeout must be a number of seconds > 0 and at most 1000000000, got 'inf'");
  expect_refused({"--timeout", "1e300", "subscribe", "news"},
                 "--timeout must be a number of seconds > 0 and at most 1000000000, got '1e300'");
  expect_refused({"-i", "-1", "-r", "2", "publish", "a", "b"},
                 "-i must be a number of seconds from 0 to 1000000000, got '-1'");
  expect_refused({"-r", "twice", "publish", "a", "b"},
                 "-r must be a whole number (negative: until interrupted), got 'twice'");
  expect_refused({"--count", std::string(100, '9'), "subscribe", "news"},
                 "--count must be a whole number >= 1, got '" + std::string(32, '9') + "...'");
  expect_refused({"--count", "1", "publish", "a", "b"},
                 "--count applies to subscribe and psubscribe only");
  expect_refused({"--timeout", "1", "pubsub", "numpat"},
                 "--timeout applies to subscribe and psubscribe only");
}

}  // namespace
}  // namespace shmcast::test
