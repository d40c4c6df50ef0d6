// shmcast-bridge --cluster against a real Redis Cluster that each test starts on loopback ports:
// three buses exchanging messages through it, a slot moved and a primary killed while traffic
// flows (with the messages lost and the time to recover printed), and the refusals that are
// retried with back-off.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "crc16.hpp"
#include "integration/bridge_support.hpp"
#include "integration/bus_fixture.hpp"
#include "integration/redis_cluster.hpp"
#include "integration/redis_server.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;
using bridge::key_slot;
using Clock = std::chrono::steady_clock;

class ClusterBridge : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
  }
};

// Reads what the bridges print for `duration`, so that none blocks on a full stdout pipe.
void pump(const std::vector<BridgeProcess*>& bridges, std::chrono::milliseconds duration) {
  const auto until = Clock::now() + duration;
  do {
    for (BridgeProcess* b : bridges) b->collect();
    std::this_thread::sleep_for(10ms);
  } while (Clock::now() < until);
}

// Waits until `done` holds, reading every bridge's output meanwhile.
bool wait_all(const std::vector<BridgeProcess*>& bridges, const std::function<bool()>& done,
              std::chrono::milliseconds timeout = 20s) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    pump(bridges, 10ms);
  }
  return true;
}

// A channel name for each of `primaries` (node indexes), the first "<prefix>N" that hashes there.
std::vector<std::string> channels_on(RedisCluster& cluster, const std::string& prefix,
                                     const std::vector<std::size_t>& primaries) {
  std::vector<std::string> out;
  for (const std::size_t p : primaries) {
    for (int n = 0;; ++n) {
      const std::string name = fmt::format("{}{}", prefix, n);
      if (cluster.owner(key_slot(name)) == p &&
          std::find(out.begin(), out.end(), name) == out.end()) {
        out.push_back(name);
        break;
      }
    }
  }
  return out;
}

