// The bridge's cluster arithmetic on its own: CRC16 and the hash slot against Redis's test
// vector and CLUSTER KEYSLOT answers, the slot map from a CLUSTER SLOTS reply, MOVED / ASK, and
// the --cluster URL.

#include <hiredis/hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cluster_map.hpp"
#include "crc16.hpp"
#include "redis_link.hpp"

namespace shmcast::bridge {
namespace {

TEST(Crc16, MatchesRedisTestVector) {
  // Redis's own crc16 test: CRC16("123456789") == 0x31C3.
  EXPECT_EQ(crc16("123456789"), 0x31C3);
  EXPECT_EQ(crc16(""), 0);
  EXPECT_EQ(crc16(std::string_view("\0", 1)), 0);
  EXPECT_EQ(crc16(std::string_view("\xff", 1)), 0x1EF0);
}

TEST(KeySlot, MatchesClusterKeyslotAnswers) {
  // Each answer is what CLUSTER KEYSLOT gave on a Redis 7.0 cluster node.
  const std::vector<std::pair<std::string, int>> answers{
      {"123456789", 12739},
      {"foo", 12182},
      {"bar", 5061},
      {"x.a", 10439},
      {"", 0},
      // Only the first {tag} counts, and only when it is not empty.
      {"{user1000}.following", 3443},
      {"foo{bar}{zap}", 5061},
      {"foo{}{bar}", 8363},
      {"foo{{bar}}zap", 4015},
      {"{}foo", 9500},
      {"a{b", 13340},
  };
  for (const auto& [key, slot] : answers) EXPECT_EQ(key_slot(key), slot) << key;
  EXPECT_EQ(key_slot("events.{orders}.eu"), key_slot("orders"));
}

// A reply as hiredis builds it from the RESP bytes a server would send.
struct ReplyFromBytes {
  explicit ReplyFromBytes(std::string_view resp) {
    redisReader* reader = redisReaderCreate();
    void* out = nullptr;
    const bool ok = redisReaderFeed(reader, resp.data(), resp.size()) == REDIS_OK &&
                    redisReaderGetReply(reader, &out) == REDIS_OK && out != nullptr;
    redisReaderFree(reader);
    if (!ok) throw std::runtime_error("not one RESP reply");
    reply.reset(static_cast<redisReply*>(out));
  }
  Reply reply;
};

// One CLUSTER SLOTS range served by host:port (with the node id and no replicas).
std::string range(int first, int last, std::string_view host, int port) {
  return "*3\r\n:" + std::to_string(first) + "\r\n:" + std::to_string(last) + "\r\n*3\r\n$" +
         std::to_string(host.size()) + "\r\n" + std::string(host) + "\r\n:" + std::to_string(port) +
         "\r\n$2\r\nid\r\n";
}

TEST(SlotMap, PlacesEverySlotOnItsPrimaryWithTheSeedsCredentials) {
  RedisAddress asked = parse_redis_url("redis://alice:pw@10.0.0.9:7000");
  const ReplyFromBytes r("*4\r\n" + range(0, 5460, "10.0.0.1", 7000) +
                         range(5461, 10922, "", 7001) + range(10923, 16000, "10.0.0.3", 7002) +
                         range(16001, 16383, "10.0.0.1", 7000));
  const SlotMap map = SlotMap::parse(r.reply.get(), asked);
  ASSERT_EQ(map.primaries().size(), 3U);
  EXPECT_EQ(node_key(map.primary_of(0)), "10.0.0.1:7000");
  EXPECT_EQ(node_key(map.primary_of(5460)), "10.0.0.1:7000");
  // An empty host is the node that answered.
  EXPECT_EQ(node_key(map.primary_of(5461)), "10.0.0.9:7001");
  EXPECT_EQ(node_key(map.primary_of(16000)), "10.0.0.3:7002");
  EXPECT_EQ(node_key(map.primary_of(16383)), "10.0.0.1:7000");
  EXPECT_EQ(map.primary_of(key_slot("x.a")).port, 7001);
  for (const auto& p : map.primaries()) {
    EXPECT_EQ(p.user, "alice");
    EXPECT_EQ(p.password, "pw");
  }
}

TEST(SlotMap, RefusesAMapWithUncoveredSlots) {
  const RedisAddress asked = parse_redis_url("redis://127.0.0.1:7000");
  const auto refusal = [&](std::string_view resp) {
    try {
      const ReplyFromBytes r(resp);
      (void)SlotMap::parse(r.reply.get(), asked);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(refusal("*2\r\n" + range(0, 99, "h", 1) + range(200, 16383, "h", 2)),
            "the cluster leaves 100 of 16384 slots without a primary (the first is slot 100), so "
            "a channel hashed there has nowhere to go: assign them (redis-cli --cluster fix)");
  EXPECT_NE(refusal("*0\r\n").find("leaves 16384 of 16384 slots"), std::string::npos);
  // A primary whose address the cluster does not know serves nothing the bridge can reach.
  EXPECT_NE(refusal("*2\r\n" + range(0, 99, "?", 1) + range(100, 16383, "h", 2))
                .find("leaves 100 of 16384 slots without a primary (the first is slot 0)"),
            std::string::npos);
  EXPECT_EQ(refusal("+OK\r\n"), "its answer to CLUSTER SLOTS is not a slot map");
  EXPECT_EQ(refusal("*1\r\n" + range(0, 16384, "h", 1)),
            "its answer to CLUSTER SLOTS is not a slot map");
}

TEST(Redirect, ReadsMovedAndAsk) {
  const RedisAddress from = parse_redis_url("redis://:pw@127.0.0.1:7000");
  const auto moved = parse_redirect("MOVED 3999 127.0.0.1:6381", from);
  ASSERT_TRUE(moved);
  EXPECT_FALSE(moved->ask);
  EXPECT_EQ(moved->slot, 3999);
  EXPECT_EQ(node_key(moved->node), "127.0.0.1:6381");
  EXPECT_EQ(moved->node.password, "pw");

  const auto ask = parse_redirect("ASK 16383 ::1:7002", from);
  ASSERT_TRUE(ask);
  EXPECT_TRUE(ask->ask);
  EXPECT_EQ(ask->slot, 16383);
  EXPECT_EQ(ask->node.host, "::1");
  EXPECT_EQ(ask->node.port, 7002);

  // No host: the node that answered.
  const auto same_host = parse_redirect("MOVED 1 :7001", from);
  ASSERT_TRUE(same_host);
  EXPECT_EQ(node_key(same_host->node), "127.0.0.1:7001");

  for (const std::string_view other :
       {"ERR unknown command", "MOVED", "MOVED x 127.0.0.1:1", "MOVED 16384 h:1", "ASK 1 h",
        "CLUSTERDOWN The cluster is down", "TRYAGAIN Multiple keys request during rehashing"}) {
    EXPECT_FALSE(parse_redirect(other, from)) << other;
  }
}

TEST(ClusterUrl, ListsSeedsSharingOnePassword) {
  const auto seeds = parse_cluster_url("redis://:s3cret@10.0.0.5:7000,10.0.0.6:7001,[::1]:7002");
  ASSERT_EQ(seeds.size(), 3U);
  EXPECT_EQ(seeds[0].display(), "redis://10.0.0.5:7000");
  EXPECT_EQ(seeds[1].display(), "redis://10.0.0.6:7001");
  EXPECT_EQ(seeds[2].display(), "redis://[::1]:7002");
  for (const auto& s : seeds) EXPECT_EQ(s.password, "s3cret");
  EXPECT_EQ(parse_cluster_url("redis://h").front().port, 6379);

  const std::vector<std::pair<std::string, std::string>> refused{
      {"unix:///run/redis.sock", "unknown scheme"},
      {"redis://:hunter2@h:1,,h:2", "node '': no host"},
      {"redis://:hunter2@h:1,h:0", "node 'h:0': the port '0' is not a number from 1 to 65535"},
      {"redis://h:1,h:2/0", "node 'h:2/0': a path or database has no meaning"},
  };
  for (const auto& [url, reason] : refused) {
    try {
      (void)parse_cluster_url(url);
      ADD_FAILURE() << url << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(reason), std::string::npos) << message;
      EXPECT_NE(message.find("use redis://[[user]:password@]host:port[,host:port...]"),
                std::string::npos)
          << message;
      EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace shmcast::bridge
