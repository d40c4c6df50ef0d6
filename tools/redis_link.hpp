// The bridge's side of a Redis connection: where the server is (its URL), connecting and
// authenticating, pipelined commands, and replies read with a timeout.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;
struct redisReply;

namespace shmcast::bridge {

// Where the Redis server is: a TCP host and port, or a unix socket path.
struct RedisAddress {
  std::string host;
  int port = 6379;
  std::string socket_path;  // set for unix://, and then host is empty
  std::string user;         // empty: AUTH with the password alone
  std::string password;     // empty: no AUTH

  // The address without its password, for logs.
  [[nodiscard]] std::string display() const;
};

// Parses redis://[[user]:password@]host[:port] (port 6379 if left out; an IPv6 host in
// brackets) or unix:///path/to/socket. Throws std::invalid_argument with a one-line message that
// says what is wrong and which forms are accepted.
RedisAddress parse_redis_url(std::string_view url);

// Parses redis://[[user]:password@]host[:port][,host[:port]...]: a cluster's seed nodes, sharing
// one user and password. Throws std::invalid_argument as parse_redis_url does.
std::vector<RedisAddress> parse_cluster_url(std::string_view url);

// "host:port": one node, for maps of connections.
std::string node_key(const RedisAddress& node);

// How long a command may go unanswered before the server counts as gone.
inline constexpr std::chrono::milliseconds kCommandTimeout{5000};

struct ContextFree {
  void operator()(redisContext* c) const;
};
using Context = std::unique_ptr<redisContext, ContextFree>;

struct ReplyFree {
  void operator()(redisReply* r) const;
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// Connects and authenticates. Throws std::runtime_error with the reason.
Context connect_redis(const RedisAddress& address);

// Appends one command, its arguments binary-safe. False only when out of memory.
bool append_command(redisContext* c, std::initializer_list<std::string_view> args);

// The next reply, waiting at most the context's command timeout; null when the connection
// failed (c->errstr says why).
Reply next_reply(redisContext* c);

// A string reply's bytes.
std::string_view text(const redisReply* r);

// Why the connection failed, for the log.
std::string connection_error(const redisContext* c);

// Writes out what was appended. Empty on success, else why the connection failed.
std::string flush_output(redisContext* c);

enum class ReadStatus { reply, timeout, failed };

// Waits at most `timeout` for the next reply without giving up the connection on a timeout (a
// hiredis read timeout would).
ReadStatus read_reply(redisContext* c, std::chrono::milliseconds timeout, Reply& out);

// Why an idle connection is no longer usable, or nothing when it still is: the server closed it
// (which an idle publisher would otherwise learn only by losing its next message), or it sent a
// reply that nobody asked for, which would be taken for the answer to the next publish and put
// every later reply out of step.
std::optional<std::string> idle_connection_problem(redisContext* c);

}  // namespace shmcast::bridge
