// The harness shared by redis-bench-pubsub and uds-bench: the scenarios, options, roles and
// report of shmcast-bench, over any transport that can subscribe a connection to a channel and
// publish to one, so that bench/compare.sh runs all three programs alike.
//
// Publishers and subscribers are separate processes (fork). Every payload starts with its send
// time (CLOCK_MONOTONIC ns); a message counts as received only if it was both sent and read
// inside the measured window. A transport with an unbounded queue (Redis with its pub/sub
// output-buffer limit off) must not let the publisher run ahead without bound, so publishers
// wait while the slowest subscriber is more than kMaxBacklogBytes of messages behind: the size
// of a shmcast subscriber's ring.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace pubsub_bench {

/// How a subscriber waits for its next message: busy-polling its socket (yielding the core
/// between tries, since the server in between needs one too), or asleep in poll(2).
enum class Wait { spin, block };

/// True once the run is over; blocking calls check it at least every 50 ms.
using Stopped = std::function<bool()>;

/// One connection subscribed to one channel.
class Subscription {
 public:
  virtual ~Subscription() = default;
  /// The payload of the next message, valid until the next call; nullopt if none arrived within
  /// `timeout`. Throws std::runtime_error if the connection failed.
  virtual std::optional<std::string_view> receive(Wait wait, std::chrono::milliseconds timeout) = 0;
};

/// One connection that publishes.
class Publisher {
 public:
  virtual ~Publisher() = default;
  /// Queues one message; nothing is sent before flush().
  virtual void queue(std::string_view channel, std::string_view payload) = 0;
  /// Sends every queued message and waits for whatever the transport answers. Returns the
  /// receivers the transport reports, summed over the messages (0 if it reports none), or
  /// nullopt if `stopped` turned true first. Throws std::runtime_error if the connection failed.
  virtual std::optional<std::uint64_t> flush(const Stopped& stopped) = 0;
};

/// Opens connections. Called in the child processes, after fork.
class Transport {
 public:
  virtual ~Transport() = default;
  /// A subscription that is in force when this returns.
  virtual std::unique_ptr<Subscription> subscribe(const std::string& channel) = 0;
  virtual std::unique_ptr<Publisher> publisher() = 0;
  /// Whether flush() reports receivers (Redis's PUBLISH does; a bare socket does not).
  virtual bool counts_receivers() const = 0;
  /// Goes into the report: "redis" or "uds".
  virtual std::string name() const = 0;
};

/// Bytes of messages a publisher may be ahead of its slowest subscriber (a shmcast ring).
inline constexpr std::size_t kMaxBacklogBytes = std::size_t{1} << 20;

struct Options {
  std::string scenario = "single";
  double seconds = 3.0;
  std::size_t payload = 64;
  std::optional<int> publishers;
  std::optional<int> subscribers;
  std::optional<std::string> wait;
  std::size_t pipeline = 1;  // messages per flush; only Redis offers more than one
  std::uint64_t count = 0;   // messages per publisher instead of a timed window; 0: timed
  bool json = false;
};

/// Adds the options every comparison program takes (those of shmcast-bench, plus --count).
void add_options(CLI::App& app, Options& options);

/// Runs the scenario over `transport` and prints the report. Returns the exit status.
int run_and_report(const std::string& program, const Options& options, Transport& transport);

/// Called first in a child just forked from `parent`: the child is killed (SIGKILL) when the
/// parent dies, so a benchmark killed midway leaves no processes behind. Exits at once if the
/// parent is gone already (it died before the request took effect).
void die_with_parent(pid_t parent);

}  // namespace pubsub_bench
