// End-to-end tests of the `shmcast` command line client: real shmcastd, real child processes,
// output compared byte for byte. The CliMatchesRedis suite runs the same commands against a
// private redis-server through redis-cli and requires identical output: redis-cli is the
// specification of the format.

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/cli_support.hpp"
#include "integration/redis_server.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// The run failed with `status` and exactly one line on stderr that starts with "shmcast: "
/// and contains every one of `needles`.
void expect_error_line(const Result& r, int status, const std::vector<std::string>& needles) {
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("shmcast: ", 0), 0U) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  for (const auto& needle : needles) EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

// ---- shmcast alone ----------------------------------------------------------------------------

TEST(CliSubscribe, PrintsConfirmationsThenMessagesAndStopsOnSigint) {
  Daemon daemon;
  Command sub(shm(daemon.bus(), {"subscribe", "a", "b"}));
  sub.close_stdin();
  const std::string confirmed = confirmations("subscribe", {"a", "b"});
  ASSERT_TRUE(sub.read_until_size(confirmed.size())) << sub.err();
  EXPECT_EQ(sub.out(), confirmed);

  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "a", "hello"}), "1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "b", "world"}), "1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "c", "nobody"}), "0\n");
  const std::string expected = confirmed + message("a", "hello") + message("b", "world");
  ASSERT_TRUE(sub.read_until_size(expected.size())) << sub.out();
  EXPECT_EQ(sub.out(), expected);

  sub.signal(SIGINT);
  EXPECT_EQ(sub.wait(), 0);
  EXPECT_EQ(sub.out(), expected);
  EXPECT_EQ(sub.err(), "");
  // A clean exit leaves the registry at once: nothing to reap.
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numsub", "a", "b"}), "a\n0\nb\n0\n");
}

TEST(CliPsubscribe, PrintsPmessagesAndStopsOnSigterm) {
  Daemon daemon;
  Command sub(shm(daemon.bus(), {"psubscribe", "n*", "x?"}));
  sub.close_stdin();
  const std::string confirmed = confirmations("psubscribe", {"n*", "x?"});
  ASSERT_TRUE(sub.read_until_size(confirmed.size())) << sub.err();

  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "news", "hi"}), "1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "xy", "yo"}), "1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "xyz", "no"}), "0\n");
  const std::string expected =
      confirmed + pmessage("n*", "news", "hi") + pmessage("x?", "xy", "yo");
  ASSERT_TRUE(sub.read_until_size(expected.size())) << sub.out();

  sub.signal(SIGTERM);
  EXPECT_EQ(sub.wait(), 0);
  EXPECT_EQ(sub.out(), expected);
  EXPECT_EQ(sub.err(), "");
}

TEST(CliSubscribe, CountExitsAfterThatManyMessages) {
  Daemon daemon;
  Command sub(shm(daemon.bus(), {"--count", "2", "subscribe", "a"}));
  sub.close_stdin();
  ASSERT_TRUE(sub.read_until_size(confirmations("subscribe", {"a"}).size())) << sub.err();

  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "a", "one"}), "1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "a", "two"}), "1\n");
  EXPECT_EQ(sub.wait(10s), 0);
  EXPECT_EQ(sub.out(),
            confirmations("subscribe", {"a"}) + message("a", "one") + message("a", "two"));
  EXPECT_EQ(sub.err(), "");
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "a", "three"}), "0\n");
}

TEST(CliSubscribe, TimeoutExitsWithStatusZero) {
  Daemon daemon;
  const auto start = Clock::now();
  Command sub(shm(daemon.bus(), {"--timeout", "1", "subscribe", "a"}));
  sub.close_stdin();
  EXPECT_EQ(sub.wait(10s), 0);
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 5s);
  EXPECT_EQ(sub.out(), "subscribe\na\n1\n");
  EXPECT_EQ(sub.err(), "");
}