// --in for each channel, then `more`.
std::vector<std::string> in_flags(const std::vector<std::string>& channels,
                                  const std::vector<std::string>& more = {}) {
  std::vector<std::string> flags;
  for (const auto& c : channels) flags.insert(flags.end(), {"--in", c});
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

// Waits until every bridge says it is connected.
bool wait_connected(const std::vector<BridgeProcess*>& bridges) {
  return wait_all(bridges, [&] {
    return std::all_of(bridges.begin(), bridges.end(), [](const BridgeProcess* b) {
      return field(b->stats(), "state") == "connected";
    });
  });
}

TEST_F(ClusterBridge, ThreeBusesExchangeEachMessageOnceThroughEveryPrimary) {
  RedisCluster cluster(3, 0);
  // The slot of a channel as the bridge computes it is the server's.
  for (const std::string name : {"x.0", "events.{orders}.eu", "{}x", "a{b}{c}", "123456789"}) {
    EXPECT_EQ(cluster.node(0).call({"CLUSTER", "KEYSLOT", name}),
              std::vector<std::string>{std::to_string(key_slot(name))})
        << name;
  }
  const auto channels = channels_on(cluster, "x.", {0, 1, 2});

  Daemon host_a(unique_bus("a"));
  Daemon host_b(unique_bus("b"));
  Daemon host_c(unique_bus("c"));
  std::vector<Daemon*> hosts{&host_a, &host_b, &host_c};
  // Any node will do as a seed, and a list of them too.
  const std::vector<std::string> seeds{
      cluster.node(0).url(),
      fmt::format("redis://{},{}", cluster.node(1).address(), cluster.node(2).address()),
      cluster.node(2).url()};
  std::vector<std::unique_ptr<BridgeProcess>> bridges;
  std::vector<BridgeProcess*> all;
  for (std::size_t h = 0; h < 3; ++h) {
    bridges.push_back(std::make_unique<BridgeProcess>(
        hosts[h]->bus(), seeds[h], in_flags(channels, {"--out", "x.*"}), "--cluster"));
    all.push_back(bridges.back().get());
  }
  // redis-cli -c follows the MOVED of a channel served by another node than the one it asks.
  std::vector<std::unique_ptr<Command>> clis;
  for (const auto& c : channels) {
    clis.push_back(std::make_unique<Command>(std::vector<std::string>{
        "redis-cli", "-c", "-p", std::to_string(cluster.node(0).port()), "ssubscribe", c}));
    clis.back()->close_stdin();
    ASSERT_TRUE(clis.back()->read_until_text(fmt::format("ssubscribe\n{}\n1\n", c)))
        << clis.back()->err();
  }
  ASSERT_TRUE(wait_connected(all)) << all[0]->log() << all[1]->log() << all[2]->log();

  std::vector<Bus> buses;
  std::vector<Subscriber> subs;
  for (Daemon* h : hosts) {
    buses.push_back(Bus::connect(h->bus()));
    subs.push_back(buses.back().subscriber());
    subs.back().subscribe(channels);
  }
  constexpr int kEach = 100;  // per bus and channel
  std::map<std::pair<std::string, std::string>, int> expected;
  for (int i = 0; i < kEach; ++i) {
    for (std::size_t h = 0; h < 3; ++h) {
      for (const auto& c : channels) {
        const std::string payload = fmt::format("{} {}", "abc"[h], i);
        buses[h].publish(c, payload);
        expected[{c, payload}] = 1;
      }
    }
  }
  const std::uint64_t own = 3 * kEach;
  for (BridgeProcess* b : all) {
    ASSERT_TRUE(wait_all(all, [&] {
      return b->counter("forwarded_out") == own && b->counter("forwarded_in") == 2 * own &&
             b->counter("echo_suppressed_in") == own &&
             b->counter("echo_suppressed_out") == 2 * own;
    })) << b->stats();
  }

  // Every bus has every message once, each publisher's in its order per channel.
  for (std::size_t h = 0; h < 3; ++h) {
    std::map<std::pair<std::string, std::string>, int> seen;
    std::map<std::pair<std::string, char>, int> next;  // per channel and publishing bus
    while (const auto m = next_message(subs[h], 500ms)) {
      ++seen[{m->channel, m->payload}];
      const int i = std::stoi(m->payload.substr(2));
      const std::pair<std::string, char> from(m->channel, m->payload[0]);
      EXPECT_EQ(next[from]++, i) << m->channel << " " << m->payload;
      for (BridgeProcess* b : all) b->collect();
    }
    EXPECT_EQ(seen, expected) << "bus "
                              << "abc"[h];
  }
  // And every redis-cli subscriber once.
  const auto count = [](const std::string& text, const std::string& word) {
    std::size_t n = 0;
    for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    return n;
  };
  for (std::size_t k = 0; k < channels.size(); ++k) {
    EXPECT_TRUE(clis[k]->pump_until([&] {
      return count(clis[k]->out(), "smessage\n") >= 3 * kEach;
    })) << clis[k]->out();
    pump(all, 300ms);
    clis[k]->collect();
    EXPECT_EQ(count(clis[k]->out(), "smessage\n"), 3U * kEach);
    std::map<std::string, int> seen;
    std::istringstream lines(clis[k]->out());
    std::vector<std::string> l;
    for (std::string line; std::getline(lines, line);) l.push_back(line);
    for (std::size_t i = 0; i + 2 < l.size(); ++i) {
      if (l[i] == "smessage" && l[i + 1] == channels[k]) ++seen[l[i + 2]];
    }
    EXPECT_EQ(seen.size(), 3U * kEach) << channels[k];
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](const auto& s) { return s.second == 1; }))
        << channels[k];
  }

  for (BridgeProcess* b : all) {
    b->finish();
    EXPECT_EQ(b->counter("forwarded_out"), own);
    EXPECT_EQ(b->counter("forwarded_in"), 2 * own);
    EXPECT_EQ(b->counter("dropped_redis_down"), 0U);
    EXPECT_EQ(b->counter("dropped_redis_error"), 0U);
    EXPECT_EQ(b->counter("echo_forgotten"), 0U);
    EXPECT_EQ(b->counter("redirects"), 0U);
    EXPECT_EQ(b->counter("slot_map_refreshes"), 2U);  // one for each side
    EXPECT_EQ(b->counter("resubscribes"), 0U);
    EXPECT_EQ(b->counter("reconnects"), 0U);
    EXPECT_NE(b->log().find("in: subscribed to 3 channel(s) on 3 node(s) of the cluster"),
              std::string::npos)
        << b->log();
  }
}

