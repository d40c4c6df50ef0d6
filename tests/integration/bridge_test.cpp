// Tests of shmcast-bridge: its URL parser and echo rule on their own, then the program itself
// between real shmcastd processes and a private redis-server on a unix socket in a temporary
// directory, which the tests start, kill and restart by pid.

#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "bridge.hpp"
#include "integration/bridge_support.hpp"
#include "integration/bus_fixture.hpp"
#include "integration/redis_server.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;
using bridge::EchoFilter;
using bridge::parse_redis_url;
using Clock = std::chrono::steady_clock;

// ---- the URL parser ---------------------------------------------------------------------------

TEST(BridgeUrl, AcceptsTcpAndUnixForms) {
  const auto plain = parse_redis_url("redis://10.0.0.5:6380");
  EXPECT_EQ(plain.host, "10.0.0.5");
  EXPECT_EQ(plain.port, 6380);
  EXPECT_EQ(plain.password, "");
  EXPECT_EQ(plain.socket_path, "");
  EXPECT_EQ(plain.display(), "redis://10.0.0.5:6380");

  const auto secret = parse_redis_url("redis://:p@ss:w@rd@redis.example:7000");
  EXPECT_EQ(secret.host, "redis.example");
  EXPECT_EQ(secret.port, 7000);
  EXPECT_EQ(secret.user, "");
  EXPECT_EQ(secret.password, "p@ss:w@rd");
  EXPECT_EQ(secret.display(), "redis://redis.example:7000");

  const auto user = parse_redis_url("redis://alice:pw@h");
  EXPECT_EQ(user.user, "alice");
  EXPECT_EQ(user.password, "pw");
  EXPECT_EQ(user.port, 6379);

  const auto ipv6 = parse_redis_url("redis://[::1]:6379");
  EXPECT_EQ(ipv6.host, "::1");
  EXPECT_EQ(ipv6.display(), "redis://[::1]:6379");

  const auto unix_socket = parse_redis_url("unix:///run/redis/redis.sock");
  EXPECT_EQ(unix_socket.socket_path, "/run/redis/redis.sock");
  EXPECT_EQ(unix_socket.host, "");
  EXPECT_EQ(unix_socket.display(), "unix:///run/redis/redis.sock");
}

TEST(BridgeUrl, RefusesWhatItCannotUseWithTheReason) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"redis://u:hunter2@h:99999", "not a number from 1 to 65535"},
      {"redis://:hunter2@@h:1/0", "a path or database has no meaning"},
      {"http://h:1", "unknown scheme"},
      {"h:6379", "unknown scheme"},
      {"unix://relative.sock", "must be absolute"},
      {"redis://", "no host"},
      {"redis://:6379", "no host"},
      {"redis://h:0", "not a number from 1 to 65535"},
      {"redis://h:65536", "not a number from 1 to 65535"},
      {"redis://h:12ab", "not a number from 1 to 65535"},
      {"redis://h:", "not a number from 1 to 65535"},
      {"redis://secret@h:1", "put the password after a colon"},
      {"redis://:@h:1", "the password is empty"},
      {"redis://h:1/0", "a path or database has no meaning"},
      {"redis://::1:6379", "put an IPv6 address in brackets"},
      {"redis://[::1", "no ']'"},
  };
  for (const auto& [url, reason] : cases) {
    try {
      (void)parse_redis_url(url);
      ADD_FAILURE() << url << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(reason), std::string::npos) << url << ": " << message;
      // The URL is quoted with its password, if any, replaced by ***.
      const auto at = url.rfind('@');
      const auto colon = url.find(':', 8);
      const std::string shown = at == std::string::npos ? url
                                : colon < at ? url.substr(0, colon + 1) + "***" + url.substr(at)
                                             : "redis://***" + url.substr(at);
      EXPECT_NE(message.find("'" + shown + "'"), std::string::npos) << message;
      EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
      EXPECT_NE(message.find("unix:///path/to/socket"), std::string::npos) << message;
    }
  }
}

// ---- the echo rule ----------------------------------------------------------------------------