TEST(CliSubscribe, ClosedStdoutEndsTheSubscriberCleanly) {
  Daemon daemon;
  Command sub(shm(daemon.bus(), {"subscribe", "a"}));
  sub.close_stdin();
  ASSERT_TRUE(sub.read_until_size(confirmations("subscribe", {"a"}).size())) << sub.err();
  sub.close_stdout();
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "a", "into the void"}), "1\n");
  EXPECT_EQ(sub.wait(10s), 0);
  EXPECT_EQ(sub.err(), "");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numsub", "a"}), "a\n0\n");
}

TEST(CliSubscribe, GapGoesToStderrNotStdout) {
  Daemon daemon(unique_bus("gap"), {"--ring-bytes", "65536", "--max-payload", "1024"});
  Command sub(shm(daemon.bus(), {"subscribe", "g"}));
  sub.close_stdin();
  const std::string confirmed = confirmations("subscribe", {"g"});
  ASSERT_TRUE(sub.read_until_size(confirmed.size())) << sub.err();

  // A stopped subscriber reads nothing, so its ring fills and further messages are dropped.
  sub.signal(SIGSTOP);
  Bus bus = Bus::connect(daemon.bus());
  const std::string payload(1000, 'p');
  std::size_t delivered = 0;
  while (delivered < 10000 && bus.publish("g", payload) == 1) ++delivered;
  std::size_t dropped = 1;
  for (; dropped < 5; ++dropped) EXPECT_EQ(bus.publish("g", payload), 0U);
  ASSERT_GT(delivered, 0U);
  ASSERT_LT(delivered, 10000U);
  sub.signal(SIGCONT);

  std::string expected = confirmed;
  for (std::size_t i = 0; i < delivered; ++i) expected += message("g", payload);
  ASSERT_TRUE(sub.read_until_size(expected.size())) << sub.out().size();
  EXPECT_EQ(bus.publish("g", "last"), 1U);
  expected += message("g", "last");
  ASSERT_TRUE(sub.read_until_size(expected.size())) << sub.out().size();
  ASSERT_TRUE(sub.pump_until([&] { return !sub.err().empty(); }, 5s));

  sub.signal(SIGTERM);
  EXPECT_EQ(sub.wait(), 0);
  EXPECT_EQ(sub.out(), expected);
  EXPECT_EQ(sub.err(),
            fmt::format("shmcast: {} messages were dropped here because this subscriber's ring "
                        "(65536 bytes) was full: read faster, or start shmcastd with a larger "
                        "--ring-bytes\n",
                        dropped));
}

TEST(CliPubsub, ChannelsNumsubNumpat) {
  Daemon daemon;
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "channels"}), "\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numpat"}), "0\n");

  Command sub(shm(daemon.bus(), {"subscribe", "b", "a"}));
  Command psub(shm(daemon.bus(), {"psubscribe", "p*"}));
  sub.close_stdin();
  psub.close_stdin();
  ASSERT_TRUE(sub.read_until_size(confirmations("subscribe", {"b", "a"}).size())) << sub.err();
  ASSERT_TRUE(psub.read_until_size(confirmations("psubscribe", {"p*"}).size())) << psub.err();

  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numsub", "a", "b", "zz"}), "a\n1\nb\n1\nzz\n0\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numsub"}), "\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "channels"}), "a\nb\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "channels", "a*"}), "a\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "channels", "p*"}), "\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numpat"}), "1\n");
  // Commands are case-insensitive, as in Redis.
  EXPECT_EQ(shm_out(daemon.bus(), {"PUBSUB", "NUMPAT"}), "1\n");
}

TEST(CliPublish, RepeatPublishesNTimes) {
  Daemon daemon;
  Command sub(shm(daemon.bus(), {"subscribe", "a"}));
  sub.close_stdin();
  const std::string confirmed = confirmations("subscribe", {"a"});
  ASSERT_TRUE(sub.read_until_size(confirmed.size())) << sub.err();

  EXPECT_EQ(shm_out(daemon.bus(), {"-r", "3", "publish", "a", "x"}), "1\n1\n1\n");
  EXPECT_EQ(shm_out(daemon.bus(), {"-r", "0", "publish", "a", "x"}), "");
  const std::string expected =
      confirmed + message("a", "x") + message("a", "x") + message("a", "x");
  ASSERT_TRUE(sub.read_until_size(expected.size())) << sub.out();
  sub.signal(SIGTERM);
  EXPECT_EQ(sub.wait(), 0);
  EXPECT_EQ(sub.out(), expected);
}

