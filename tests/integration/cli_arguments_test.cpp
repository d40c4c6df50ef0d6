// The arguments of the `shmcast` command line client: options before the command, and every
// word after it a channel, pattern or message taken byte for byte, as redis-cli takes it. The
// CliMatchesRedis case runs seeded random names through both programs and compares their
// output byte for byte.
//
// What neither program can express: a NUL byte inside an argument (argv strings end at one),
// except in the last argument read from stdin with -x, which both take whole.

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
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

// Names a CLI parser could take for options or lists.
const std::vector<std::string> kTrickyNames = {"[x]", "[]", "a[b]",   "[a,b]", "-x", "--count",
                                               "0",   "",   "--help", "-",     "--", "-h"};

TEST(CliSubscribe, ArgumentsAfterTheCommandAreVerbatim) {
  Daemon daemon;
  Command sub(shmcast_target(daemon.bus()).subscriber({}, "subscribe", kTrickyNames, 1));
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
  Command psub(shmcast_target(daemon.bus()).subscriber({}, "psubscribe", patterns, 2));
  psub.close_stdin();
  const std::string confirmed = confirmations("psubscribe", patterns);
  ASSERT_TRUE(psub.read_until_size(confirmed.size())) << psub.out() << psub.err();
  EXPECT_EQ(shm_out(daemon.bus(), {"pubsub", "numpat"}), "5\n");

  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "x", "one"}), "1\n");     // [x]
  EXPECT_EQ(shm_out(daemon.bus(), {"publish", "-y", "--two"}), "1\n");  // -*
  EXPECT_EQ(psub.wait(10s), 0) << psub.err();
  EXPECT_EQ(psub.out(), confirmed + pmessage("[x]", "x", "one") + pmessage("-*", "-y", "--two"));
}

TEST(CliErrors, BadOptionValuesAreOneShortLine) {
  const std::string count = "--count must be a whole number >= 1, got ";
  const std::string timeout =
      "--timeout must be a number of seconds > 0 and at most 1000000000, got ";
  struct Refusal {
    std::vector<std::string> args;
    std::string line;  // alone on stderr, after "shmcast: "
  };
  const std::vector<Refusal> refusals{
      {{"--count", "0", "subscribe", "news"}, count + "'0'"},
      {{"--count", "-3", "subscribe", "news"}, count + "'-3'"},
      {{"--count", "1.5", "psubscribe", "n*"}, count + "'1.5'"},
      {{"--count", "99999999999999999999999", "subscribe", "a"},
       count + "'99999999999999999999999'"},
      {{"--count", std::string(100, '9'), "subscribe", "a"},
       count + "'" + std::string(32, '9') + "...'"},
      {{"--timeout", "0", "subscribe", "news"}, timeout + "'0'"},
      {{"--timeout", "inf", "subscribe", "news"}, timeout + "'inf'"},
      {{"--timeout", "1e300", "subscribe", "news"}, timeout + "'1e300'"},
      {{"--wait", "0", "publish", "a", "b"},
       "--wait must be a number of seconds > 0 and at most 1000000000, got '0'"},
      {{"-i", "-1", "-r", "2", "publish", "a", "b"},
       "-i must be a number of seconds from 0 to 1000000000, got '-1'"},
      {{"-r", "twice", "publish", "a", "b"},
       "-r must be a whole number (negative: until interrupted), got 'twice'"},
      {{"--count", "1", "publish", "a", "b"}, "--count applies to subscribe and psubscribe only"},
      {{"--timeout", "1", "pubsub", "numpat"},
       "--timeout applies to subscribe and psubscribe only"},
  };
  for (const auto& [args, line] : refusals) {
    SCOPED_TRACE(join(args));
    const Result r = run(shm(unique_bus("values"), args));
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "shmcast: " + line + ": see shmcast --help\n");
  }
}

// ---- random names through shmcast and redis-cli ---------------------------------------------

// The bytes that option parsers, list syntax and globs give a meaning to, and UTF-8.
const std::vector<std::string> kPieces = {"[", "]", ",",  "-", "*", "?", "\\", "^",   "!",
                                          " ", "'", "\"", "a", "b", "é", "中", "🙂"};

class NameSource {
 public:
  explicit NameSource(std::uint64_t seed) : random_(seed) {}

  std::size_t below(std::size_t n) { return static_cast<std::size_t>(random_() % n); }