TEST(BridgeEchoFilter, DropsOwnMessagesInOrderAndDeliversOthers) {
  EchoFilter filter(100, 10s);
  const auto now = Clock::now();
  filter.expect("ch", "one", now);
  filter.expect("ch", "two", now);
  // Someone else's message in between is not ours.
  EXPECT_FALSE(filter.consume("ch", "other", now));
  // The same bytes on another channel are another message.
  EXPECT_FALSE(filter.consume("ch2", "one", now));
  EXPECT_TRUE(filter.consume("ch", "one", now));
  EXPECT_TRUE(filter.consume("ch", "two", now));
  EXPECT_FALSE(filter.consume("ch", "two", now));
  EXPECT_EQ(filter.size(), 0U);
}

TEST(BridgeEchoFilter, IdenticalContentFromOthersIsDeliveredAsOftenAsPublished) {
  EchoFilter filter(100, 10s);
  const auto now = Clock::now();
  filter.expect("ch", "same", now);
  // Three copies arrive: one is ours, whichever it is; two are delivered.
  int delivered = 0;
  for (int i = 0; i < 3; ++i) delivered += filter.consume("ch", "same", now) ? 0 : 1;
  EXPECT_EQ(delivered, 2);
}

TEST(BridgeEchoFilter, OnlyLostEntriesArePassedOver) {
  EchoFilter filter(100, 10s);
  const auto now = Clock::now();
  filter.expect("ch", "a", now);
  filter.expect("ch", "b", now);
  // Without a loss, "a" must come back first: "b" before it is someone else's.
  EXPECT_FALSE(filter.consume("ch", "b", now));
  EXPECT_EQ(filter.size(), 2U);
  // After a loss, "a" may never come: "b" passes over it.
  filter.mark_lost();
  filter.expect("ch", "c", now);
  filter.expect("ch", "d", now);
  EXPECT_TRUE(filter.consume("ch", "b", now));
  EXPECT_EQ(filter.size(), 2U);
  // "c" came after the loss: it is not passed over.
  EXPECT_FALSE(filter.consume("ch", "d", now));
  EXPECT_TRUE(filter.consume("ch", "c", now));
  EXPECT_TRUE(filter.consume("ch", "d", now));
}

TEST(BridgeEchoFilter, AFailedPublishIsForgottenWithoutPassingOverOthers) {
  EchoFilter filter(100, 10s);
  const auto now = Clock::now();
  const std::uint64_t refused = filter.expect("ch", "same", now);
  const std::uint64_t b = filter.expect("ch", "b", now);
  EXPECT_NE(refused, b);
  filter.forget(refused);
  EXPECT_EQ(filter.size(), 1U);
  // Someone else's identical message is not taken for the refused one.
  EXPECT_FALSE(filter.consume("ch", "same", now));
  EXPECT_TRUE(filter.consume("ch", "b", now));
  EXPECT_EQ(filter.size(), 0U);
  // Forgetting an entry that is gone already changes nothing.
  filter.expect("ch", "c", now);
  filter.forget(b);
  EXPECT_EQ(filter.size(), 1U);
  // No loss was marked: an entry remembered earlier is still not passed over.
  filter.expect("ch", "d", now);
  EXPECT_FALSE(filter.consume("ch", "d", now));
  EXPECT_TRUE(filter.consume("ch", "c", now));
}

TEST(BridgeEchoFilter, OrderIsKeptAndLookedAtPerStream) {
  // Through a cluster, slot 1's and slot 2's messages come back over two subscriptions, in
  // either order between them.
  EchoFilter filter(100, 10s);
  const auto now = Clock::now();
  filter.expect("a", "1", now, 1);
  filter.expect("b", "1", now, 2);
  filter.expect("a", "2", now, 1);
  EXPECT_TRUE(filter.consume("b", "1", now, 2));
  // Within stream 1 the order holds: "2" before "1" is someone else's.
  EXPECT_FALSE(filter.consume("a", "2", now, 1));
  EXPECT_TRUE(filter.consume("a", "1", now, 1));
  EXPECT_TRUE(filter.consume("a", "2", now, 1));
  EXPECT_EQ(filter.size(), 0U);

  // A loss passes over the lost entries of the matching stream only.
  filter.expect("a", "lost", now, 1);
  filter.expect("b", "kept", now, 2);
  filter.mark_lost();
  filter.expect("a", "3", now, 1);
  EXPECT_TRUE(filter.consume("a", "3", now, 1));
  EXPECT_EQ(filter.size(), 1U);
  EXPECT_TRUE(filter.consume("b", "kept", now, 2));
  EXPECT_EQ(filter.size(), 0U);
}