TEST(CliPublish, ArgumentsAfterTheCommandAreVerbatim) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"-x"});
  ASSERT_TRUE(sub.receive(5s).has_value());
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "-x", "--help"}), "1\n");
  const auto m = sub.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->channel, "-x");
  EXPECT_EQ(m->payload, "--help");
}

TEST(CliPublish, StdinPayloadArrivesByteExact) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber in_process = bus.subscriber();
  in_process.subscribe({"bin"});
  ASSERT_TRUE(in_process.receive(5s).has_value());
  Command printer(shm(daemon.bus(), {"subscribe", "bin"}));
  printer.close_stdin();
  ASSERT_TRUE(printer.read_until_size(confirmations("subscribe", {"bin"}).size()));

  std::string payload;
  for (int i = 0; i < 3; ++i) {
    for (int b = 0; b < 256; ++b) payload += static_cast<char>(b);
  }
  payload += std::string("\0tail\n\n", 7);  // -x keeps trailing newlines, like redis-cli
  EXPECT_EQ(shm_out(daemon.bus(), {"-x", "publish", "bin"}, payload), "2\n");

  const auto m = in_process.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, Kind::message);
  EXPECT_EQ(m->channel, "bin");
  EXPECT_EQ(m->payload, payload);
  const std::string expected = confirmations("subscribe", {"bin"}) + message("bin", payload);
  ASSERT_TRUE(printer.read_until_size(expected.size()));
  EXPECT_EQ(printer.out(), expected);

  // Empty stdin is an empty message.
  EXPECT_EQ(shm_out(daemon.bus(), {"-x", "publish", "bin"}, ""), "2\n");
  const auto empty = in_process.receive(5s);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->payload, "");
}

TEST(CliPublish, StdinOverMaxPayloadFailsWithoutPublishing) {
  Daemon daemon(unique_bus("limit"), {"--max-payload", "1024"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"big"});
  ASSERT_TRUE(sub.receive(5s).has_value());

  expect_error_line(run(shm(daemon.bus(), {"-x", "publish", "big"}), std::string(2000, 'b')), 1,
                    {"max_payload", "1024", "--max-payload"});
  expect_error_line(run(shm(daemon.bus(), {"-x", "publish", "big"}), std::string(1025, 'b')), 1,
                    {"max_payload", "1024", "--max-payload"});
  expect_error_line(run(shm(daemon.bus(), {"publish", "big", std::string(1025, 'b')})), 1,
                    {"max_payload", "1024", "--max-payload"});
  EXPECT_FALSE(sub.receive(200ms).has_value()) << "an oversized message was published";

  // The limit itself is allowed.
  EXPECT_EQ(shm_out(daemon.bus(), {"-x", "publish", "big"}, std::string(1024, 'b')), "1\n");
  const auto m = sub.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, std::string(1024, 'b'));
}

// The limit is found without reading the whole stream: 100 MB on stdin is refused like 64 KiB
// and one byte, and nothing reaches the subscriber, neither whole nor cut to the limit.
TEST(CliPublish, HundredMegabytesOnStdinAreRefusedWithoutPublishing) {
  Daemon daemon(unique_bus("huge"));
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"big"});
  ASSERT_TRUE(sub.receive(5s).has_value());

  const Result r = run(shm(daemon.bus(), {"-x", "publish", "big"}), std::string(100 << 20, 'h'));
  expect_error_line(r, 1,
                    {"max_payload", std::to_string(bus.limits().max_payload), "--max-payload"});
  EXPECT_FALSE(sub.receive(200ms).has_value()) << "something was published";
  EXPECT_EQ(sub.dropped(), 0U);
}

