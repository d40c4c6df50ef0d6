// Bridge's out and in loops through a Redis Cluster: SPUBLISH to the primary that serves each
// channel's slot, SSUBSCRIBE on it, and the slot map fetched again whenever a MOVED answer, an
// unasked sunsubscribe or a lost node says that it changed.
#include <hiredis/hiredis.h>
#include <poll.h>

#include <deque>
#include <map>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "bridge.hpp"
#include "bridge_timing.hpp"
#include "cluster_map.hpp"
#include "crc16.hpp"

namespace shmcast::bridge {
namespace {

// A publish sent over and over again on redirections is given up after this many.
constexpr int kMaxRedirects = 5;

// One outgoing message on its way to a node.
struct Send {
  const Message* message;
  std::optional<std::uint64_t> echo;  // its entry in the echo list
  RedisAddress node;
  bool asking;  // sent after ASKING: the node serves the slot for this command only
};

// Fetches the slot map again, asking the primaries of the one it replaces, then the seeds.
// Nothing, or why no node gave one.
std::optional<std::string> fetch(std::optional<SlotMap>& map,
                                 const std::vector<RedisAddress>& seeds) {
  std::vector<RedisAddress> nodes;
  if (map) nodes = map->primaries();
  nodes.insert(nodes.end(), seeds.begin(), seeds.end());
  try {
    map = discover_slots(nodes);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return std::nullopt;
}

}  // namespace

void Bridge::run_out_cluster(const std::function<bool()>& stop) {
  Subscriber& sub = *out_subscriber_;
  std::optional<SlotMap> map;
  std::map<std::string, Context> nodes;  // a connection to each primary, by node_key
  bool refresh = true;
  Backoff backoff(options_.max_backoff);
  auto retry_at = Clock::now();
  bool ever_connected = false;
  std::string last_error;
  std::string last_reply_error;
  std::vector<Message> batch;
  batch.reserve(kBatch);

  const auto failed = [&](std::string_view attempt, const std::string& why) {
    out_connected_ = false;
    refresh = true;
    const auto delay = backoff.next();
    retry_at = Clock::now() + delay;
    log_connect_failure("out", attempt, why, last_error, delay);
  };
  // Fetches the slot map and connects to each primary that has no connection yet.
  const auto refresh_map = [&] {
    if (const auto error = fetch(map, options_.cluster)) {
      failed("get the cluster's slot map", *error);
      return;
    }
    slot_map_refreshes_.add();
    std::set<std::string> primaries;
    for (const auto& p : map->primaries()) primaries.insert(node_key(p));
    std::erase_if(nodes, [&](const auto& node) { return !primaries.contains(node.first); });
    for (const auto& p : map->primaries()) {
      if (nodes.contains(node_key(p))) continue;
      try {
        nodes.emplace(node_key(p), connect_redis(p));
        if (ever_connected) reconnects_.add();
      } catch (const std::runtime_error& e) {
        failed("connect to the cluster's primary at " + p.display(), e.what());
        return;
      }
    }
    refresh = false;
    backoff.reset();
    last_error.clear();
    if (!out_connected_) {
      log_(fmt::format("out: connected to the cluster's {} primaries", nodes.size()));
    }
    ever_connected = true;
    out_connected_ = true;
  };
  // `key` is a copy: it may be the map's own, which erase() destroys.
  const auto lose = [&](std::string key, const std::string& why) {
    log_(fmt::format("out: lost the connection to {}: {}; fetching the slot map again", key, why));
    nodes.erase(key);
    out_connected_ = false;
    refresh = true;
    redis_echoes_.mark_lost();
  };
  const auto drop = [&](const Send& send, Counter& cause) {
    cause.add();
    if (send.echo) redis_echoes_.forget(*send.echo);  // it never comes back
  };

  // Sends each message to its node and follows the redirections, a round each, so that the
  // messages of one channel keep their order.
  std::vector<Send> sends;
  std::vector<Send> redirected;
  const auto deliver = [&] {
    for (int round = 0; !sends.empty(); ++round) {
      if (round > kMaxRedirects) {
        for (const auto& send : sends) drop(send, dropped_redis_error_);
        log_(fmt::format("out: gave up {} SPUBLISH(es) redirected more than {} times", sends.size(),
                         kMaxRedirects));
        break;
      }
      // The sends of each node, in order.
      std::map<std::string, std::vector<const Send*>> by_node;
      for (const auto& send : sends) by_node[node_key(send.node)].push_back(&send);
      for (auto& [key, group] : by_node) {
        auto node = nodes.find(key);
        // A redirection may name a node that the map does not have yet; a primary of the map
        // without a connection is down, and the map is being fetched again.
        if (node == nodes.end() && round > 0) {
          try {
            node = nodes.emplace(key, connect_redis(group.front()->node)).first;
          } catch (const std::runtime_error&) {
            refresh = true;
          }
        }
        if (node == nodes.end()) {
          for (const Send* send : group) drop(*send, dropped_redis_down_);
          group.clear();
          continue;
        }
        for (const Send* send : group) {
          const auto& m = *send->message;
          if ((send->asking && !append_command(node->second.get(), {"ASKING"})) ||
              !append_command(node->second.get(), {"SPUBLISH", m.channel, m.payload})) {
            throw std::runtime_error("out of memory");
          }
        }
        // Sent in part, perhaps: the echoes are left to lose()'s mark_lost(), not forgotten.
        if (const auto error = flush_output(node->second.get()); !error.empty()) {
          dropped_redis_down_.add(group.size());
          group.clear();
          lose(key, error);
        }
      }
      redirected.clear();
      for (auto& [key, group] : by_node) {
        for (std::size_t i = 0; i < group.size(); ++i) {
          const Send& send = *group[i];
          redisContext* c = nodes.at(key).get();
          // ASKING's own answer says nothing that SPUBLISH's does not.
          Reply reply = next_reply(c);
          if (reply && send.asking) reply = next_reply(c);
          if (!reply) {
            dropped_redis_down_.add(group.size() - i);  // unconfirmed, perhaps published
            lose(key, connection_error(c));
            break;
          }
          if (reply->type != REDIS_REPLY_ERROR) {
            forwarded_out_.add();
            continue;
          }
          const std::string_view error = text(reply.get());
          if (const auto redirect = parse_redirect(error, send.node)) {
            redirects_.add();
            if (!redirect->ask) refresh = true;
            redirected.push_back({send.message, send.echo, redirect->node, redirect->ask});
            continue;
          }
          drop(send, dropped_redis_error_);
          if (last_reply_error != error) {
            last_reply_error = error;
            log_(fmt::format("out: Redis refused SPUBLISH: {}", last_reply_error));
          }
        }
      }
      std::swap(sends, redirected);
    }
    sends.clear();
  };

  while (!stop()) {
    if (refresh && Clock::now() >= retry_at) refresh_map();
    if (!receive_batch(sub, batch)) {
      for (auto it = nodes.begin(); it != nodes.end();) {
        const auto problem = idle_connection_problem(it->second.get());
        auto here = it++;
        if (problem) lose(here->first, *problem);
      }
      continue;
    }
    const auto now = Clock::now();
    for (const Message& m : batch) {
      if (!to_send(m, now)) continue;
      if (!map) {
        dropped_redis_down_.add();
        continue;
      }
      const int slot = key_slot(m.channel);
      const auto echo = matches_in(m.channel)
                            ? std::optional(redis_echoes_.expect(m.channel, m.payload, now, slot))
                            : std::nullopt;
      sends.push_back({&m, echo, map->primary_of(slot), false});
    }
    deliver();
  }
  out_connected_ = false;
}

namespace {

// One connection holding SSUBSCRIBE for the channels its node serves.
struct Subscription {
  Context c;
  // The replies awaited, in order: a channel's confirmation, or (nothing) a PING's.
  std::deque<std::optional<std::string>> awaited;
  std::set<std::string> channels;  // confirmed
  Pinger pinger;
};

}  // namespace

void Bridge::run_in_cluster(const std::function<bool()>& stop) {
  std::optional<SlotMap> map;
  std::map<std::string, Subscription> subscriptions;  // by node_key
  std::vector<std::string> unplaced(options_.in.begin(), options_.in.end());
  std::set<std::string> ever_subscribed;
  std::size_t subscribed = 0;
  bool refresh = true;
  Backoff backoff(options_.max_backoff);
  auto retry_at = Clock::now();
  std::string last_error;
  std::string last_publish_error;
  // The out side's messages are remembered from the start: those that were sent before their
  // channel's subscription took effect are passed over as lost once it has.
  redis_echoes_.reset(true);

  const auto failed = [&](std::string_view attempt, const std::string& why) {
    refresh = true;
    const auto delay = backoff.next();
    retry_at = Clock::now() + delay;
    log_connect_failure("in", attempt, why, last_error, delay);
  };
  const auto unplace = [&](const std::string& channel, bool was_confirmed) {
    unplaced.push_back(channel);
    if (was_confirmed) --subscribed;
    in_connected_ = false;
    refresh = true;
  };
  // `key` is a copy: it may be the map's own, which erase() destroys.
  const auto lose = [&](std::string key, const std::string& why) {
    log_(fmt::format("in: lost the connection to {}: {}; subscribing again", key, why));
    Subscription& s = subscriptions.at(key);
    for (const auto& c : s.channels) unplace(c, true);
    for (const auto& c : s.awaited) {
      if (c) unplace(*c, false);
    }
    subscriptions.erase(key);
  };
  // Subscribes each unplaced channel on the primary that serves its slot.
  const auto place = [&] {
    if (refresh) {
      if (const auto error = fetch(map, options_.cluster)) {
        failed("get the cluster's slot map", *error);
        return;
      }
      slot_map_refreshes_.add();
      refresh = false;
    }
    std::vector<std::string> waiting;
    std::set<std::string> touched;
    for (auto& channel : unplaced) {
      const RedisAddress& node = map->primary_of(key_slot(channel));
      const std::string key = node_key(node);
      auto it = subscriptions.find(key);
      if (it == subscriptions.end()) {
        try {
          it = subscriptions.emplace(key, Subscription{connect_redis(node), {}, {}, {}}).first;
          if (!ever_subscribed.empty()) reconnects_.add();
        } catch (const std::runtime_error& e) {
          failed("connect to the cluster's primary at " + node.display(), e.what());
          waiting.push_back(std::move(channel));
          continue;
        }
      }
      if (!append_command(it->second.c.get(), {"SSUBSCRIBE", channel})) {
        throw std::runtime_error("out of memory");
      }
      it->second.awaited.emplace_back(std::move(channel));
      touched.insert(key);
    }
    unplaced = std::move(waiting);
    for (const auto& key : touched) {
      if (const auto error = flush_output(subscriptions.at(key).c.get()); !error.empty()) {
        lose(key, error);
      }
    }
  };
  // Handles one reply of the subscription at `key`; false when it has to go.
  const auto handle = [&](const std::string& key, Subscription& s, const redisReply* r) {
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && text(r->element[0]) == "pong") {
      if (!s.awaited.empty()) s.awaited.pop_front();
      s.pinger.answered(Clock::now());
      return true;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      if (s.awaited.empty() || !s.awaited.front()) {
        log_(fmt::format("in: {} answered an error: {}", key, text(r)));
        return false;
      }
      std::string channel = std::move(*s.awaited.front());
      s.awaited.pop_front();
      if (parse_redirect(text(r), RedisAddress{})) {
        redirects_.add();
      } else {
        log_(fmt::format("in: Redis refused SSUBSCRIBE '{}': {}", channel, text(r)));
      }
      // A map fetched again right away can still be the old one: no hurry that would hammer.
      retry_at = Clock::now() + backoff.next();
      unplace(channel, false);
      return true;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return true;
    const std::string_view kind = text(r->element[0]);
    const std::string channel(text(r->element[1]));
    if (kind == "ssubscribe") {
      if (!s.awaited.empty()) s.awaited.pop_front();
      s.channels.insert(channel);
      ++subscribed;
      if (!ever_subscribed.insert(channel).second) resubscribes_.add();
      redis_echoes_.mark_lost();
      if (subscribed == options_.in.size()) {
        last_error.clear();
        backoff.reset();
        in_connected_ = true;
        log_(fmt::format("in: subscribed to {} channel(s) on {} node(s) of the cluster", subscribed,
                         subscriptions.size()));
      }
    } else if (kind == "sunsubscribe") {
      // Unasked for: the node no longer serves the channel's slot, which moved.
      if (s.channels.erase(channel) > 0) {
        log_(
            fmt::format("in: {} ended the subscription to '{}' (its slot moved); subscribing "
                        "again",
                        key, channel));
        unplace(channel, true);
        retry_at = Clock::now();
      }
    } else if (kind == "smessage") {
      bring_in(channel, text(r->element[2]), key_slot(channel), last_publish_error);
    }
    return true;
  };

  std::vector<pollfd> fds;
  std::vector<std::string> keys;
  while (!stop()) {
    if (!unplaced.empty() && Clock::now() >= retry_at) place();
    std::erase_if(subscriptions, [](const auto& s) {
      return s.second.channels.empty() && s.second.awaited.empty();
    });

    const auto tick = Clock::now();
    fds.clear();
    keys.clear();
    for (auto it = subscriptions.begin(); it != subscriptions.end();) {
      auto& [key, s] = *it++;
      if (s.pinger.overdue(tick)) {
        lose(key, fmt::format("no answer to PING within {}", seconds(kCommandTimeout)));
        continue;
      }
      if (s.pinger.due(tick)) {
        if (!append_command(s.c.get(), {"PING"})) throw std::runtime_error("out of memory");
        s.awaited.emplace_back();
        s.pinger.sent(tick);
        if (const auto error = flush_output(s.c.get()); !error.empty()) {
          lose(key, error);
          continue;
        }
      }
      fds.push_back({s.c->fd, POLLIN, 0});
      keys.push_back(key);
    }
    if (fds.empty()) {
      sleep_unless(kPollInterval, stop);
      continue;
    }
    if (::poll(fds.data(), fds.size(), static_cast<int>(kPollInterval.count())) <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Subscription& s = subscriptions.at(keys[i]);
      for (;;) {
        Reply r;
        const ReadStatus status = read_reply(s.c.get(), 0ms, r);
        if (status == ReadStatus::timeout) break;
        if (status == ReadStatus::failed) {
          lose(keys[i], connection_error(s.c.get()));
          break;
        }
        if (!handle(keys[i], s, r.get())) {
          lose(keys[i], "a reply out of step");
          break;
        }
      }
    }
  }
  in_connected_ = false;
  redis_echoes_.reset(false);
}

}  // namespace shmcast::bridge
