// SlotMap from CLUSTER SLOTS, the discovery of it through any known node, and MOVED / ASK.
#include "cluster_map.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

namespace shmcast::bridge {
namespace {

std::optional<int> number(std::string_view digits) {
  int value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

SlotMap SlotMap::parse(const redisReply* reply, const RedisAddress& asked) {
  const auto malformed = [] {
    return std::runtime_error("its answer to CLUSTER SLOTS is not a slot map");
  };
  if (reply->type != REDIS_REPLY_ARRAY) throw malformed();
  SlotMap map;
  std::array<bool, kClusterSlots> covered{};
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* range = reply->element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
        range->element[0]->type != REDIS_REPLY_INTEGER ||
        range->element[1]->type != REDIS_REPLY_INTEGER ||
        range->element[2]->type != REDIS_REPLY_ARRAY || range->element[2]->elements < 2) {
      throw malformed();
    }
    const long long first = range->element[0]->integer;
    const long long last = range->element[1]->integer;
    const redisReply* node = range->element[2];
    if (first < 0 || last >= kClusterSlots || first > last ||
        node->element[0]->type != REDIS_REPLY_STRING ||
        node->element[1]->type != REDIS_REPLY_INTEGER) {
      throw malformed();
    }
    // "?" is a node whose address the cluster does not know: its slots count as uncovered.
    const std::string_view host = text(node->element[0]);
    if (host == "?") continue;
    RedisAddress primary = asked;
    primary.host = host.empty() ? asked.host : std::string(host);
    primary.port = static_cast<int>(node->element[1]->integer);
    std::size_t index = 0;
    while (index < map.primaries_.size() && node_key(map.primaries_[index]) != node_key(primary)) {
      ++index;
    }
    if (index == map.primaries_.size()) map.primaries_.push_back(std::move(primary));
    for (long long slot = first; slot <= last; ++slot) {
      map.owner_[static_cast<std::size_t>(slot)] = static_cast<std::uint16_t>(index);
      covered[static_cast<std::size_t>(slot)] = true;
    }
  }
  int uncovered = 0;
  int first_uncovered = -1;
  for (int slot = 0; slot < kClusterSlots; ++slot) {
    if (covered[static_cast<std::size_t>(slot)]) continue;
    ++uncovered;
    if (first_uncovered < 0) first_uncovered = slot;
  }
  if (uncovered > 0) {
    throw std::runtime_error(fmt::format(
        "the cluster leaves {} of {} slots without a primary (the first is slot {}), so a "
        "channel hashed there has nowhere to go: assign them (redis-cli --cluster fix)",
        uncovered, kClusterSlots, first_uncovered));
  }
  return map;
}

SlotMap discover_slots(const std::vector<RedisAddress>& nodes) {
  std::string reasons;
  std::set<std::string> asked;
  for (const auto& node : nodes) {
    if (!asked.insert(node_key(node)).second) continue;
    std::string why;
    try {
      const Context c = connect_redis(node);
      Reply reply = append_command(c.get(), {"CLUSTER", "SLOTS"}) ? next_reply(c.get()) : nullptr;
      if (!reply) {
        why = connection_error(c.get());
      } else if (reply->type == REDIS_REPLY_ERROR) {
        const std::string_view error = text(reply.get());
        why = error.find("cluster support disabled") != std::string_view::npos
                  ? "not a cluster node (cluster support disabled): give --cluster the nodes "
                    "of a Redis Cluster, or use --redis for a single server"
                  : fmt::format("Redis refused CLUSTER SLOTS: {}", error);
      } else {
        return SlotMap::parse(reply.get(), node);
      }
    } catch (const std::runtime_error& e) {
      why = e.what();
    }
    reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", node.display(), why);
  }
  throw std::runtime_error(reasons);
}

std::optional<Redirect> parse_redirect(std::string_view error, const RedisAddress& from) {
  Redirect redirect;
  if (error.starts_with("MOVED ")) {
    error.remove_prefix(6);
  } else if (error.starts_with("ASK ")) {
    redirect.ask = true;
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const auto space = error.find(' ');
  const auto colon = error.rfind(':');
  if (space == std::string_view::npos || colon == std::string_view::npos || colon < space) {
    return std::nullopt;
  }
  const auto slot = number(error.substr(0, space));
  const auto port = number(error.substr(colon + 1));
  if (!slot || *slot < 0 || *slot >= kClusterSlots || !port) return std::nullopt;
  redirect.slot = *slot;
  redirect.node = from;
  const std::string_view host = error.substr(space + 1, colon - space - 1);
  if (!host.empty()) redirect.node.host = host;
  redirect.node.port = *port;
  redirect.node.socket_path.clear();
  return redirect;
}

}  // namespace shmcast::bridge