TEST(BridgeEchoFilter, InactiveExpiredAndOverflowingEntriesAreForgotten) {
  EchoFilter filter(2, 1s);
  const auto now = Clock::now();
  filter.reset(false);
  filter.expect("ch", "a", now);
  EXPECT_EQ(filter.size(), 0U);
  filter.reset(true);

  filter.expect("ch", "old", now);
  EXPECT_FALSE(filter.consume("ch", "old", now + 2s));
  EXPECT_EQ(filter.size(), 0U);
  EXPECT_EQ(filter.forgotten(), 1U);

  filter.expect("ch", "1", now);
  filter.expect("ch", "2", now);
  filter.expect("ch", "3", now);
  EXPECT_EQ(filter.size(), 2U);
  EXPECT_EQ(filter.forgotten(), 2U);
  EXPECT_FALSE(filter.consume("ch", "1", now));
  EXPECT_TRUE(filter.consume("ch", "2", now));
  EXPECT_TRUE(filter.consume("ch", "3", now));
}

// ---- the program ------------------------------------------------------------------------------

class BridgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!redis_available()) GTEST_SKIP() << "redis-server / redis-cli not installed";
    redis_ = std::make_unique<RedisServer>();
  }

  std::unique_ptr<RedisServer> redis_;
};

const std::string kBinary("bin\0\xff\x01\r\n end", 12);

TEST_F(BridgeTest, RedisPublishReachesALocalSubscriberByteForByte) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.psubscribe({"*"});
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--in", "r.*", "--in", "r.1"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  // Redis counts one delivery per matching pattern of the bridge; the bus gets the message once.
  const Result published = run({"redis-cli", "-s", redis_->socket(), "publish", "r.1", "hello"});
  EXPECT_EQ(published.out, "2\n") << published.err;
  RedisClient publisher(redis_->socket());
  EXPECT_EQ(publisher.call({"PUBLISH", "r.2", kBinary}), std::vector<std::string>{"1"});
  EXPECT_EQ(publisher.call({"PUBLISH", "other", "not forwarded"}), std::vector<std::string>{"0"});
  EXPECT_EQ(publisher.call({"PUBLISH", "r.3", ""}), std::vector<std::string>{"1"});

  const std::vector<std::pair<std::string, std::string>> expected{
      {"r.1", "hello"}, {"r.2", kBinary}, {"r.3", ""}};
  for (const auto& [channel, payload] : expected) {
    const auto m = next_message(sub);
    ASSERT_TRUE(m) << "no message on " << channel;
    EXPECT_EQ(m->channel, channel);
    EXPECT_EQ(m->payload, payload);
  }
  EXPECT_FALSE(next_message(sub, 300ms));
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("forwarded_in") == 3; }));
  bridge.finish();
  EXPECT_EQ(bridge.counter("forwarded_in"), 3U);
  EXPECT_EQ(bridge.counter("forwarded_out"), 0U);
  EXPECT_EQ(bridge.counter("reconnects"), 0U);
}

