// shmcast-bridge's forwarding (Bridge), its options and its counters. Kept apart from main(),
// with where Redis is (redis_link.hpp) and the echo rule (echo_filter.hpp), so that the tests can
// check the URL parser and the echo rule without a Redis server.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "echo_filter.hpp"
#include "glob.hpp"
#include "redis_link.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast::bridge {

struct Options {
  std::string bus;
  RedisAddress redis;
  std::vector<std::string> out;  // local patterns forwarded to Redis
  std::vector<std::string> in;   // Redis patterns (channels with sharded) forwarded to the bus
  bool sharded = false;          // SPUBLISH / SSUBSCRIBE instead of PUBLISH / PSUBSCRIBE
  // Seed nodes of a Redis Cluster, used instead of `redis` when given (and then `sharded`).
  std::vector<RedisAddress> cluster;
  std::chrono::milliseconds max_backoff{5000};
};

// Throws std::invalid_argument when the options cannot work: nothing to bridge, or a glob
// pattern in `in` with `sharded` or `cluster` (SSUBSCRIBE takes channels only).
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
  std::uint64_t redirects = 0;           // MOVED and ASK answers followed (cluster)
  std::uint64_t slot_map_refreshes = 0;  // slot maps fetched (cluster)
  std::uint64_t resubscribes = 0;        // channels subscribed again on another connection

  [[nodiscard]] const char* state() const {
    return stopped ? "stopped" : connected ? "connected" : "connecting";
  }
};

// One JSON object on one line.
std::string to_json(const Stats& stats);
// name=value pairs on one line, for the log.
std::string to_log_line(const Stats& stats);

// Forwards messages between one bus and one Redis server or Redis Cluster, in two threads: out
// (the bus's messages matching `out`, pipelined to Redis) and in (Redis's messages matching
// `in`, published on the bus). Each thread keeps its own Redis connections (in a cluster, one
// per primary it needs, placed by the slot map, which it fetches again on a MOVED or a lost
// node) and reconnects with exponential back-off.
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
  // The same through a Redis Cluster (cluster_bridge.cpp).
  void run_out_cluster(const std::function<bool()>& stop);
  void run_in_cluster(const std::function<bool()>& stop);
  // Logs a failed attempt of `side` ("in" or "out") to `attempt` (e.g. "connect to Redis at
  // ..."), unless it failed the same way last time (`last_error`, updated here), with the
  // back-off `delay` before the next.
  void log_connect_failure(std::string_view side, std::string_view attempt,
                           const std::string& error, std::string& last_error,
                           std::chrono::milliseconds delay);
  // Waits up to the poll interval for the out subscriber's next frame, then takes what else is
  // there, up to a batch. False when nothing came.
  static bool receive_batch(Subscriber& sub, std::vector<Message>& batch);
  // Whether a frame the out subscriber received is to be sent to Redis; counts it otherwise
  // (a gap's losses, an echo).
  bool to_send(const Message& m, Clock::time_point now);
  // Publishes a message that arrived from Redis on the bus, unless it is the bridge's own;
  // `stream` as in EchoFilter.
  void bring_in(std::string_view channel, std::string_view payload, int stream,
                std::string& last_publish_error);
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
  Counter redirects_;
  Counter slot_map_refreshes_;
  Counter resubscribes_;
};

}  // namespace shmcast::bridge