TEST(CliErrors, InvalidBusNameIsRefused) {
  for (const std::string& name :
       std::vector<std::string>{"../x", "", "a b", std::string(65, 'a')}) {
    SCOPED_TRACE("bus '" + name + "'");
    expect_error_line(run(shm(name, {"publish", "a", "b"})), 1,
                      {"invalid bus name '" + name + "'"});
  }
  // Control bytes are escaped, so the error stays one line.
  expect_error_line(run(shm("a\nb", {"publish", "a", "b"})), 1, {"invalid bus name 'a\\x0ab'"});
  // 64 characters is a valid name: the error is about the missing coordinator instead.
  const std::string longest(64, 'a');
  expect_error_line(run(shm(longest, {"--wait", "0.1", "publish", "a", "b"})), 1,
                    {"start shmcastd --bus " + longest});
}

TEST(CliBus, DefaultsToShmcastBusFromTheEnvironment) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"env"});
  // The child inherits the environment; nothing else in this test reads it.
  ASSERT_EQ(setenv("SHMCAST_BUS", daemon.bus().c_str(), 1), 0);
  const Result r = run({bin_dir() + "/shmcast", "pubsub", "numsub", "env"});
  unsetenv("SHMCAST_BUS");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "env\n1\n");
}

// After waiting for one to start: --wait SECONDS, 5 by default.
TEST(CliErrors, NoCoordinatorSaysHowToStartOne) {
  const std::string bus = unique_bus("none");
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"--wait", "0.3", "publish", "a", "b"},
                                             {"--wait", "0.3", "subscribe", "a"},
                                             {"pubsub", "numpat"}}) {
    SCOPED_TRACE(join(args));
    const auto start = std::chrono::steady_clock::now();
    expect_error_line(run(shm(bus, args)), 1, {"start shmcastd --bus " + bus});
    EXPECT_GE(std::chrono::steady_clock::now() - start,
              std::chrono::milliseconds(args[0] == "--wait" ? 300 : 5000));
  }
}