TEST_F(BridgeTest, LocalPublishReachesRedisSubscribersInOrder) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  RedisClient subscriber(redis_->socket());
  subscriber.send({"PSUBSCRIBE", "*"});
  ASSERT_EQ(subscriber.next(), (std::vector<std::string>{"psubscribe", "*", "1"}));
  Command cli({"redis-cli", "-s", redis_->socket(), "subscribe", "l.text"});
  cli.close_stdin();
  ASSERT_TRUE(cli.read_until_text("subscribe\nl.text\n1\n")) << cli.err();
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--out", "l.*", "--out", "l.text"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  // The bridge's own subscriber counts among the deliveries, once per matching pattern; Redis
  // gets the message once.
  EXPECT_EQ(bus.publish("other", "not forwarded"), 0U);
  EXPECT_EQ(bus.publish("l.text", "hello"), 2U);
  EXPECT_EQ(bus.publish("l.bin", kBinary), 1U);
  constexpr int kMany = 2000;
  for (int i = 0; i < kMany; ++i) ASSERT_EQ(bus.publish("l.seq", std::to_string(i)), 1U);

  EXPECT_EQ(subscriber.next(), (std::vector<std::string>{"pmessage", "*", "l.text", "hello"}));
  EXPECT_EQ(subscriber.next(), (std::vector<std::string>{"pmessage", "*", "l.bin", kBinary}));
  for (int i = 0; i < kMany; ++i) {
    ASSERT_EQ(subscriber.next(),
              (std::vector<std::string>{"pmessage", "*", "l.seq", std::to_string(i)}));
  }
  EXPECT_FALSE(subscriber.next(300ms));
  EXPECT_TRUE(cli.read_until_text("message\nl.text\nhello\n")) << cli.out();
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("forwarded_out") == kMany + 2; }));
  bridge.finish();
  EXPECT_EQ(bridge.counter("forwarded_out"), static_cast<std::uint64_t>(kMany + 2));
  EXPECT_EQ(bridge.counter("dropped_redis_down"), 0U);
  EXPECT_EQ(bridge.counter("dropped_ring_full"), 0U);
  EXPECT_EQ(cli.out(), "subscribe\nl.text\n1\nmessage\nl.text\nhello\n");
}

TEST_F(BridgeTest, TwoBusesThroughOneRedisExchangeEachMessageOnceWithoutEcho) {
  Daemon host_a(unique_bus("a"));
  Daemon host_b(unique_bus("b"));
  Bus bus_a = Bus::connect(host_a.bus());
  Bus bus_b = Bus::connect(host_b.bus());
  Subscriber sub_a = bus_a.subscriber();
  Subscriber sub_b = bus_b.subscriber();
  sub_a.psubscribe({"x.*"});
  sub_b.psubscribe({"x.*"});
  RedisClient redis_sub(redis_->socket());
  redis_sub.send({"PSUBSCRIBE", "x.*"});
  ASSERT_EQ(redis_sub.next(), (std::vector<std::string>{"psubscribe", "x.*", "1"}));
  const std::vector<std::string> both_ways{"--out", "x.*", "--in", "x.*"};
  BridgeProcess bridge_a(host_a.bus(), redis_->url(), both_ways);
  BridgeProcess bridge_b(host_b.bus(), redis_->url(), both_ways);
  ASSERT_TRUE(bridge_a.wait_connected()) << bridge_a.log();
  ASSERT_TRUE(bridge_b.wait_connected()) << bridge_b.log();

  constexpr int kEach = 200;
  std::map<std::pair<std::string, std::string>, int> expected;
  for (int i = 0; i < kEach; ++i) {
    bus_a.publish("x.a", fmt::format("from a {}", i));
    bus_b.publish("x.b", fmt::format("from b {}", i));
    expected[{"x.a", fmt::format("from a {}", i)}] = 1;
    expected[{"x.b", fmt::format("from b {}", i)}] = 1;
  }
  // The same bytes from three publishers (each bus and Redis itself) are three messages.
  bus_a.publish("x.same", "same");
  bus_b.publish("x.same", "same");
  RedisClient publisher(redis_->socket());
  publisher.call({"PUBLISH", "x.same", "same"});
  expected[{"x.same", "same"}] = 3;

  // Each bridge sends out its bus's messages and brings in the other's and Redis's own; its
  // own messages come back from Redis and are dropped there, and what it brought in is seen by
  // its own local subscriber and not sent back out.
  for (BridgeProcess* bridge : {&bridge_a, &bridge_b}) {
    ASSERT_TRUE(bridge->wait_for([&] {
      bridge_a.collect();
      bridge_b.collect();
      return bridge->counter("forwarded_out") == kEach + 1 &&
             bridge->counter("forwarded_in") == kEach + 2 &&
             bridge->counter("echo_suppressed_in") == kEach + 1 &&
             bridge->counter("echo_suppressed_out") == kEach + 2;
    })) << bridge->stats();
  }
  // Every message once everywhere: on both buses (local or bridged) and in Redis; quiet for
  // 500 ms after the last means none came back around.
  const auto collect_both = [&] {
    bridge_a.collect();
    bridge_b.collect();
  };
  EXPECT_EQ(drain(sub_a, 500ms), expected);
  collect_both();
  EXPECT_EQ(drain(sub_b, 500ms), expected);
  collect_both();
  EXPECT_EQ(drain(redis_sub, 500ms), expected);
  collect_both();

  for (BridgeProcess* bridge : {&bridge_a, &bridge_b}) {
    bridge->finish();
    EXPECT_EQ(bridge->counter("forwarded_out"), static_cast<std::uint64_t>(kEach + 1));
    EXPECT_EQ(bridge->counter("forwarded_in"), static_cast<std::uint64_t>(kEach + 2));
    EXPECT_EQ(bridge->counter("echo_suppressed_in"), static_cast<std::uint64_t>(kEach + 1));
    EXPECT_EQ(bridge->counter("echo_suppressed_out"), static_cast<std::uint64_t>(kEach + 2));
    EXPECT_EQ(bridge->counter("dropped_ring_full"), 0U);
    EXPECT_EQ(field(bridge->stats(), "echo_forgotten"), "0");
    EXPECT_NE(bridge->log().find(" echo_forgotten=0 "), std::string::npos) << bridge->log();
    EXPECT_EQ(bridge->counter("reconnects"), 0U);
  }
}

