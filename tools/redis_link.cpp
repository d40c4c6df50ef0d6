// The bridge's side of a Redis connection: its URL, connecting, commands and replies.
#include "redis_link.hpp"

#include <hiredis/hiredis.h>
#include <poll.h>

#include <cerrno>
#include <charconv>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace shmcast::bridge {
namespace {

constexpr timeval kConnectTimeout{2, 0};
constexpr timeval kCommandTimeval{kCommandTimeout.count() / 1000,
                                  (kCommandTimeout.count() % 1000) * 1000};

constexpr std::string_view kUrlForms =
    "use redis://[[user]:password@]host[:port] or unix:///path/to/socket";

// `url` with its password (everything after the user's colon, up to the last '@') as "***", so
// that an error message about the URL does not put the password in a log.
std::string redacted(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (!url.starts_with(kScheme)) return std::string(url);
  const std::string_view rest = url.substr(kScheme.size());
  const auto at = rest.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  const std::string_view credentials = rest.substr(0, at);
  const auto colon = credentials.find(':');
  const std::string_view user =
      colon == std::string_view::npos ? std::string_view() : credentials.substr(0, colon + 1);
  return fmt::format("{}{}***{}", kScheme, user, rest.substr(at));
}

}  // namespace

void ContextFree::operator()(redisContext* c) const {
  redisFree(c);
}

void ReplyFree::operator()(redisReply* r) const {
  freeReplyObject(r);
}

std::string RedisAddress::display() const {
  if (!socket_path.empty()) return "unix://" + socket_path;
  const bool ipv6 = host.find(':') != std::string::npos;
  return fmt::format("redis://{}{}{}:{}", ipv6 ? "[" : "", host, ipv6 ? "]" : "", port);
}

namespace {

// Takes [[user]:password@] off the front of `rest` into `address`. Empty, or what is wrong.
std::string take_credentials(std::string_view& rest, RedisAddress& address) {
  const auto at = rest.rfind('@');
  if (at == std::string_view::npos) return {};
  const std::string_view credentials = rest.substr(0, at);
  const auto colon = credentials.find(':');
  if (colon == std::string_view::npos) return "put the password after a colon";
  address.user = credentials.substr(0, colon);
  address.password = credentials.substr(colon + 1);
  if (address.password.empty()) return "the password is empty";
  rest = rest.substr(at + 1);
  return {};
}

// Reads host[:port] (an IPv6 host in brackets) into `address`. Empty, or what is wrong.
std::string take_host_port(std::string_view rest, RedisAddress& address) {
  if (rest.find('/') != std::string_view::npos) return "a path or database has no meaning";
  std::string_view port;
  if (rest.starts_with('[')) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return "no ']' after the IPv6 address";
    address.host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return "expected ':port' after ']'";
    if (!rest.empty()) port = rest.substr(1);
  } else {
    const auto colon = rest.find(':');
    address.host = rest.substr(0, colon);
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
    if (port.find(':') != std::string_view::npos) return "put an IPv6 address in brackets";
  }
  if (address.host.empty()) return "no host";
  if (port.data() != nullptr) {
    int value = 0;
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || error != std::errc() || end != port.data() + port.size() || value < 1 ||
        value > 65535) {
      return fmt::format("the port '{}' is not a number from 1 to 65535", port);
    }
    address.port = value;
  }
  return {};
}

}  // namespace

RedisAddress parse_redis_url(std::string_view url) {
  RedisAddress address;
  const auto fail = [&](std::string_view why) {
    return std::invalid_argument(
        fmt::format("bad Redis URL '{}': {}: {}", redacted(url), why, kUrlForms));
  };
  if (url.starts_with("unix://")) {
    address.socket_path = url.substr(7);
    if (!address.socket_path.starts_with('/')) throw fail("the socket path must be absolute");
    return address;
  }
  if (!url.starts_with("redis://")) throw fail("unknown scheme");
  std::string_view rest = url.substr(8);
  if (auto why = take_credentials(rest, address); !why.empty()) throw fail(why);
  if (auto why = take_host_port(rest, address); !why.empty()) throw fail(why);
  return address;
}

