// shmcast-bridge's parts: where Redis is (its URL), how the bridge recognizes its own messages
// coming back (EchoFilter), and the forwarding itself (Bridge). Kept apart from main() so that the
// tests can check the URL parser and the echo rule without a Redis server.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "glob.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast::bridge {

using Clock = std::chrono::steady_clock;

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

// Recognizes the messages this bridge published on one side when its own subscription on that
// side delivers them back. Neither Redis nor shmcast tells a subscriber who published, so the
// bridge remembers (channel, hash of the payload) of each message it publishes there, in order,
// and drops an arriving message that equals the oldest remembered one. A subscription delivers
// one publisher's messages in the order published, so its own messages come back in the order
// remembered; messages of other publishers in between do not match and are delivered, even with
// the same content, as many times as they were published.
//
// A remembered message can fail to come back (a full ring, a lost connection). mark_lost() says
// so: the entries remembered until then may be skipped when a later one matches. A publish that
// definitely failed (refused with an error) is forgotten at once with forget(), so that its entry
// cannot take someone else's identical message for the bridge's own. Entries older than the
// expiry, or beyond the capacity, are forgotten and counted: should such a message come back
// after all, it is delivered again as if someone else had published it.
//
// Thread safety: every member may be called from any thread.
class EchoFilter {
 public:
  EchoFilter(std::size_t capacity, std::chrono::milliseconds expiry);

  // Remembers a message about to be published, unless the filter is inactive. Returns its
  // sequence number, for forget().
  std::uint64_t expect(std::string_view channel, std::string_view payload, Clock::time_point now);
  // True (and forgets it) when an arriving message is the bridge's own, remembered message.
  bool consume(std::string_view channel, std::string_view payload, Clock::time_point now);
  // The message expect() numbered `sequence` was not published: it will not come back.
  void forget(std::uint64_t sequence);
  // The messages remembered so far may never come back.
  void mark_lost();
  // Forgets everything; while inactive, expect() remembers nothing (no subscription will see
  // the messages).
  void reset(bool active);
  [[nodiscard]] std::size_t size() const;
  // How many entries expired or fell beyond the capacity before their message came back.
  [[nodiscard]] std::uint64_t forgotten() const;

 private:
  struct Entry {
    std::uint64_t hash;
    std::uint64_t sequence;
    Clock::time_point published;
  };

  static std::uint64_t hash(std::string_view channel, std::string_view payload);

  std::size_t capacity_;
  std::chrono::milliseconds expiry_;
  mutable std::mutex mutex_;
  std::deque<Entry> entries_;
  std::uint64_t next_sequence_ = 0;
  std::uint64_t lost_before_ = 0;  // entries with a smaller sequence may never come back
  std::uint64_t forgotten_ = 0;
  bool active_ = true;
};

struct Options {
  std::string bus;
  RedisAddress redis;
  std::vector<std::string> out;  // local patterns forwarded to Redis
  std::vector<std::string> in;   // Redis patterns (channels with sharded) forwarded to the bus
  bool sharded = false;          // SPUBLISH / SSUBSCRIBE instead of PUBLISH / PSUBSCRIBE
  std::chrono::milliseconds max_backoff{5000};
};

// Throws std::invalid_argument when the options cannot work: nothing to bridge, or a glob
// pattern in `in` with `sharded` (SSUBSCRIBE takes channels only).
void check_options(const Options& options);

// A snapshot of the counters.
struct Stats {
  bool connected = false;  // every connection the options need is up
  bool stopped = false;    // run() has returned
  std::uint64_t forwarded_out = 0;
  std::uint64_t forwarded_in = 0;
  std::uint64_t dropped_redis_down = 0;   // out: no connection, or lost with one unconfirmed
  std::uint64_t dropped_redis_error = 0;  // out: Redis answered the publish with an error
  std::uint64_t dropped_ring_full = 0;    // out: lost in the bridge's own full ring
  std::uint64_t dropped_local_error = 0;  // in: the bus refused it (over a limit)
  std::uint64_t echo_suppressed_out = 0;  // local echoes of messages brought in
  std::uint64_t echo_suppressed_in = 0;   // Redis echoes of messages sent out
  std::uint64_t echo_forgotten = 0;       // echo entries expired or over capacity, both sides
  std::uint64_t reconnects = 0;

  [[nodiscard]] const char* state() const {
    return stopped ? "stopped" : connected ? "connected" : "connecting";
  }
};

// One JSON object on one line.
std::string to_json(const Stats& stats);
// name=value pairs on one line, for the log.
std::string to_log_line(const Stats& stats);

// Forwards messages between one bus and one Redis server, in two threads: out (the bus's
// messages matching `out`, pipelined to Redis) and in (Redis's messages matching `in`, published
// on the bus). Each thread keeps its own Redis connection and reconnects with exponential
// back-off.
class Bridge {
 public:
  using Log = std::function<void(std::string_view)>;

  // Connects to the bus and subscribes to `out` there. Throws shmcast::Error.
  Bridge(Options options, Log log);
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;
  ~Bridge();

  // Forwards both ways until `stop` returns true (checked at least every 100 ms).
  void run(const std::function<bool()>& stop);
  // Thread-safe.
  [[nodiscard]] Stats stats() const;

 private:
  struct Counter {
    std::atomic<std::uint64_t> value{0};
    void add(std::uint64_t n = 1) { value.fetch_add(n, std::memory_order_relaxed); }
    [[nodiscard]] std::uint64_t get() const { return value.load(std::memory_order_relaxed); }
  };

  void run_out(const std::function<bool()>& stop);
  void run_in(const std::function<bool()>& stop);
  // Logs a failed attempt of `side` ("in" or "out") to connect to Redis, unless it failed the
  // same way last time (`last_error`, updated here), with the back-off `delay` before the next.
  void log_connect_failure(std::string_view side, const std::string& error, std::string& last_error,
                           std::chrono::milliseconds delay);
  // Index of the first pattern of `globs` that matches `channel`.
  static std::optional<std::size_t> first_match(const std::vector<detail::Glob>& globs,
                                                std::string_view channel);
  // True when the frame of a publish matched through `pattern` is the one to forward: a message
  // that matches several patterns arrives once per pattern, and only the first pattern's frame
  // is forwarded.
  static bool first_frame(const std::vector<detail::Glob>& globs, std::string_view pattern,
                          std::string_view channel);
  [[nodiscard]] bool matches_in(std::string_view channel) const;

  Options options_;
  Log log_;
  Bus bus_;
  std::optional<Subscriber> out_subscriber_;
  std::vector<detail::Glob> out_globs_;
  std::vector<detail::Glob> in_globs_;
  EchoFilter local_echoes_;  // brought in and published on the bus: the out side sees them
  EchoFilter redis_echoes_;  // sent out to Redis: the in side sees them

  std::atomic<bool> out_connected_{false};
  std::atomic<bool> in_connected_{false};
  std::atomic<bool> stopped_{false};
  Counter forwarded_out_;
  Counter forwarded_in_;
  Counter dropped_redis_down_;
  Counter dropped_redis_error_;
  Counter dropped_ring_full_;
  Counter dropped_local_error_;
  Counter echo_suppressed_out_;
  Counter echo_suppressed_in_;
  Counter reconnects_;
};

}  // namespace shmcast::bridge