TEST_F(BridgeTest, ASubscriptionToAServerThatStoppedAnsweringIsReplaced) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"in.ch"});
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--in", "in.*", "--max-backoff", "0.2"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  redis_->freeze();
  const bool noticed = bridge.wait_for(
      [&] { return bridge.log().find("in: lost the connection") != std::string::npos; }, 15s);
  redis_->thaw();
  ASSERT_TRUE(noticed) << bridge.log();
  EXPECT_NE(bridge.log().find("no answer to PING within 5.0 s"), std::string::npos) << bridge.log();
  ASSERT_TRUE(bridge.wait_for([&] {
    return field(bridge.stats(), "state") == "connected" && bridge.counter("reconnects") == 1;
  })) << bridge.log();

  RedisClient publisher(redis_->socket());
  EXPECT_EQ(publisher.call({"PUBLISH", "in.ch", "after"}), std::vector<std::string>{"1"});
  const auto m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "after");
  bridge.finish();
  EXPECT_EQ(bridge.counter("reconnects"), 1U);
}

TEST_F(BridgeTest, AServerThatDropsEachNewConnectionIsRetriedWithBackoff) {
  Daemon daemon;
  RedisClient admin(redis_->socket());
  // The admin connection is the one client allowed: Redis accepts each further connection, sends
  // an error and closes it.
  ASSERT_EQ(admin.call({"CONFIG", "SET", "maxclients", "1"}), std::vector<std::string>{"OK"});
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--out", "out.*", "--in", "in.*"});
  ASSERT_TRUE(bridge.wait_for([&] {
    return bridge.log().find("max number of clients") != std::string::npos;
  })) << bridge.log();
  bridge.wait_for([] { return false; }, 1s);
  EXPECT_EQ(field(bridge.stats(), "state"), "connecting");
  EXPECT_EQ(bridge.log().find("connected to Redis"), std::string::npos) << bridge.log();

  ASSERT_EQ(admin.call({"CONFIG", "SET", "maxclients", "100"}), std::vector<std::string>{"OK"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();
  bridge.finish();
  EXPECT_EQ(bridge.counter("reconnects"), 0U);
}

TEST_F(BridgeTest, AClosedStdoutStopsTheBridgeQuietly) {
  Daemon daemon;
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--out", "out.*"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();
  bridge.close_stdout();
  EXPECT_EQ(bridge.wait_exit(), 0) << bridge.log();
  EXPECT_NE(bridge.log().find("shmcast-bridge: stopped: state=stopped"), std::string::npos)
      << bridge.log();
  EXPECT_EQ(bridge.log().find("terminate"), std::string::npos) << bridge.log();
}

TEST_F(BridgeTest, ReconnectsAfterRedisIsKilledAndRestarted) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"in.ch"});
  BridgeProcess bridge(daemon.bus(), redis_->url(),
                       {"--out", "out.*", "--in", "in.*", "--max-backoff", "0.2"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  const auto round_trip = [&](const std::string& tag) {
    RedisClient redis_sub(redis_->socket());
    redis_sub.send({"SUBSCRIBE", "out.ch"});
    ASSERT_EQ(redis_sub.next(), (std::vector<std::string>{"subscribe", "out.ch", "1"}));
    EXPECT_EQ(bus.publish("out.ch", "out " + tag), 1U);
    EXPECT_EQ(redis_sub.next(), (std::vector<std::string>{"message", "out.ch", "out " + tag}));
    RedisClient publisher(redis_->socket());
    EXPECT_EQ(publisher.call({"PUBLISH", "in.ch", "in " + tag}), std::vector<std::string>{"1"});
    const auto m = next_message(sub);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->payload, "in " + tag);
  };
  round_trip("before");

  redis_->kill_now();
  ASSERT_TRUE(bridge.wait_for([&] { return field(bridge.stats(), "state") == "connecting"; }))
      << bridge.log();
  // While Redis is down, what is published locally is dropped and counted.
  EXPECT_EQ(bus.publish("out.ch", "lost"), 1U);
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("dropped_redis_down") == 1; }))
      << bridge.stats();

  redis_->start();
  ASSERT_TRUE(bridge.wait_for([&] {
    return field(bridge.stats(), "state") == "connected" && bridge.counter("reconnects") == 2;
  })) << bridge.log();
  round_trip("after");

  bridge.finish();
  EXPECT_EQ(bridge.counter("forwarded_out"), 2U);
  EXPECT_EQ(bridge.counter("forwarded_in"), 2U);
  EXPECT_EQ(bridge.counter("dropped_redis_down"), 1U);
  EXPECT_EQ(bridge.counter("reconnects"), 2U);
  EXPECT_NE(bridge.log().find("out: lost the connection to Redis"), std::string::npos);
  EXPECT_NE(bridge.log().find("in: lost the connection to Redis"), std::string::npos);
  EXPECT_FALSE(next_message(sub, 200ms));
}