// Publishes "<n>" on each channel on one bus every `period` and records when each arrives on
// another bus, until stop().
class Traffic {
 public:
  struct Arrival {
    int n;
    Clock::time_point at;
  };
  struct Channel {
    std::vector<Clock::time_point> published;  // by n
    std::vector<Arrival> arrived;
  };

  Traffic(const std::string& from, const std::string& to, std::vector<std::string> channels,
          std::chrono::microseconds period)
      : channels_(std::move(channels)) {
    for (const auto& c : channels_) results_[c];
    Bus target = Bus::connect(to);
    receiver_bus_.emplace(std::move(target));
    sub_.emplace(receiver_bus_->subscriber());
    sub_->subscribe(channels_);
    receiver_ = std::thread([this] {
      while (!stop_receiving_) {
        const auto m = sub_->receive(20ms);
        if (!m || m->kind != Kind::message) continue;
        const std::lock_guard lock(mutex_);
        results_[m->channel].arrived.push_back({std::stoi(m->payload), Clock::now()});
      }
    });
    publisher_ = std::thread([this, from, period] {
      Bus bus = Bus::connect(from);
      for (int n = 0; !stop_publishing_; ++n) {
        for (const auto& c : channels_) {
          {
            const std::lock_guard lock(mutex_);
            results_[c].published.push_back(Clock::now());
          }
          bus.publish(c, std::to_string(n));
        }
        std::this_thread::sleep_for(period);
      }
    });
  }
  ~Traffic() {
    stop_publishing_ = true;
    stop_receiving_ = true;
    if (publisher_.joinable()) publisher_.join();
    if (receiver_.joinable()) receiver_.join();
  }
  Traffic(const Traffic&) = delete;
  Traffic& operator=(const Traffic&) = delete;

  /// Stops publishing, then receiving once what is on its way has had `settle` to arrive.
  void stop(const std::vector<BridgeProcess*>& bridges, std::chrono::milliseconds settle) {
    stop_publishing_ = true;
    publisher_.join();
    pump(bridges, settle);
    stop_receiving_ = true;
    receiver_.join();
  }
  [[nodiscard]] const Channel& channel(const std::string& name) const { return results_.at(name); }

  /// What happened on `name` around `event`: the messages lost, the longest time without an
  /// arrival (a message is published every period), the time from the event until the first
  /// message published after it arrived, and whether they arrived in order.
  struct Figures {
    std::size_t published = 0;
    std::size_t lost = 0;
    std::chrono::milliseconds longest_silence{0};
    std::optional<std::chrono::milliseconds> recovery;
    bool in_order = true;
  };
  [[nodiscard]] Figures figures(const std::string& name, Clock::time_point event) const {
    const Channel& c = results_.at(name);
    Figures f;
    f.published = c.published.size();
    f.lost = f.published - c.arrived.size();
    for (std::size_t i = 1; i < c.arrived.size(); ++i) {
      if (c.arrived[i].n <= c.arrived[i - 1].n) f.in_order = false;
      f.longest_silence =
          std::max(f.longest_silence, std::chrono::duration_cast<std::chrono::milliseconds>(
                                          c.arrived[i].at - c.arrived[i - 1].at));
    }
    // A channel that went quiet for good is silent until the last publish.
    if (!c.arrived.empty() && c.published.back() > c.arrived.back().at) {
      f.longest_silence =
          std::max(f.longest_silence, std::chrono::duration_cast<std::chrono::milliseconds>(
                                          c.published.back() - c.arrived.back().at));
    }
    for (const Arrival& a : c.arrived) {
      if (c.published.at(static_cast<std::size_t>(a.n)) > event) {
        f.recovery = std::chrono::duration_cast<std::chrono::milliseconds>(a.at - event);
        break;
      }
    }
    return f;
  }