std::vector<RedisAddress> parse_cluster_url(std::string_view url) {
  const auto fail = [&](std::string_view why) {
    return std::invalid_argument(fmt::format(
        "bad cluster URL '{}': {}: use redis://[[user]:password@]host:port[,host:port...]",
        redacted(url), why));
  };
  if (!url.starts_with("redis://")) throw fail("unknown scheme");
  std::string_view rest = url.substr(8);
  RedisAddress credentials;
  if (auto why = take_credentials(rest, credentials); !why.empty()) throw fail(why);
  std::vector<RedisAddress> nodes;
  for (;;) {
    const auto comma = rest.find(',');
    RedisAddress node = credentials;
    const std::string_view entry = rest.substr(0, comma);
    if (auto why = take_host_port(entry, node); !why.empty()) {
      throw fail(fmt::format("node '{}': {}", entry, why));
    }
    nodes.push_back(std::move(node));
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return nodes;
}

std::string node_key(const RedisAddress& node) {
  return fmt::format("{}:{}", node.host, node.port);
}

bool append_command(redisContext* c, std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()) ==
         REDIS_OK;
}

Reply next_reply(redisContext* c) {
  void* reply = nullptr;
  if (redisGetReply(c, &reply) != REDIS_OK) return nullptr;
  return Reply(static_cast<redisReply*>(reply));
}

std::string_view text(const redisReply* r) {
  return {r->str, r->len};
}

std::string connection_error(const redisContext* c) {
  return c->err == REDIS_ERR_EOF || c->errstr[0] == '\0' ? "the server closed the connection"
                                                         : std::string(c->errstr);
}

Context connect_redis(const RedisAddress& address) {
  Context c(address.socket_path.empty()
                ? redisConnectWithTimeout(address.host.c_str(), address.port, kConnectTimeout)
                : redisConnectUnixWithTimeout(address.socket_path.c_str(), kConnectTimeout));
  if (!c) throw std::runtime_error("out of memory");
  if (c->err != 0) throw std::runtime_error(c->errstr);
  // TCP keepalive lets the kernel find a peer that went away without a word.
  if (address.socket_path.empty() && redisEnableKeepAlive(c.get()) != REDIS_OK) {
    throw std::runtime_error(connection_error(c.get()));
  }
  if (redisSetTimeout(c.get(), kCommandTimeval) != REDIS_OK) {
    throw std::runtime_error(connection_error(c.get()));
  }
  if (!address.password.empty()) {
    const bool appended = address.user.empty()
                              ? append_command(c.get(), {"AUTH", address.password})
                              : append_command(c.get(), {"AUTH", address.user, address.password});
    Reply reply = appended ? next_reply(c.get()) : nullptr;
    if (!reply) throw std::runtime_error(connection_error(c.get()));
    if (reply->type == REDIS_REPLY_ERROR) {
      throw std::runtime_error(fmt::format("AUTH refused: {}", text(reply.get())));
    }
  }
  // A server over maxclients, or in protected mode, accepts the connection, sends an error and
  // closes it: only an answered command shows that the connection is usable.
  Reply pong = append_command(c.get(), {"PING"}) ? next_reply(c.get()) : nullptr;
  if (!pong) throw std::runtime_error(connection_error(c.get()));
  if (pong->type == REDIS_REPLY_ERROR) {
    throw std::runtime_error(fmt::format("Redis refused PING: {}", text(pong.get())));
  }
  return c;
}

std::string flush_output(redisContext* c) {
  for (int flushed = 0; flushed == 0;) {
    if (redisBufferWrite(c, &flushed) != REDIS_OK) return connection_error(c);
  }
  return {};
}

ReadStatus read_reply(redisContext* c, std::chrono::milliseconds timeout, Reply& out) {
  void* reply = nullptr;
  if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return ReadStatus::failed;
  if (reply == nullptr) {
    pollfd p{c->fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (ready < 0 && errno != EINTR) return ReadStatus::failed;
    if (ready <= 0) return ReadStatus::timeout;
    if (redisBufferRead(c) != REDIS_OK) return ReadStatus::failed;
    if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return ReadStatus::failed;
    if (reply == nullptr) return ReadStatus::timeout;
  }
  out.reset(static_cast<redisReply*>(reply));
  return ReadStatus::reply;
}

std::optional<std::string> idle_connection_problem(redisContext* c) {
  pollfd p{c->fd, POLLIN, 0};
  if (::poll(&p, 1, 0) > 0 && redisBufferRead(c) != REDIS_OK) return connection_error(c);
  void* reply = nullptr;
  if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return connection_error(c);
  if (reply == nullptr) return std::nullopt;
  const Reply unasked(static_cast<redisReply*>(reply));
  return unasked->type == REDIS_REPLY_ERROR || unasked->type == REDIS_REPLY_STATUS
             ? fmt::format("Redis sent a reply nobody asked for: {}", text(unasked.get()))
             : std::string("Redis sent a reply nobody asked for");
}

}  // namespace shmcast::bridge