TEST_F(BridgeTest, WaitsForARedisThatIsNotUpYet) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"in.ch"});
  redis_->kill_now();
  BridgeProcess bridge(daemon.bus(), redis_->url(), {"--in", "in.*", "--max-backoff", "0.2"});
  const std::string refused = "in: cannot connect to Redis at " + redis_->url();
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.log().find(refused) != std::string::npos; }))
      << bridge.log();
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(bridge.wait_for([&] { return !bridge.stats().empty(); }));
  EXPECT_EQ(field(bridge.stats(), "state"), "connecting");

  redis_->start();
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();
  RedisClient publisher(redis_->socket());
  EXPECT_EQ(publisher.call({"PUBLISH", "in.ch", "late"}), std::vector<std::string>{"1"});
  const auto m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "late");
  bridge.finish();
  EXPECT_EQ(bridge.counter("reconnects"), 0U);
  // One line for the refusal, however many attempts it took.
  const std::string log = bridge.log();
  EXPECT_EQ(log.find(refused), log.rfind(refused)) << log;
}

TEST_F(BridgeTest, ShardedRoundTripWithSpublishAndSsubscribe) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.psubscribe({"*"});
  RedisClient redis_sub(redis_->socket());
  redis_sub.send({"SSUBSCRIBE", "s.out"});
  ASSERT_EQ(redis_sub.next(), (std::vector<std::string>{"ssubscribe", "s.out", "1"}));
  BridgeProcess bridge(daemon.bus(), redis_->url(),
                       {"--sharded", "--out", "s.*", "--in", "s.in", "--in", "s.in2"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  EXPECT_EQ(bus.publish("s.out", kBinary), 2U);  // the bridge and `sub`
  EXPECT_EQ(redis_sub.next(), (std::vector<std::string>{"smessage", "s.out", kBinary}));
  RedisClient publisher(redis_->socket());
  EXPECT_EQ(publisher.call({"SPUBLISH", "s.in", "sharded in"}), std::vector<std::string>{"1"});
  EXPECT_EQ(publisher.call({"PUBLISH", "s.in", "plain publish"}), std::vector<std::string>{"0"});

  auto m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->channel, "s.out");
  m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->channel, "s.in");
  EXPECT_EQ(m->payload, "sharded in");
  // The bridge published s.in locally, where its own --out 's.*' sees it: it is not sent back.
  EXPECT_FALSE(next_message(sub, 300ms));
  EXPECT_FALSE(redis_sub.next(300ms));
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("echo_suppressed_out") == 1; }));
  bridge.finish();
  EXPECT_EQ(bridge.counter("forwarded_out"), 1U);
  EXPECT_EQ(bridge.counter("forwarded_in"), 1U);
}

