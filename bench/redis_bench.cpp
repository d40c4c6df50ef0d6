// redis-bench-pubsub: shmcast-bench's scenarios against a running redis-server on a unix
// socket, with hiredis clients, so that bench/compare.sh can put Redis Pub/Sub next to shmcast.
//
// Every connection is non-blocking and driven with poll(2), so a role notices the end of the run
// even while the server holds it back. A publisher sends --pipeline PUBLISH commands, then
// reads their replies (1: one round trip per message).
#include <poll.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <CLI/CLI.hpp>

#include "pubsub_harness.hpp"

namespace {

using namespace std::chrono_literals;
using pubsub_bench::Stopped;
using pubsub_bench::Wait;
using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = 50ms;
constexpr auto kConnectTimeout = 10s;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

std::string_view text(const redisReply& r) {
  return {r.str, r.len};
}

// The server answered a command with an error (the connection itself is fine).
class ErrorReply : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Connection {
 public:
  explicit Connection(const std::string& socket) : socket_(socket) {
    // Many subscribers connecting at once can fill the server's accept backlog; that passes.
    const auto deadline = Clock::now() + kConnectTimeout;
    for (;;) {
      ctx_ = redisConnectUnixNonBlock(socket.c_str());
      const int err = errno;
      if (ctx_ == nullptr) throw std::bad_alloc();
      if (ctx_->err == 0) return;
      const std::string why = ctx_->errstr;
      redisFree(ctx_);
      ctx_ = nullptr;
      if (err != EAGAIN || Clock::now() > deadline) {
        throw std::runtime_error(
            fmt::format("cannot connect to redis-server at {}: {}; start it with --unixsocket {}",
                        socket, why, socket));
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  ~Connection() { redisFree(ctx_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void append(std::initializer_list<std::string_view> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (std::string_view a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lengths.data()) !=
        REDIS_OK) {
      fail();
    }
  }

  // Sends every appended command; false if `stopped` turned true first.
  bool write_all(const Stopped& stopped) {
    for (;;) {
      int done = 0;
      if (redisBufferWrite(ctx_, &done) != REDIS_OK) fail();
      if (done != 0) return true;
      if (stopped()) return false;
      pollfd p{ctx_->fd, POLLOUT, 0};
      (void)poll(&p, 1, static_cast<int>(kPollInterval.count()));
    }
  }

  // The next reply, or null if none arrived within `timeout`. Spinning reads the socket
  // again and again, yielding in between; blocking sleeps in poll(2).
  Reply next(Wait wait, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      void* r = nullptr;
      if (redisGetReplyFromReader(ctx_, &r) != REDIS_OK) fail();
      if (r != nullptr) {
        Reply reply(static_cast<redisReply*>(r));
        if (reply->type == REDIS_REPLY_ERROR) {
          throw ErrorReply(fmt::format("redis-server answered: {}", text(*reply)));
        }
        return reply;
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return nullptr;
      if (wait != Wait::spin) {  // block, and the default: sleep in poll
        pollfd p{ctx_->fd, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      } else {
        // Spinning, but the server needs a core too: give it this one if it waits for it.
        sched_yield();
      }
      // Non-blocking: with nothing to read this returns at once and the loop comes back.
      if (redisBufferRead(ctx_) != REDIS_OK) fail();
    }
  }

  // The next reply; null only if `stopped` turned true first.
  Reply next_until(const Stopped& stopped) {
    while (!stopped()) {
      if (Reply r = next(Wait::block, kPollInterval)) return r;
    }
    return nullptr;
  }

  // A reply the setup needs; throws if it takes longer than the connect timeout.
  Reply setup_reply() {
    const auto deadline = Clock::now() + kConnectTimeout;
    Reply r = next_until([&] { return Clock::now() > deadline; });
    if (!r) throw std::runtime_error(fmt::format("redis-server at {} did not answer", socket_));
    return r;
  }

 private:
  [[noreturn]] void fail() const {
    throw std::runtime_error(fmt::format("redis-server at {}: {}", socket_,
                                         ctx_->err != 0 ? ctx_->errstr : "connection failed"));
  }

  std::string socket_;
  redisContext* ctx_ = nullptr;
};

class RedisSubscription final : public pubsub_bench::Subscription {
 public:
  RedisSubscription(const std::string& socket, const std::string& channel) : conn_(socket) {
    conn_.append({"SUBSCRIBE", channel});
    conn_.write_all([] { return false; });
    const Reply r = conn_.setup_reply();
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || text(*r->element[0]) != "subscribe") {
      throw std::runtime_error("unexpected answer to SUBSCRIBE");
    }
  }

  std::optional<std::string_view> receive(Wait wait, std::chrono::milliseconds timeout) override {
    last_ = conn_.next(wait, timeout);
    if (!last_) return std::nullopt;
    if (last_->type != REDIS_REPLY_ARRAY || last_->elements != 3 ||
        text(*last_->element[0]) != "message") {
      throw std::runtime_error("a subscribed connection received something else than a message");
    }
    return text(*last_->element[2]);
  }

 private:
  Connection conn_;
  Reply last_;
};

class RedisPublisher final : public pubsub_bench::Publisher {
 public:
  explicit RedisPublisher(const std::string& socket) : conn_(socket) {}

  void queue(std::string_view channel, std::string_view payload) override {
    conn_.append({"PUBLISH", channel, payload});
    ++queued_;
  }

  std::optional<std::uint64_t> flush(const Stopped& stopped) override {
    if (!conn_.write_all(stopped)) return std::nullopt;
    std::uint64_t receivers = 0;
    for (; queued_ > 0; --queued_) {
      const Reply r = conn_.next_until(stopped);
      if (!r) return std::nullopt;
      if (r->type != REDIS_REPLY_INTEGER) throw std::runtime_error("unexpected answer to PUBLISH");
      receivers += static_cast<std::uint64_t>(r->integer);
    }
    return receivers;
  }

 private:
  Connection conn_;
  std::uint64_t queued_ = 0;
};

class RedisTransport final : public pubsub_bench::Transport {
 public:
  RedisTransport(std::string socket, pid_t server) : socket_(std::move(socket)), server_(server) {}

  std::unique_ptr<pubsub_bench::Subscription> subscribe(
      const std::vector<std::string>& channels) override {
    return std::make_unique<RedisSubscription>(socket_, pubsub_bench::one_channel(channels));
  }
  std::unique_ptr<pubsub_bench::Publisher> publisher() override {
    return std::make_unique<RedisPublisher>(socket_);
  }
  bool counts_receivers() const override { return true; }
  bool has_server() const override { return true; }
  std::string name() const override { return "redis"; }
  std::vector<pid_t> servers() const override {
    return server_ > 0 ? std::vector<pid_t>{server_} : std::vector<pid_t>{};
  }

 private:
  std::string socket_;
  pid_t server_;
};

// Redis disconnects a subscriber whose output buffer passes the pubsub limit; the harness keeps
// publishers within 1 MiB of their slowest subscriber, but a server with a lower limit would
// still cut subscribers off mid-run, so say so before it happens.
void warn_on_pubsub_limit(const std::string& socket) {
  Connection conn(socket);
  conn.append({"CONFIG", "GET", "client-output-buffer-limit"});
  conn.write_all([] { return false; });
  Reply r;
  try {
    r = conn.setup_reply();
  } catch (const ErrorReply&) {
    return;  // CONFIG refused (renamed, or not allowed to this user): no warning, not an error
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return;
  std::istringstream in{std::string(text(*r->element[1]))};
  std::string word;
  while (in >> word && word != "pubsub") {
  }
  std::string hard;
  std::string soft;
  std::string seconds;
  if (!(in >> hard >> soft >> seconds) || (hard == "0" && soft == "0" && seconds == "0")) return;
  fmt::print(stderr,
             "redis-bench-pubsub: warning: redis-server at {} disconnects slow subscribers "
             "(client-output-buffer-limit pubsub {} {} {}); start it with "
             "--client-output-buffer-limit 'pubsub 0 0 0'\n",
             socket, hard, soft, seconds);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "redis-bench-pubsub: shmcast-bench's scenarios against a running redis-server on a unix "
      "socket, publishers and subscribers in separate processes with hiredis clients."};
  pubsub_bench::Options opt;
  std::string socket;
  app.add_option("--socket", socket, "The redis-server's unix socket")->required();
  pid_t server = 0;
  app.add_option("--server-pid", server,
                 "The redis-server's pid, so its CPU time counts in cpu_ns_per_delivery");
  pubsub_bench::add_options(app, opt, pubsub_bench::common_scenarios());
  app.add_option("--pipeline", opt.pipeline,
                 "PUBLISH commands a publisher sends before it reads their replies")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 16));
  CLI11_PARSE(app, argc, argv);

  try {
    warn_on_pubsub_limit(socket);
  } catch (const std::exception& e) {
    fmt::print(stderr, "redis-bench-pubsub: {}\n", e.what());
    return 1;
  }
  if (server == 0) {
    fmt::print(stderr,
               "redis-bench-pubsub: without --server-pid, cpu_ns_per_delivery leaves out "
               "redis-server\n");
  }
  RedisTransport transport(socket, server);
  return pubsub_bench::run_and_report("redis-bench-pubsub", opt, transport);
}