TEST(CliErrors, UsageErrorsExitWithTwo) {
  const std::string bus = unique_bus("usage");
  for (const auto& args : std::vector<std::vector<std::string>>{{},
                                                                {"publish", "a"},
                                                                {"publish", "a", "b", "c"},
                                                                {"-x", "publish", "a", "b"},
                                                                {"frobnicate"},
                                                                {"subscribe"},
                                                                {"--count", "0", "subscribe", "a"},
                                                                {"pubsub"},
                                                                {"pubsub", "channels", "a", "b"},
                                                                {"pubsub", "numpat", "x"}}) {
    SCOPED_TRACE(join(args));
    const Result r = run(shm(bus, args));
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("shmcast: ", 0), 0U) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(CliHelp, ListsCommandsAndOptions) {
  const Result r = run({bin_dir() + "/shmcast", "--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "");
  for (const char* word :
       {"publish", "subscribe", "psubscribe", "pubsub", "channels", "numsub", "numpat", "--bus",
        "-r", "-i", "-x", "--raw", "--no-raw", "--count", "--timeout"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
}

// ---- the same commands against redis-server -------------------------------------------------

// Every command of the CLI, with subscribers in other processes, as one transcript.
std::string pubsub_transcript(const Target& t) {
  std::string transcript;
  const auto step = [&](std::vector<std::string> args, std::string_view input = {},
                        bool sort = false) {
    const Result r = run(t.argv(args), input);
    EXPECT_EQ(r.status, 0) << join(args) << ": " << r.err;
    transcript += fmt::format("$ {}\n{}", join(args), sort ? sorted_lines(r.out) : r.out);
  };
  const auto start = [&](const std::string& command, const std::vector<std::string>& names,
                         int count) {
    auto sub = std::make_unique<Command>(t.subscriber({}, command, names, count));
    sub->close_stdin();
    EXPECT_TRUE(sub->read_until_size(confirmations(command, names).size())) << sub->err();
    return sub;
  };
  const auto finish = [&](const std::string& name, Command& sub, const std::string& expected) {
    transcript += fmt::format("# {}\n{}", name, t.finish(sub, expected.size()));
  };

  step({"pubsub", "channels"});
  step({"pubsub", "numsub"});
  step({"pubsub", "numpat"});
  step({"publish", "a", "x"});

  // One subscriber, 3 publishes on 2 channels, one of them from stdin, one empty.
  auto first = start("subscribe", {"a", "b"}, 3);
  step({"publish", "a", "m1"});
  step({"-x", "publish", "b"}, "two\n");
  step({"publish", "a", ""});
  finish("subscribe a b", *first,
         confirmations("subscribe", {"a", "b"}) + message("a", "m1") + message("b", "two\n") +
             message("a", ""));

  // Publish counts with 1, 2 and 3 receivers, channel and pattern subscribers mixed.
  auto c = start("subscribe", {"c"}, 6);
  step({"publish", "c", "one"});
  auto cd = start("subscribe", {"c", "d"}, 6);
  step({"publish", "c", "two"});
  auto pat = start("psubscribe", {"c*", "x?"}, 5);
  step({"publish", "c", "three"});
  step({"publish", "d", "four"});
  step({"publish", "xy", "five"});
  step({"publish", "-x", "--help"});
  step({"pubsub", "numsub", "c", "d", "zz", "c"});
  step({"pubsub", "numpat"});
  step({"pubsub", "channels"}, {}, true);
  step({"pubsub", "channels", "c*"});
  step({"pubsub", "channels", "zz*"});
  step({"-r", "3", "publish", "c", "r"});
  finish("subscribe c", *c,
         confirmations("subscribe", {"c"}) + message("c", "one") + message("c", "two") +
             message("c", "three") + message("c", "r") + message("c", "r") + message("c", "r"));
  finish("subscribe c d", *cd,
         confirmations("subscribe", {"c", "d"}) + message("c", "two") + message("c", "three") +
             message("d", "four") + message("c", "r") + message("c", "r") + message("c", "r"));
  finish("psubscribe c* x?", *pat,
         confirmations("psubscribe", {"c*", "x?"}) + pmessage("c*", "c", "three") +
             pmessage("x?", "xy", "five") + pmessage("c*", "c", "r") + pmessage("c*", "c", "r") +
             pmessage("c*", "c", "r"));
  return transcript;
}

// What a --no-raw subscriber of `e f` prints in human_transcript.
const std::string human_subscriber =
    "Reading messages... (press Ctrl-C to quit)\n"
    "1) \"subscribe\"\n2) \"e\"\n3) (integer) 1\n"
    "1) \"subscribe\"\n2) \"f\"\n3) (integer) 2\n"
    "1) \"message\"\n2) \"e\"\n3) \"q\\x01\\\"\\\\\\n\\x7f\\xff\\t\\r\\a\\b ~\"\n"
    "1) \"message\"\n2) \"f\"\n3) \"\"\n";

// redis-cli's human format (--no-raw), which shmcast prints on a terminal.
std::string human_transcript(const Target& t) {
  std::string transcript;
  const auto step = [&](std::vector<std::string> args, std::string_view input = {}) {
    const Result r = run(t.argv(args), input);
    EXPECT_EQ(r.status, 0) << join(args) << ": " << r.err;
    transcript += fmt::format("$ {}\n{}", join(args), r.out);
  };
  step({"--no-raw", "publish", "e", "x"});
  step({"--no-raw", "pubsub", "channels"});
  step({"--no-raw", "pubsub", "numsub", "a", "b", "c", "d", "e"});
  step({"--no-raw", "pubsub", "numpat"});

  Command sub(t.subscriber({"--no-raw"}, "subscribe", {"e", "f"}, 2));
  sub.close_stdin();
  EXPECT_TRUE(sub.read_until_text("3) (integer) 2\n")) << sub.out() << sub.err();
  step({"--no-raw", "-x", "publish", "e"}, "q\x01\"\\\n\x7f\xff\t\r\a\b ~");
  step({"--no-raw", "pubsub", "numsub", "e"});
  step({"--no-raw", "publish", "f", ""});  // the second message: the shmcast subscriber exits
  transcript += "# subscribe e f\n" + t.finish(sub, human_subscriber.size());
  return transcript;
}

std::string flatten(const Message& m) {
  switch (m.kind) {
    case Kind::message: return fmt::format("message|{}|{}", m.channel, m.payload);
    case Kind::pmessage: return fmt::format("pmessage|{}|{}|{}", m.pattern, m.channel, m.payload);
    default: return fmt::format("{}|{}|{}", kind_name(m.kind), m.channel, m.count);
  }
}

// Just enough of RESP2 to hold a subscribed connection: arrays of bulk strings and integers.
class RespClient {
 public:
  explicit RespClient(const std::string& socket) : fd_(connect_unix(socket)) {
    if (fd_ < 0) throw std::runtime_error("cannot connect to " + socket);
  }
  ~RespClient() { ::close(fd_); }
  RespClient(const RespClient&) = delete;
  RespClient& operator=(const RespClient&) = delete;

  void send(const std::vector<std::string>& args) {
    std::string request = fmt::format("*{}\r\n", args.size());
    for (const auto& a : args) request += fmt::format("${}\r\n{}\r\n", a.size(), a);
    EXPECT_EQ(::write(fd_, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  }
  /// One reply as "a|b|c", like flatten().
  std::string reply() {
    std::string out;
    value(out);
    return out;
  }

 private:
  void value(std::string& out) {
    const std::string head = line();
    if (head.empty()) return;
    const long long n = std::atoll(head.c_str() + 1);
    switch (head[0]) {
      case '*':
        for (long long i = 0; i < n; ++i) {
          if (i > 0) out += '|';
          value(out);
        }
        return;
      case '$':
        if (n >= 0) out += bytes(static_cast<std::size_t>(n));
        if (n >= 0) bytes(2);
        return;
      default: out += head.substr(1);
    }
  }
  std::string line() {
    while (buffer_.find("\r\n") == std::string::npos && fill()) {
    }
    const auto end = buffer_.find("\r\n");
    if (end == std::string::npos) return {};
    std::string l = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    return l;
  }
  std::string bytes(std::size_t n) {
    while (buffer_.size() < n && fill()) {
    }
    std::string b = buffer_.substr(0, n);
    buffer_.erase(0, std::min(n, buffer_.size()));
    return b;
  }
  bool fill() {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) {
      ADD_FAILURE() << "redis-server sent no reply within 5 s";
      return false;
    }
    char chunk[4096];
    const ssize_t r = ::read(fd_, chunk, sizeof chunk);
    if (r <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(r));
    return true;
  }
  int fd_;
  std::string buffer_;
};

TEST(CliMatchesRedis, PubsubCommandsAndSubscribers) {
  if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
  RedisServer redis;
  Daemon daemon;
  const std::string from_redis = pubsub_transcript(redis_target(redis.socket()));
  const std::string from_shmcast = pubsub_transcript(shmcast_target(daemon.bus()));
  EXPECT_EQ(from_shmcast, from_redis);
  // And pinned, so a change on either side is noticed.
  EXPECT_EQ(from_shmcast,
            "$ pubsub channels\n\n"
            "$ pubsub numsub\n\n"
            "$ pubsub numpat\n0\n"
            "$ publish a x\n0\n"
            "$ publish a m1\n1\n"
            "$ -x publish b\n1\n"
            "$ publish a \n1\n"
            "# subscribe a b\n"
            "subscribe\na\n1\nsubscribe\nb\n2\nmessage\na\nm1\nmessage\nb\ntwo\n\nmessage\na\n\n"
            "$ publish c one\n1\n"
            "$ publish c two\n2\n"
            "$ publish c three\n3\n"
            "$ publish d four\n1\n"
            "$ publish xy five\n1\n"
            "$ publish -x --help\n0\n"
            "$ pubsub numsub c d zz c\nc\n2\nd\n1\nzz\n0\nc\n2\n"
            "$ pubsub numpat\n2\n"
            "$ pubsub channels\nc\nd\n"
            "$ pubsub channels c*\nc\n"
            "$ pubsub channels zz*\n\n"
            "$ -r 3 publish c r\n3\n3\n3\n"
            "# subscribe c\n"
            "subscribe\nc\n1\nmessage\nc\none\nmessage\nc\ntwo\nmessage\nc\nthree\nmessage\nc\nr\n"
            "message\nc\nr\nmessage\nc\nr\n"
            "# subscribe c d\n"
            "subscribe\nc\n1\nsubscribe\nd\n2\nmessage\nc\ntwo\nmessage\nc\nthree\nmessage\nd\n"
            "four\nmessage\nc\nr\nmessage\nc\nr\nmessage\nc\nr\n"
            "# psubscribe c* x?\n"
            "psubscribe\nc*\n1\npsubscribe\nx?\n2\npmessage\nc*\nc\nthree\npmessage\nx?\nxy\nfive\n"
            "pmessage\nc*\nc\nr\npmessage\nc*\nc\nr\npmessage\nc*\nc\nr\n");
}

TEST(CliMatchesRedis, HumanFormat) {
  if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
  RedisServer redis;
  Daemon daemon;
  const std::string from_redis = human_transcript(redis_target(redis.socket()));
  const std::string from_shmcast = human_transcript(shmcast_target(daemon.bus()));
  EXPECT_EQ(from_shmcast, from_redis);
  EXPECT_EQ(from_shmcast,
            "$ --no-raw publish e x\n(integer) 0\n"
            "$ --no-raw pubsub channels\n(empty array)\n"
            "$ --no-raw pubsub numsub a b c d e\n"
            " 1) \"a\"\n 2) (integer) 0\n 3) \"b\"\n 4) (integer) 0\n 5) \"c\"\n 6) (integer) 0\n"
            " 7) \"d\"\n 8) (integer) 0\n 9) \"e\"\n10) (integer) 0\n"
            "$ --no-raw pubsub numpat\n(integer) 0\n"
            "$ --no-raw -x publish e\n(integer) 1\n"
            "$ --no-raw pubsub numsub e\n1) \"e\"\n2) (integer) 1\n"
            "$ --no-raw publish f \n(integer) 1\n"
            "# subscribe e f\n" +
                human_subscriber);
}

TEST(CliMatchesRedis, ChannelAndPatternOnOneClientCountTwice) {
  if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
  RedisServer redis;
  Daemon daemon;

  // redis-cli cannot hold a channel and a pattern on one connection, so the client is the test.
  RespClient redis_client(redis.socket());
  redis_client.send({"SUBSCRIBE", "foo"});
  redis_client.send({"PSUBSCRIBE", "f*"});
  std::vector<std::string> from_redis{redis_client.reply(), redis_client.reply()};
  const Target r = redis_target(redis.socket());
  const Result redis_publish = run(r.argv({"publish", "foo", "v"}));
  from_redis.push_back(redis_client.reply());
  from_redis.push_back(redis_client.reply());

  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"foo"});
  sub.psubscribe({"f*"});
  const Target s = shmcast_target(daemon.bus());
  const Result shmcast_publish = run(s.argv({"publish", "foo", "v"}));
  std::vector<std::string> from_shmcast;
  for (int i = 0; i < 4; ++i) {
    const auto m = sub.receive(5s);
    ASSERT_TRUE(m.has_value()) << "frame " << i;
    from_shmcast.push_back(flatten(*m));
  }

  EXPECT_EQ(shmcast_publish.out, "2\n");
  EXPECT_EQ(shmcast_publish.out, redis_publish.out);
  EXPECT_EQ(from_shmcast, from_redis);
  EXPECT_EQ(from_shmcast, (std::vector<std::string>{"subscribe|foo|1", "psubscribe|f*|2",
                                                    "message|foo|v", "pmessage|f*|foo|v"}));
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"pubsub", "numsub", "foo", "f*"}, {"pubsub", "numpat"}, {"pubsub", "channels"}}) {
    SCOPED_TRACE(join(args));
    const Result from_s = run(s.argv(args));
    EXPECT_EQ(from_s.out, run(r.argv(args)).out);
    EXPECT_EQ(from_s.status, 0);
  }
  EXPECT_EQ(run(s.argv({"pubsub", "numsub", "foo", "f*"})).out, "foo\n1\nf*\n0\n");
}

}  // namespace
}  // namespace shmcast::test