TEST_F(BridgeTest, CountsWhatItCannotForwardByCause) {
  Daemon daemon(unique_bus("limits"), {"--ring-bytes", "65536", "--max-payload", "1024"});
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"in.ch"});
  BridgeProcess bridge(daemon.bus(), redis_->url(),
                       {"--out", "out.*", "--in", "in.*", "--log-interval", "0.05"});
  ASSERT_TRUE(bridge.wait_connected()) << bridge.log();

  // Redis refuses the bridge's PUBLISH: the default user may no longer publish.
  RedisClient admin(redis_->socket());
  EXPECT_EQ(admin.call({"ACL", "SETUSER", "default", "-publish"}), std::vector<std::string>{"OK"});
  EXPECT_EQ(bus.publish("out.ch", "refused"), 1U);
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("dropped_redis_error") == 1; }))
      << bridge.stats();
  EXPECT_EQ(admin.call({"ACL", "SETUSER", "default", "+publish"}), std::vector<std::string>{"OK"});

  // A message over the bus's max-payload cannot be brought in.
  EXPECT_EQ(admin.call({"PUBLISH", "in.ch", std::string(2000, 'x')}),
            std::vector<std::string>{"1"});
  EXPECT_EQ(admin.call({"PUBLISH", "in.ch", "fits"}), std::vector<std::string>{"1"});
  const auto m = next_message(sub);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "fits");
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("dropped_local_error") == 1; }))
      << bridge.stats();

  // While the bridge is stopped its ring fills; what did not fit is counted once it reads on.
  ::kill(bridge.pid(), SIGSTOP);
  const std::string payload(1000, 'p');
  std::uint64_t delivered = 0;
  std::uint64_t refused = 0;
  for (int i = 0; i < 200; ++i) (bus.publish("out.fill", payload) == 1 ? delivered : refused)++;
  ::kill(bridge.pid(), SIGCONT);
  ASSERT_GT(delivered, 0U);
  ASSERT_GT(refused, 0U);
  ASSERT_TRUE(bridge.wait_for([&] {
    return bridge.counter("forwarded_out") == delivered &&
           bridge.counter("dropped_ring_full") == refused;
  })) << bridge.stats();

  bridge.finish();
  EXPECT_EQ(bridge.counter("dropped_redis_error"), 1U);
  EXPECT_EQ(bridge.counter("dropped_local_error"), 1U);
  EXPECT_EQ(bridge.counter("dropped_ring_full"), refused);
  EXPECT_EQ(bridge.counter("forwarded_out"), delivered);
  EXPECT_EQ(bridge.counter("forwarded_in"), 1U);
  EXPECT_EQ(bridge.counter("dropped_redis_down"), 0U);
  EXPECT_NE(bridge.log().find("out: Redis refused PUBLISH: NOPERM"), std::string::npos)
      << bridge.log();
  EXPECT_NE(bridge.log().find("in: the bus refused a message: "), std::string::npos)
      << bridge.log();
  // The counters also go to the log every --log-interval.
  EXPECT_NE(bridge.log().find("shmcast-bridge: state=connected forwarded_out="), std::string::npos)
      << bridge.log();
}