  /// Zero to five pieces (so the empty name too), or one of the tricky names whole.
  std::vector<std::string> pieces() {
    if (below(5) == 0) return {kTrickyNames[below(kTrickyNames.size())]};
    std::vector<std::string> out;
    for (std::size_t n = below(6); n > 0; --n) out.push_back(kPieces[below(kPieces.size())]);
    return out;
  }
  std::string name() { return joined(pieces()); }

  /// A pattern made from a name's pieces, most of them kept, so that it often matches it.
  std::string pattern_from(const std::vector<std::string>& name) {
    std::string out;
    for (const auto& piece : name) {
      switch (below(8)) {
        case 0: out += "*"; break;
        case 1: out += "?"; break;
        case 2: out += "[" + piece + "]"; break;
        case 3: out += "\\" + piece; break;
        default: out += piece;
      }
    }
    return below(4) == 0 ? out + "*" : out;
  }

  static std::string joined(const std::vector<std::string>& pieces) {
    std::string out;
    for (const auto& piece : pieces) out += piece;
    return out;
  }

 private:
  std::mt19937_64 random_;  // its sequence is fixed by the standard: a seed replays anywhere
};

// No random name holds upper case: the last publish, on this channel, ends each round.
const std::string kEndChannel = "END";
const std::string kEndMessage = "done";

struct Round {
  std::vector<std::string> channels;                           // one subscriber's
  std::vector<std::string> patterns;                           // another subscriber's
  std::vector<std::pair<std::string, std::string>> publishes;  // channel, message
  std::vector<std::string> queried;                            // for pubsub numsub
};

Round make_round(std::uint64_t seed) {
  NameSource source(seed);
  std::vector<std::vector<std::string>> targets;
  for (std::size_t n = 1 + source.below(6); n > 0; --n) targets.push_back(source.pieces());
  Round round;
  for (const auto& target : targets) round.channels.push_back(NameSource::joined(target));
  for (int n = 0; n < 4; ++n) targets.push_back(source.pieces());
  for (std::size_t n = 1 + source.below(4); n > 0; --n) {
    round.patterns.push_back(source.below(3) == 0
                                 ? source.name()
                                 : source.pattern_from(targets[source.below(targets.size())]));
  }
  // The index keeps messages apart, so the pmessages of one publish can be told from the next.
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const std::string channel = NameSource::joined(targets[i]);
    round.publishes.emplace_back(channel, fmt::format("{}#{}", source.name(), i));
    round.queried.push_back(channel);
  }
  round.queried.push_back(round.patterns.front());
  return round;
}

/// What a subscriber prints when it subscribes to `names`: a name held already is confirmed
/// again without counting twice.
std::string confirmations_of(std::string_view kind, const std::vector<std::string>& names) {
  std::set<std::string> held;
  std::string text;
  for (const auto& name : names) {
    held.insert(name);
    text += fmt::format("{}\n{}\n{}\n", kind, name, held.size());
  }
  return text;
}