 private:
  std::vector<std::string> channels_;
  std::mutex mutex_;
  std::map<std::string, Channel> results_;
  std::optional<Bus> receiver_bus_;
  std::optional<Subscriber> sub_;
  std::atomic<bool> stop_publishing_{false};
  std::atomic<bool> stop_receiving_{false};
  std::thread receiver_;
  std::thread publisher_;
};

void report(const std::string& what, const std::string& channel, const Traffic::Figures& f) {
  const std::string line = fmt::format(
      "{}: channel {}: {} published, {} lost, longest silence {} ms, the first message published "
      "after the {} arrived {} ms after it",
      what, channel, f.published, f.lost, f.longest_silence.count(), what,
      f.recovery ? f.recovery->count() : -1);
  std::printf("%s\n", line.c_str());
  ::testing::Test::RecordProperty(what + " " + channel, line);
}

// Forwarding on `name` resumed on its own, in order, up to the last message published.
void expect_resumed(const Traffic& traffic, const std::string& name, const Traffic::Figures& f) {
  EXPECT_TRUE(f.recovery);
  EXPECT_TRUE(f.in_order);
  const auto& arrived = traffic.channel(name).arrived;
  ASSERT_FALSE(arrived.empty());
  EXPECT_EQ(static_cast<std::size_t>(arrived.back().n) + 1, f.published);
}

// Each message the out bridge took was forwarded or counted as dropped.
void expect_books_balance(const BridgeProcess& out, std::size_t published) {
  EXPECT_EQ(out.counter("forwarded_out") + out.counter("dropped_redis_down") +
                out.counter("dropped_redis_error"),
            published);
  EXPECT_GE(out.counter("slot_map_refreshes"), 2U);
}

TEST_F(ClusterBridge, ASlotMovedWhileTrafficFlowsIsFollowedBothWays) {
  RedisCluster cluster(3, 0);
  const auto channels = channels_on(cluster, "m.", {0, 1});
  const std::string& moving = channels[0];
  const std::string& staying = channels[1];
  Daemon host_a(unique_bus("a"));
  Daemon host_b(unique_bus("b"));
  BridgeProcess out(host_a.bus(), cluster.node(0).url(), {"--out", "m.*", "--max-backoff", "0.5"},
                    "--cluster");
  BridgeProcess in(host_b.bus(), cluster.node(1).url(),
                   in_flags(channels, {"--max-backoff", "0.5"}), "--cluster");
  const std::vector<BridgeProcess*> both{&out, &in};
  ASSERT_TRUE(wait_connected(both)) << out.log() << in.log();

  // Bus a -> out bridge -> SPUBLISH on the slot's node -> SSUBSCRIBE of the in bridge -> bus b.
  Traffic traffic(host_a.bus(), host_b.bus(), channels, 2ms);
  pump(both, 1s);
  cluster.move_slot(key_slot(moving), 2);
  const auto moved_at = Clock::now();
  pump(both, 2s);
  traffic.stop(both, 500ms);
  EXPECT_EQ(cluster.owner(key_slot(moving)), 2U);

  const auto moved = traffic.figures(moving, moved_at);
  const auto stayed = traffic.figures(staying, moved_at);
  report("slot move", moving, moved);
  report("slot move", staying, stayed);
  // Forwarding resumed on its own; the other slot's channel lost nothing.
  expect_resumed(traffic, moving, moved);
  EXPECT_LT(moved.lost, moved.published / 4);
  EXPECT_EQ(stayed.lost, 0U);
  EXPECT_TRUE(stayed.in_order);

  out.finish();
  in.finish();
  // The out side was answered MOVED and fetched the map again; the in side was told by an
  // unasked sunsubscribe and subscribed on the new node.
  EXPECT_GE(out.counter("redirects"), 1U);
  expect_books_balance(out, moved.published + stayed.published);
  EXPECT_EQ(in.counter("resubscribes"), 1U);
  EXPECT_GE(in.counter("slot_map_refreshes"), 2U);
  EXPECT_EQ(in.counter("forwarded_in"), moved.published - moved.lost + stayed.published);
  EXPECT_NE(in.log().find("ended the subscription to '" + moving + "' (its slot moved)"),
            std::string::npos)
      << in.log();
}

