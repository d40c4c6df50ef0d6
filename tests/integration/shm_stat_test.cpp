// End-to-end tests of `shm-stat`: its JSON must be valid JSON whatever the channel names hold,
// must agree with what a client sees through Bus, and must follow subscribers and the
// coordinator as they come and go.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/json_reader.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

Result shm_stat(const std::string& bus, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{bin_dir() + "/shm-stat", "--bus", bus};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

/// `shm-stat --bus BUS --json`, which must succeed with one line of valid JSON.
Json stat_json(const std::string& bus) {
  const Result r = shm_stat(bus, {"--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  try {
    return JsonParser::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what() << "\n" << r.out;
    return {};
  }
}

std::vector<std::pair<std::string, std::uint64_t>> channel_counts(const Json& j) {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  for (const auto& c : j["channels"].items) {
    out.emplace_back(c["name"].str(), c["subscribers"].u64());
  }
  return out;
}

/// The clients of process `pid`: a `Bus` and its first subscriber are one, each further
/// subscriber one more.
std::vector<const Json*> clients_of(const Json& j, pid_t pid) {
  std::vector<const Json*> found;
  for (const auto& c : j["clients"].items) {
    if (c["pid"].u64() == static_cast<std::uint64_t>(pid)) found.push_back(&c);
  }
  return found;
}

/// PUBSUB NUMSUB of one channel; nullopt if the reply lacks its one entry.
std::optional<std::size_t> numsub_of(const Bus& bus, const std::string& channel) {
  const std::vector<std::string> names{channel};
  const auto counts = bus.numsub(names);
  if (counts.size() != 1 || counts[0].first != channel) return std::nullopt;
  return counts[0].second;
}

/// A `shmcast subscribe` process, returned once its confirmations are printed.
std::unique_ptr<Command> subscriber_process(const std::string& bus,
                                            const std::vector<std::string>& channels) {
  std::vector<std::string> argv{bin_dir() + "/shmcast", "--bus", bus, "subscribe"};
  argv.insert(argv.end(), channels.begin(), channels.end());
  auto child = std::make_unique<Command>(std::move(argv));
  child->close_stdin();
  const std::string last = fmt::format("subscribe\n{}\n{}\n", channels.back(), channels.size());
  EXPECT_TRUE(child->pump_until([&] { return child->out().find(last) != std::string::npos; }))
      << child->out() << child->err();
  return child;
}

// ---- tests ----------------------------------------------------------------------------------

TEST(ShmStatJson, AgreesWithTheBusAfterSubscribes) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber s1 = bus.subscriber();
  Subscriber s2 = bus.subscriber();
  s1.subscribe({"b", "a"});
  s2.subscribe({"a"});
  s2.psubscribe({"p*"});

  const Json j = stat_json(daemon.bus());
  ASSERT_EQ(j.type, Json::Type::object);
  EXPECT_EQ(j["bus"].str(), daemon.bus());
  EXPECT_EQ(j["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(daemon.pid()));
  EXPECT_TRUE(j["coordinator"]["alive"].flag());
  EXPECT_LT(j["coordinator"]["uptime_ms"].u64(), 60000U);

  const Limits& l = bus.limits();
  const Json& limits = j["limits"];
  EXPECT_EQ(limits["max_clients"].u64(), l.max_clients);
  EXPECT_EQ(limits["max_channel"].u64(), l.max_channel);
  EXPECT_EQ(limits["max_pattern"].u64(), l.max_pattern);
  EXPECT_EQ(limits["max_subscriptions"].u64(), l.max_subscriptions);
  EXPECT_EQ(limits["max_channels"].u64(), l.max_channels);
  EXPECT_EQ(limits["max_patterns"].u64(), l.max_patterns);
  EXPECT_EQ(limits["max_total_subscriptions"].u64(), l.max_total_subscriptions);
  EXPECT_EQ(limits["ring_bytes"].u64(), l.ring_bytes);
  EXPECT_EQ(limits["max_payload"].u64(), l.max_payload);
  EXPECT_GT(j["registry"]["bytes"].u64(), 0U);
  EXPECT_GT(j["registry"]["bytes_per_channel"].u64(), 0U);
  EXPECT_GT(j["registry"]["bytes_per_subscription"].u64(), 0U);

  const std::vector<std::string> names{"a", "b", "zz"};
  const auto numsub = bus.numsub(names);
  ASSERT_EQ(numsub.size(), 3U);
  EXPECT_EQ(numsub[0], (std::pair<std::string, std::size_t>{"a", 2}));
  EXPECT_EQ(numsub[1], (std::pair<std::string, std::size_t>{"b", 1}));
  EXPECT_EQ(numsub[2], (std::pair<std::string, std::size_t>{"zz", 0}));
  using Counts = std::vector<std::pair<std::string, std::uint64_t>>;
  EXPECT_EQ(channel_counts(j), (Counts{{"a", 2}, {"b", 1}}));

  EXPECT_EQ(bus.numpat(), 1U);
  ASSERT_EQ(j["patterns"].items.size(), 1U);
  EXPECT_EQ(j["patterns"].items[0]["pattern"].str(), "p*");
  EXPECT_EQ(j["patterns"].items[0]["subscribers"].u64(), 1U);

  // The two subscribers, the first in the Bus's own slot.
  ASSERT_EQ(j["clients"].items.size(), 2U);
  std::vector<std::uint64_t> subscriptions;
  for (const auto& c : j["clients"].items) {
    EXPECT_EQ(c["pid"].u64(), static_cast<std::uint64_t>(getpid()));
    EXPECT_EQ(c["ring_bytes"].u64(), l.ring_bytes);
    EXPECT_EQ(c["dropped"].u64(), 0U);
    subscriptions.push_back(c["subscriptions"].u64());
  }
  EXPECT_EQ(subscriptions, (std::vector<std::uint64_t>{2, 2}));
}

TEST(ShmStatJson, RingFillAndCountersFollowTheSubscriber) {
  Daemon daemon(unique_bus("ring"), {"--ring-bytes", "65536", "--max-payload", "1024"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"r"});
  ASSERT_TRUE(sub.receive(5s).has_value());
  const auto ring_client = [&](const Json& j) -> const Json& {
    for (const auto& c : j["clients"].items) {
      if (c["subscriptions"].u64() == 1) return c;
    }
    throw std::runtime_error("no client with one subscription");
  };

  const Json empty = stat_json(daemon.bus());
  EXPECT_EQ(ring_client(empty)["ring_bytes"].u64(), 65536U);
  EXPECT_EQ(ring_client(empty)["ring_used"].u64(), 0U);
  const std::uint64_t delivered_before = ring_client(empty)["delivered"].u64();

  for (int i = 0; i < 3; ++i) EXPECT_EQ(bus.publish("r", std::string(100, 'x')), 1U);
  const Json three = stat_json(daemon.bus());
  EXPECT_GE(ring_client(three)["ring_used"].u64(), 300U);
  EXPECT_LT(ring_client(three)["ring_used"].u64(), 1000U);
  EXPECT_EQ(ring_client(three)["delivered"].u64(), delivered_before);

  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sub.receive(5s).has_value());
  const Json read = stat_json(daemon.bus());
  EXPECT_EQ(ring_client(read)["ring_used"].u64(), 0U);
  EXPECT_EQ(ring_client(read)["delivered"].u64(), delivered_before + 3);

  std::size_t published = 0;
  while (published < 10000 && bus.publish("r", std::string(1000, 'x')) == 1) ++published;
  EXPECT_EQ(bus.publish("r", std::string(1000, 'x')), 0U);
  const Json full = stat_json(daemon.bus());
  EXPECT_EQ(ring_client(full)["dropped"].u64(), 2U);
  EXPECT_EQ(ring_client(full)["dropped"].u64(), sub.dropped());
  EXPECT_GT(ring_client(full)["ring_used"].u64(), 65536U - 2048U);
  EXPECT_LE(ring_client(full)["ring_used"].u64(), 65536U);
}

TEST(ShmStatJson, PoolsAndHoldsFollowLoans) {
  Daemon daemon(unique_bus("pools"), {"--pool-bytes", "1048576", "--max-holds", "4"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"p"});
  ASSERT_EQ(sub.receive(5s)->kind, Kind::subscribe);
  EXPECT_EQ(stat_json(daemon.bus())["pools"].items.size(), 0U);
  for (int i = 0; i < 3; ++i) {
    Loan loan = bus.loan(5000);  // two 4 KiB blocks each
    ASSERT_EQ(bus.publish("p", std::move(loan)), 1U);
  }
  const Json sent = stat_json(daemon.bus());
  ASSERT_EQ(sent["pools"].items.size(), 1U);
  const Json& pool = sent["pools"].items[0];
  EXPECT_EQ(pool["bytes"].u64(), 1048576U);
  EXPECT_EQ(pool["chunks_in_use"].u64(), 3U);
  EXPECT_EQ(pool["bytes_in_use"].u64(), 3U * 8192U);
  EXPECT_EQ(pool["owner_pid"].u64(), static_cast<std::uint64_t>(getpid()));
  EXPECT_TRUE(pool["owner_attached"].flag());

  Payload kept;
  sub.listen(
      [&](const MessageView& m) {
        if (!kept.loaned()) kept = sub.keep(m);
        return true;
      },
      100ms);
  const Json held = stat_json(daemon.bus());
  EXPECT_EQ(held["pools"].items[0]["chunks_in_use"].u64(), 1U);
  std::uint64_t holds = 0;
  for (const auto& c : held["clients"].items) holds += c["holds"].u64();
  EXPECT_EQ(holds, 1U);
  const Result table = shm_stat(daemon.bus());
  EXPECT_NE(table.out.find("pools: 1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("attached"), std::string::npos) << table.out;
  kept.reset();
  const Json released = stat_json(daemon.bus());
  EXPECT_EQ(released["pools"].items[0]["chunks_in_use"].u64(), 0U);
  EXPECT_EQ(released["pools"].items[0]["bytes_in_use"].u64(), 0U);
}

TEST(ShmStatJson, KilledSubscriberDisappearsWithinOneSecond) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  auto sub = subscriber_process(daemon.bus(), {"k"});
  ASSERT_EQ(numsub_of(bus, "k"), 1U);
  const Json before = stat_json(daemon.bus());
  using Counts = std::vector<std::pair<std::string, std::uint64_t>>;
  EXPECT_EQ(channel_counts(before), (Counts{{"k", 1}}));
  std::vector<std::uint64_t> subscriptions;
  for (const Json* c : clients_of(before, sub->pid())) {
    if ((*c)["ring_bytes"].u64() > 0) subscriptions.push_back((*c)["subscriptions"].u64());
  }
  EXPECT_EQ(subscriptions, std::vector<std::uint64_t>{1});

  const pid_t pid = sub->pid();
  sub->signal(SIGKILL);
  const auto killed = Clock::now();
  EXPECT_EQ(sub->wait(), 128 + SIGKILL);
  while (numsub_of(bus, "k") != 0U && Clock::now() - killed < 1s) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(numsub_of(bus, "k"), 0U) << "still registered 1 s after SIGKILL";
  const Json after = stat_json(daemon.bus());
  EXPECT_EQ(channel_counts(after), Counts{});
  EXPECT_TRUE(clients_of(after, pid).empty());
  EXPECT_GE(after["reaped"].u64(), 1U);
}

TEST(ShmStatJson, CoordinatorAliveUntilKilled) {
  Daemon daemon;
  const RemoveSegments cleanup{daemon.bus()};
  const Json alive = stat_json(daemon.bus());
  EXPECT_TRUE(alive["coordinator"]["alive"].flag());
  EXPECT_EQ(alive["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(daemon.pid()));

  const pid_t pid = daemon.pid();
  daemon.kill_now();
  Json dead = stat_json(daemon.bus());
  const auto deadline = Clock::now() + 3s;
  while (dead["coordinator"]["alive"].flag() && Clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    dead = stat_json(daemon.bus());
  }
  EXPECT_FALSE(dead["coordinator"]["alive"].flag());
  EXPECT_EQ(dead["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(pid));

  const Result table = shm_stat(daemon.bus());
  EXPECT_EQ(table.status, 0);
  EXPECT_NE(table.out.find("NOT RUNNING"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("start shmcastd --bus " + daemon.bus()), std::string::npos);
}

TEST(ShmStatJson, BinaryNamesStayValidJson) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  const std::string name("\x01\"\\\x7f\xff\0/\n\u00e9z", 11);
  ASSERT_EQ(name.size(), 11U);
  sub.subscribe({name});
  sub.psubscribe({std::string("\x80*", 2)});

  const Result r = shm_stat(daemon.bus(), {"--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  // Printable ASCII only, then the one newline.
  EXPECT_EQ(
      std::find_if(r.out.begin(), r.out.end() - 1, [](char c) { return c < 0x20 || c >= 0x7f; }),
      r.out.end() - 1)
      << r.out;
  const Json j = JsonParser::parse(r.out);
  using Counts = std::vector<std::pair<std::string, std::uint64_t>>;
  EXPECT_EQ(channel_counts(j), (Counts{{name, 1}}));
  ASSERT_EQ(j["patterns"].items.size(), 1U);
  EXPECT_EQ(j["patterns"].items[0]["pattern"].str(), std::string("\x80*", 2));
  EXPECT_NE(r.out.find(R"("\u0001\"\\\u007f\u00ff\u0000/\u000a\u00c3\u00a9z")"), std::string::npos)
      << r.out;
}

TEST(ShmStatTable, NamesEachLimitWithItsFlag) {
  Daemon daemon(unique_bus("table"), {"--max-clients", "32", "--max-payload", "4096"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"news"});
  sub.psubscribe({"n*"});
  const Limits& l = bus.limits();
  EXPECT_EQ(l.max_clients, 32U);
  EXPECT_EQ(l.max_payload, 4096U);

  const Result r = shm_stat(daemon.bus());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::vector<std::string> lines;
  std::stringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const auto line_with = [&](const std::string& word) -> std::string {
    for (const auto& line : lines) {
      std::stringstream words(line);
      for (std::string w; words >> w;) {
        if (w == word) return line;
      }
    }
    return {};
  };
  const std::vector<std::tuple<std::string, std::string, std::uint64_t>> expected{
      {"max_clients", "--max-clients", l.max_clients},
      {"max_channel", "--max-channel", l.max_channel},
      {"max_pattern", "--max-pattern", l.max_pattern},
      {"max_subscriptions", "--max-subscriptions", l.max_subscriptions},
      {"max_channels", "--max-channels", l.max_channels},
      {"max_patterns", "--max-patterns", l.max_patterns},
      {"max_total_subscriptions", "--max-total-subscriptions", l.max_total_subscriptions},
      {"ring_bytes", "--ring-bytes", l.ring_bytes},
      {"max_payload", "--max-payload", l.max_payload},
      {"pool_bytes", "--pool-bytes", l.pool_bytes},
      {"max_holds", "--max-holds", l.max_holds}};
  for (const auto& [name, flag, value] : expected) {
    const std::string line = line_with(flag);
    EXPECT_NE(line, "") << flag << " missing:\n" << r.out;
    EXPECT_NE(line.find(name), std::string::npos) << line;
    EXPECT_NE(line.find(fmt::format(" {} ", value)), std::string::npos) << line;
  }
  EXPECT_NE(line_with(fmt::format("{},", daemon.pid())).find("alive"), std::string::npos) << r.out;
  EXPECT_NE(line_with("\"news\""), "") << r.out;
  EXPECT_NE(line_with("\"n*\""), "") << r.out;
  EXPECT_NE(line_with(std::to_string(getpid())), "") << r.out;
}

TEST(ShmStatWatch, PrintsASnapshotPerIntervalUntilSigterm) {
  Daemon daemon;
  Command watch({bin_dir() + "/shm-stat", "--bus", daemon.bus(), "--json", "--watch", "0.2"});
  watch.close_stdin();
  ASSERT_TRUE(watch.pump_until(
      [&] { return std::count(watch.out().begin(), watch.out().end(), '\n') >= 3; }, 10s))
      << watch.out() << watch.err();
  watch.signal(SIGTERM);
  EXPECT_EQ(watch.wait(), 0);
  EXPECT_EQ(watch.err(), "");

  std::stringstream in(watch.out());
  std::vector<std::uint64_t> uptimes;
  for (std::string line; std::getline(in, line);) {
    const Json j = JsonParser::parse(line);
    EXPECT_EQ(j["bus"].str(), daemon.bus());
    uptimes.push_back(j["coordinator"]["uptime_ms"].u64());
  }
  ASSERT_GE(uptimes.size(), 3U);
  for (std::size_t i = 1; i < uptimes.size(); ++i) {
    EXPECT_GE(uptimes[i] - uptimes[i - 1], 150U) << "snapshots 0.2 s apart";
  }
}

TEST(ShmStatErrors, OneLineAndExitStatusOne) {
  const std::string missing = unique_bus("none");
  for (const auto& [bus, needle] : std::vector<std::pair<std::string, std::string>>{
           {missing, "start shmcastd --bus " + missing},
           {"../x", "invalid bus name '../x'"},
           {"", "invalid bus name ''"}}) {
    SCOPED_TRACE("bus '" + bus + "'");
    const Result r = shm_stat(bus);
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("shm-stat: ", 0), 0U) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  EXPECT_EQ(shm_stat(missing, {"--watch", "0"}).status, 2) << "a zero interval is a usage error";
}

}  // namespace
}  // namespace shmcast::test