/// A pattern subscriber's output with the pmessages of each publish sorted: Redis sends them
/// in the order of its pattern dictionary, which no client chooses.
std::string canonical_pmessages(const std::string& out) {
  std::vector<std::string> lines;
  std::stringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::vector<std::vector<std::string>> frames;
  for (std::size_t i = 0; i < lines.size();) {
    const std::size_t size = lines[i] == "pmessage" ? 4 : 3;
    frames.emplace_back(
        lines.begin() + static_cast<std::ptrdiff_t>(i),
        lines.begin() + static_cast<std::ptrdiff_t>(std::min(i + size, lines.size())));
    i += size;
  }
  const auto same_publish = [](const std::vector<std::string>& a,
                               const std::vector<std::string>& b) {
    return a.size() == 4 && b.size() == 4 && a[0] == "pmessage" && b[0] == "pmessage" &&
           a[2] == b[2] && a[3] == b[3];
  };
  for (std::size_t begin = 0; begin < frames.size();) {
    std::size_t end = begin + 1;
    while (end < frames.size() && same_publish(frames[begin], frames[end])) ++end;
    std::sort(frames.begin() + static_cast<std::ptrdiff_t>(begin),
              frames.begin() + static_cast<std::ptrdiff_t>(end));
    begin = end;
  }
  std::string text;
  for (const auto& frame : frames) {
    for (const auto& line : frame) text += line + "\n";
  }
  return text;
}

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// A round as one transcript: two subscribers in other processes, every publish, every pubsub
// query, then what the subscribers printed.
std::string round_transcript(const Target& t, const Round& round) {
  std::string transcript;
  const auto step = [&](std::vector<std::string> args, bool sort = false,
                        std::string_view input = {}) {
    const Result r = run(t.argv(args), input);
    EXPECT_EQ(r.status, 0) << join(args) << ": " << r.err;
    transcript += fmt::format("$ {}\n{}", join(args), sort ? sorted_lines(r.out) : r.out);
    return r.out;
  };
  std::vector<std::string> channels = round.channels;
  channels.push_back(kEndChannel);
  std::vector<std::string> patterns = round.patterns;
  patterns.push_back(kEndChannel);
  Command sub(t.subscriber({}, "subscribe", channels, 0));
  Command psub(t.subscriber({}, "psubscribe", patterns, 0));
  sub.close_stdin();
  psub.close_stdin();
  EXPECT_TRUE(sub.read_until_size(confirmations_of("subscribe", channels).size()))
      << sub.out() << sub.err();
  EXPECT_TRUE(psub.read_until_size(confirmations_of("psubscribe", patterns).size()))
      << psub.out() << psub.err();

  for (std::size_t i = 0; i < round.publishes.size(); ++i) {
    const auto& [channel, payload] = round.publishes[i];
    if (i % 3 == 2) {
      step({"-x", "publish", channel}, false, payload);
    } else {
      step({"publish", channel, payload});
    }
  }
  std::vector<std::string> numsub{"pubsub", "numsub"};
  numsub.insert(numsub.end(), round.queried.begin(), round.queried.end());
  step(numsub);
  step({"pubsub", "channels"}, true);
  for (const auto& pattern : patterns) step({"pubsub", "channels", pattern}, true);
  step({"pubsub", "numpat"});

  // The end: one message for the channel subscriber, one pmessage per matching pattern.
  const std::size_t deliveries =
      std::strtoul(step({"publish", kEndChannel, kEndMessage}).c_str(), nullptr, 10);
  const std::string end = fmt::format("\n{}\n{}\n", kEndChannel, kEndMessage);
  EXPECT_GE(deliveries, 2U);
  EXPECT_TRUE(sub.pump_until([&] { return occurrences(sub.out(), end) == 1; })) << sub.out();
  EXPECT_TRUE(psub.pump_until([&] { return occurrences(psub.out(), end) + 1 == deliveries; }))
      << psub.out();
  for (Command* c : {&sub, &psub}) {
    c->signal(SIGTERM);
    const auto status = c->wait(10s);
    if (!t.redis) {
      EXPECT_EQ(status, 0) << "shmcast exits 0 on SIGTERM: " << c->err();
    }
  }
  transcript += fmt::format("# subscribe {}\n{}", join(channels), sub.out());
  transcript += fmt::format("# psubscribe {}\n{}", join(patterns), canonical_pmessages(psub.out()));
  return transcript;
}

// The seed of the first round: $SHMCAST_TEST_SEED to replay a failure, else a new one per run.
std::uint64_t first_seed() {
  if (const char* text = std::getenv("SHMCAST_TEST_SEED")) return std::strtoull(text, nullptr, 10);
  return std::random_device{}();
}

TEST(CliMatchesRedis, RandomNamesPatternsAndMessages) {
  if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
  constexpr int kRounds = 4;
  const std::uint64_t seed = first_seed();
  for (int i = 0; i < kRounds; ++i) {
    SCOPED_TRACE(fmt::format("round {}; replay with SHMCAST_TEST_SEED={}", i, seed));
    const Round round = make_round(seed + static_cast<std::uint64_t>(i));
    // Fresh servers each round: redis-server forgets a client that left only when it next
    // reads the socket, so names held in one round could still count in the next.
    RedisServer redis;
    Daemon daemon(unique_bus("random"));
    const std::string from_redis = round_transcript(redis_target(redis.socket()), round);
    const std::string from_shmcast = round_transcript(shmcast_target(daemon.bus()), round);
    EXPECT_EQ(from_shmcast, from_redis);
    // The transcript saw every name confirmed, so the round did not pass by printing nothing.
    for (const auto& name : round.channels) {
      EXPECT_NE(from_shmcast.find("subscribe\n" + name + "\n"), std::string::npos) << name;
    }
  }
}

}  // namespace
}  // namespace shmcast::test