TEST_F(ClusterBridge, APrimaryKilledFailsOverToItsReplicaAndForwardingResumes) {
  RedisCluster cluster(3, 1, {"--cluster-node-timeout", "1000"});
  const auto channels = channels_on(cluster, "f.", {0, 1});
  const std::string& failing = channels[0];
  const std::string& surviving = channels[1];
  const std::size_t replica = cluster.replica_of(0);
  Daemon host_a(unique_bus("a"));
  Daemon host_b(unique_bus("b"));
  const std::string seeds =
      fmt::format("redis://{},{}", cluster.node(0).address(), cluster.node(1).address());
  BridgeProcess out(host_a.bus(), seeds, {"--out", "f.*", "--max-backoff", "0.2"}, "--cluster");
  BridgeProcess in(host_b.bus(), seeds, in_flags(channels, {"--max-backoff", "0.2"}), "--cluster");
  const std::vector<BridgeProcess*> both{&out, &in};
  ASSERT_TRUE(wait_connected(both)) << out.log() << in.log();

  Traffic traffic(host_a.bus(), host_b.bus(), channels, 2ms);
  pump(both, 1s);
  const auto killed_at = Clock::now();
  cluster.node(0).server().kill_now();
  ASSERT_TRUE(wait_all(both, [&] {
    return cluster.node(replica).call({"ROLE"}).at(0) == "master";
  })) << "the replica did not take over";
  ASSERT_TRUE(wait_connected(both)) << out.log() << in.log();
  pump(both, 1s);
  traffic.stop(both, 500ms);

  const auto failed = traffic.figures(failing, killed_at);
  const auto survived = traffic.figures(surviving, killed_at);
  report("primary kill", failing, failed);
  report("primary kill", surviving, survived);
  expect_resumed(traffic, failing, failed);
  EXPECT_GT(failed.lost, 0U);  // at most once: what the dead primary had is gone
  // The other primary's channel went on throughout.
  EXPECT_EQ(survived.lost, 0U);
  EXPECT_TRUE(survived.in_order);

  out.finish();
  in.finish();
  EXPECT_GE(out.counter("dropped_redis_down"), 1U);
  expect_books_balance(out, failed.published + survived.published);
  EXPECT_EQ(in.counter("resubscribes"), 1U);
  EXPECT_NE(out.log().find("out: lost the connection to " + cluster.node(0).address()),
            std::string::npos)
      << out.log();
  EXPECT_NE(in.log().find("in: lost the connection to " + cluster.node(0).address()),
            std::string::npos)
      << in.log();
}

// ---- refusals, retried with back-off ----------------------------------------------------------