// A stand-in for Redis on a unix socket: it answers the bridge's first PING, then sends one more
// reply that nobody asked for and keeps the connection open.
class ChattyServer {
 public:
  explicit ChattyServer(std::string socket) : socket_(std::move(socket)) {
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    socket_.copy(address.sun_path, sizeof address.sun_path - 1);
    if (listener_ < 0 ||
        ::bind(listener_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener_, 8) != 0) {
      throw std::runtime_error("cannot listen on " + socket_);
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~ChattyServer() {
    done_ = true;
    thread_.join();
    for (const int fd : clients_) ::close(fd);
    ::close(listener_);
    ::unlink(socket_.c_str());
  }
  ChattyServer(const ChattyServer&) = delete;
  ChattyServer& operator=(const ChattyServer&) = delete;

  [[nodiscard]] std::string url() const { return "unix://" + socket_; }

 private:
  void serve() {
    while (!done_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      clients_.push_back(fd);
      std::string request;
      char buffer[256];
      while (request.find("PING\r\n") == std::string::npos) {
        const ssize_t r = ::read(fd, buffer, sizeof buffer);
        if (r <= 0) break;
        request.append(buffer, static_cast<std::size_t>(r));
      }
      const std::string_view pong = "+PONG\r\n";
      const std::string_view unasked = "-ERR out of the blue\r\n";
      // The bridge may be gone already (it reconnects, and the test ends): no check.
      (void)::send(fd, pong.data(), pong.size(), MSG_NOSIGNAL);
      std::this_thread::sleep_for(200ms);
      (void)::send(fd, unasked.data(), unasked.size(), MSG_NOSIGNAL);
    }
  }

  std::string socket_;
  int listener_ = -1;
  std::vector<int> clients_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

TEST(BridgeIdle, AReplyNobodyAskedForDropsTheConnection) {
  TempDir dir("bridge-test");
  Daemon daemon;
  ChattyServer server(dir.path() + "/chatty.sock");
  BridgeProcess bridge(daemon.bus(), server.url(), {"--out", "out.*", "--max-backoff", "0.2"});
  ASSERT_TRUE(bridge.wait_for([&] {
    return bridge.log().find("out: lost the connection to Redis at " + server.url() +
                             ": Redis sent a reply nobody asked for: ERR out of the blue") !=
           std::string::npos;
  })) << bridge.log();
  ASSERT_TRUE(bridge.wait_for([&] { return bridge.counter("reconnects") >= 1; })) << bridge.log();
  bridge.finish();
}

// ---- errors -----------------------------------------------------------------------------------

void expect_error_line(const Result& r, int status, const std::string& needle) {
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("shmcast-bridge: ", 0), 0U) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(BridgeErrors, BadArgumentsAreOneLineAndANonZeroExit) {
  const std::string bridge = bin_dir() + "/shmcast-bridge";
  const std::string bus = unique_bus("none");
  expect_error_line(
      run({bridge, "--bus", bus, "--redis", "http://x", "--out", "a"}), 2,
      "bad Redis URL 'http://x': unknown scheme: use redis://[[user]:password@]host[:port] "
      "or unix:///path/to/socket");
  const std::string either =
      "give either --redis URL (one server) or --cluster URL (a Redis Cluster)";
  expect_error_line(run({bridge, "--bus", bus, "--out", "a"}), 2, either);
  expect_error_line(run({bridge, "--bus", bus, "--redis", "redis://h:1", "--cluster", "redis://h:2",
                         "--out", "a"}),
                    2, either);
  expect_error_line(
      run({bridge, "--bus", bus, "--cluster", "redis://:hunter2@h:1,h:x", "--out", "a"}), 2,
      "bad cluster URL 'redis://:***@h:1,h:x': node 'h:x': the port 'x' is not a "
      "number from 1 to 65535: use redis://[[user]:password@]host:port[,host:port...]");
  expect_error_line(
      run({bridge, "--bus", bus, "--cluster", "redis://h:1", "--in", "ok", "--in", "news.*"}), 2,
      "--in 'news.*' is a glob pattern, but --cluster subscribes with SSUBSCRIBE");
  expect_error_line(run({bridge, "--bus", bus, "--redis", "redis://h:1"}), 2,
                    "nothing to bridge: give --out PATTERN and/or --in PATTERN");
  expect_error_line(run({bridge, "--bus", bus, "--redis", "redis://h:1", "--sharded", "--in", "ok",
                         "--in", "news.*"}),
                    2, "--in 'news.*' is a glob pattern, but --sharded subscribes with SSUBSCRIBE");
  expect_error_line(
      run({bridge, "--bus", bus, "--redis", "redis://h:1", "--out", "a", "--max-backoff", "0"}), 2,
      "--max-backoff");
  expect_error_line(run({bridge, "--bus", "bad/name", "--redis", "redis://h:1", "--out", "a"}), 1,
                    "bad/name");
  expect_error_line(run({bridge, "--bus", bus, "--redis", "redis://h:1", "--out", "a"}), 1,
                    fmt::format("no coordinator for bus '{}'", bus));
}

}  // namespace
}  // namespace shmcast::test
