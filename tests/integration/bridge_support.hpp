// What the bridge's tests share: a hiredis client of their own, shmcast-bridge run with --stats,
// and counting what a subscriber received.
#pragma once

#include <hiredis/hiredis.h>
#include <poll.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/run_command.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast::test {

using namespace std::chrono_literals;

// A hiredis connection for the test's own Redis publishers and subscribers.
class RedisClient {
 public:
  explicit RedisClient(const std::string& socket) : c_(redisConnectUnix(socket.c_str())) {
    check(socket);
  }
  RedisClient(const std::string& host, int port) : c_(redisConnect(host.c_str(), port)) {
    check(fmt::format("{}:{}", host, port));
  }
  ~RedisClient() { redisFree(c_); }
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// Sends a command without waiting for its reply.
  void send(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    ASSERT_EQ(
        redisAppendCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data()),
        REDIS_OK);
    int done = 0;
    while (done == 0) ASSERT_EQ(redisBufferWrite(c_, &done), REDIS_OK);
  }
  /// The next reply flattened into strings (an integer as its digits), or nullopt if none
  /// comes within `timeout`.
  std::optional<std::vector<std::string>> next(std::chrono::milliseconds timeout = 5s) {
    void* raw = nullptr;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (redisGetReplyFromReader(c_, &raw) != REDIS_OK) return std::nullopt;
      if (raw != nullptr) break;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{c_->fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) > 0 && redisBufferRead(c_) != REDIS_OK) {
        return std::nullopt;
      }
    }
    auto* reply = static_cast<redisReply*>(raw);
    std::vector<std::string> out;
    const auto flatten = [&out](const redisReply* r) {
      if (r->type == REDIS_REPLY_INTEGER) {
        out.push_back(std::to_string(r->integer));
      } else if (r->str != nullptr) {
        out.emplace_back(r->str, r->len);
      } else {
        out.emplace_back();
      }
    };
    if (reply->type == REDIS_REPLY_ARRAY) {
      for (std::size_t i = 0; i < reply->elements; ++i) flatten(reply->element[i]);
    } else {
      flatten(reply);
    }
    freeReplyObject(reply);
    return out;
  }
  /// Runs a command and returns its reply.
  std::vector<std::string> call(const std::vector<std::string>& args) {
    send(args);
    auto reply = next();
    if (!reply) throw std::runtime_error("no reply from redis-server");
    return *reply;
  }

 private:
  void check(const std::string& where) {
    if (c_ == nullptr || c_->err != 0) {
      const std::string why = c_ != nullptr ? c_->errstr : "out of memory";
      if (c_ != nullptr) redisFree(c_);
      throw std::runtime_error("cannot connect to " + where + ": " + why);
    }
  }

  redisContext* c_;
};

// The value of `key` in a JSON line of --stats: a number, or a string without its quotes.
inline std::string field(std::string_view json, std::string_view key) {
  const std::string needle = fmt::format("\"{}\":", key);
  const auto at = json.find(needle);
  if (at == std::string_view::npos) return {};
  auto value = json.substr(at + needle.size());
  value = value.substr(0, value.find_first_of(",}"));
  if (value.starts_with('"')) value = value.substr(1, value.size() - 2);
  return std::string(value);
}

// shmcast-bridge with --stats every 20 ms, stopped with SIGTERM by its pid. `url` goes with
// `--redis`, or with the flag `target` names (--cluster).
class BridgeProcess {
 public:
  BridgeProcess(const std::string& bus, const std::string& url, std::vector<std::string> args,
                const std::string& target = "--redis")
      : command_(make_argv(bus, target, url, std::move(args))) {
    command_.close_stdin();
  }

  /// The last complete --stats line.
  std::string stats() const {
    const std::string& out = command_.out();
    const auto end = out.rfind('\n');
    if (end == std::string::npos) return {};
    const auto begin = out.rfind('\n', end - 1);
    return out.substr(begin == std::string::npos ? 0 : begin + 1, end - (begin + 1));
  }
  std::uint64_t counter(std::string_view key) const {
    return std::strtoull(field(stats(), key).c_str(), nullptr, 10);
  }
  /// Waits until the last --stats line satisfies `done`.
  bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
    return command_.pump_until(done, timeout);
  }
  /// Reads what it printed so far: a bridge whose stdout pipe fills up stops forwarding.
  void collect() { command_.collect(); }
  /// Closes the reading end of its stdout, as `shmcast-bridge --stats | head -1` would.
  void close_stdout() { command_.close_stdout(); }
  std::optional<int> wait_exit() { return command_.wait(10s); }
  bool wait_connected() {
    return wait_for([&] { return field(stats(), "state") == "connected"; });
  }
  /// Stops it with SIGTERM and checks a clean exit with the final counters.
  void finish() {
    command_.signal(SIGTERM);
    EXPECT_EQ(command_.wait(10s), 0) << command_.err();
    EXPECT_EQ(field(stats(), "state"), "stopped") << command_.out();
    EXPECT_NE(command_.err().find("shmcast-bridge: stopped: state=stopped"), std::string::npos)
        << command_.err();
  }
  [[nodiscard]] const std::string& log() const { return command_.err(); }
  [[nodiscard]] pid_t pid() const { return command_.pid(); }

 private:
  static std::vector<std::string> make_argv(const std::string& bus, const std::string& target,
                                            const std::string& url, std::vector<std::string> args) {
    std::vector<std::string> argv{bin_dir() + "/shmcast-bridge",
                                  "--bus",
                                  bus,
                                  target,
                                  url,
                                  "--stats",
                                  "--stats-interval",
                                  "0.02"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  Command command_;
};

// Waits for the next message frame of `sub`, skipping confirmations.
inline std::optional<Message> next_message(Subscriber& sub,
                                           std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = sub.receive(100ms);
    if (m && (m->kind == Kind::message || m->kind == Kind::pmessage)) return m;
  }
  return std::nullopt;
}

// Counts what a subscriber receives per (channel, payload) until nothing comes for `quiet`.
inline std::map<std::pair<std::string, std::string>, int> drain(Subscriber& sub,
                                                                std::chrono::milliseconds quiet) {
  std::map<std::pair<std::string, std::string>, int> seen;
  while (const auto m = next_message(sub, quiet)) ++seen[{m->channel, m->payload}];
  return seen;
}

inline std::map<std::pair<std::string, std::string>, int> drain(RedisClient& sub,
                                                                std::chrono::milliseconds quiet) {
  std::map<std::pair<std::string, std::string>, int> seen;
  while (const auto m = sub.next(quiet)) ++seen[{(*m)[2], (*m)[3]}];
  return seen;
}

}  // namespace shmcast::test