// Starts a bridge both ways on `url` and checks that each side logs `reason` on one line, once
// however many attempts it makes, and stays connecting.
std::unique_ptr<BridgeProcess> expect_refusal(Daemon& daemon, const std::string& url,
                                              const std::string& reason) {
  auto bridge = std::make_unique<BridgeProcess>(
      daemon.bus(), url,
      std::vector<std::string>{"--out", "r.*", "--in", "r.in", "--max-backoff", "0.2"},
      "--cluster");
  for (const std::string side : {"out", "in"}) {
    const std::string line =
        fmt::format("shmcast-bridge: {}: cannot get the cluster's slot map: {}", side, reason);
    EXPECT_TRUE(bridge->wait_for([&] { return bridge->log().find(line) != std::string::npos; }))
        << bridge->log();
  }
  bridge->wait_for([] { return false; }, 1s);
  EXPECT_EQ(field(bridge->stats(), "state"), "connecting");
  const std::string& log = bridge->log();
  for (const std::string side : {"out", "in"}) {
    const std::string prefix = fmt::format("shmcast-bridge: {}: cannot", side);
    EXPECT_EQ(log.find(prefix), log.rfind(prefix)) << log;
  }
  EXPECT_NE(log.find("; retrying with back-off (next in 0.1 s, at most 0.2 s)\n"),
            std::string::npos)
      << log;
  return bridge;
}

// Once the cluster is right, the bridge forwards: a round trip through it.
void expect_round_trip(Daemon& daemon, BridgeProcess& bridge, ClusterNode& node) {
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"r.in"});
  EXPECT_EQ(node.call({"SPUBLISH", "r.in", "in"}), std::vector<std::string>{"1"});
  const auto m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "in");
  bridge.finish();
  EXPECT_EQ(bridge.counter("forwarded_in"), 1U);
}

TEST_F(ClusterBridge, ASeedThatIsNotAClusterNodeIsRefusedOnOneLine) {
  const int port = free_tcp_port();
  RedisServer plain({"--port", std::to_string(port), "--bind", "127.0.0.1"});
  Daemon daemon;
  const std::string url = fmt::format("redis://127.0.0.1:{}", port);
  expect_refusal(daemon, url,
                 url +
                     ": not a cluster node (cluster support disabled): give --cluster the "
                     "nodes of a Redis Cluster, or use --redis for a single server")
      ->finish();
}

TEST_F(ClusterBridge, AClusterWithUncoveredSlotsIsRefusedUntilTheyAreServed) {
  ClusterNode node;
  ASSERT_EQ(node.call({"CLUSTER", "ADDSLOTSRANGE", "0", "8191"}), std::vector<std::string>{"OK"});
  Daemon daemon;
  auto bridge =
      expect_refusal(daemon, node.url(),
                     node.url() +
                         ": the cluster leaves 8192 of 16384 slots without a primary (the first is "
                         "slot 8192), so a channel hashed there has nowhere to go: assign them "
                         "(redis-cli --cluster fix)");
  ASSERT_EQ(node.call({"CLUSTER", "ADDSLOTSRANGE", "8192", "16383"}),
            std::vector<std::string>{"OK"});
  expect_round_trip(daemon, *bridge, node);
}

TEST_F(ClusterBridge, AWrongPasswordIsRefusedOnOneLineUntilItIsRight) {
  ClusterNode node;
  ASSERT_EQ(node.call({"CLUSTER", "ADDSLOTSRANGE", "0", "16383"}), std::vector<std::string>{"OK"});
  ASSERT_EQ(node.call({"CONFIG", "SET", "requirepass", "right"}), std::vector<std::string>{"OK"});
  node.use_password("right");
  Daemon daemon;
  const std::string url = fmt::format("redis://:wrong@{}", node.address());
  auto bridge = expect_refusal(
      daemon, url,
      node.url() + ": AUTH refused: WRONGPASS invalid username-password pair or user is disabled.");
  EXPECT_EQ(bridge->log().find("wrong"), std::string::npos) << bridge->log();
  ASSERT_EQ(node.call({"CONFIG", "SET", "requirepass", "wrong"}), std::vector<std::string>{"OK"});
  node.use_password("wrong");
  expect_round_trip(daemon, *bridge, node);
}

}  // namespace
}  // namespace shmcast::test
