// shmcast-bridge: forwards messages between a shmcast bus and a Redis server, so that buses on
// several hosts (or Redis clients anywhere) share channels. Local channels matching an --out
// pattern are published to Redis; Redis channels matching an --in pattern are published on the
// bus. A message the bridge brought in is never sent back out. It runs in the foreground until
// SIGTERM/SIGINT and logs to stderr; --stats prints its counters as JSON lines on stdout.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bridge.hpp"
#include "shmcast/shmcast.hpp"
#include "tool_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace shmcast::tool;
using Clock = std::chrono::steady_clock;

struct Invocation {
  std::string bus;
  bool bus_given = false;
  std::string url;
  std::string cluster_url;
  std::vector<std::string> out;
  std::vector<std::string> in;
  bool sharded = false;
  bool stats = false;
  double stats_interval = 1;
  double log_interval = 60;
  double max_backoff = 5;
};

void log_line(std::string_view text) {
  fmt::print(stderr, "shmcast-bridge: {}\n", one_line(text));
}

// `names` without repeats, in their first order: a pattern given twice is one subscription.
std::vector<std::string> unique(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names) {
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  }
  return out;
}

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int run(const Invocation& inv) {
  shmcast::bridge::Options options;
  options.bus = inv.bus_given ? inv.bus : shmcast::default_bus_name();
  shmcast::check_bus_name(options.bus);
  options.out = unique(inv.out);
  options.in = unique(inv.in);
  options.max_backoff = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(inv.max_backoff));
  if (inv.url.empty() == inv.cluster_url.empty()) {
    throw UsageError("give either --redis URL (one server) or --cluster URL (a Redis Cluster)");
  }
  std::string where;
  try {
    if (!inv.url.empty()) {
      options.redis = shmcast::bridge::parse_redis_url(inv.url);
      options.sharded = inv.sharded;
      where = fmt::format("Redis at {}{}", options.redis.display(),
                          options.sharded ? " (sharded)" : "");
    } else {
      options.cluster = shmcast::bridge::parse_cluster_url(inv.cluster_url);
      options.sharded = true;
      where = fmt::format("the Redis Cluster of {}", options.cluster.front().display());
      for (std::size_t i = 1; i < options.cluster.size(); ++i) {
        where += "," + options.cluster[i].display();
      }
    }
    shmcast::bridge::check_options(options);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }

  shmcast::bridge::Bridge bridge(options, log_line);
  log_line(fmt::format("bridging bus '{}' and {}: out {} pattern(s), in {} {}", options.bus, where,
                       options.out.size(), options.in.size(),
                       options.sharded ? "channel(s)" : "pattern(s)"));

  // The worker stops on a signal, or when this thread can no longer report: a joinable thread
  // must never be left behind by an exception.
  std::atomic<bool> finished{false};
  std::atomic<bool> stop_worker{false};
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      bridge.run([&] { return stop_worker.load() || stop_requested(); });
    } catch (...) {
      failure = std::current_exception();
    }
    finished = true;
  });

  std::exception_ptr report_failure;
  bool stdout_closed = false;
  try {
    const auto stats_every = to_duration(inv.stats_interval);
    const auto log_every = to_duration(inv.log_interval);
    auto next_stats = Clock::now() + stats_every;
    auto next_log = Clock::now() + log_every;
    bool was_connected = false;
    while (!finished) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const auto now = Clock::now();
      const auto stats = bridge.stats();
      if (stats.connected != was_connected && !stats.stopped) {
        was_connected = stats.connected;
        log_line(fmt::format("state {}", stats.state()));
      }
      if (inv.stats && now >= next_stats) {
        write_stdout(shmcast::bridge::to_json(stats) + "\n");
        next_stats = now + stats_every;
      }
      if (now >= next_log) {
        log_line(shmcast::bridge::to_log_line(stats));
        next_log = now + log_every;
      }
    }
  } catch (const StdoutClosed&) {
    stdout_closed = true;  // whoever read the counters went away: stop as after SIGTERM
  } catch (...) {
    // A write that a stop signal interrupted (EINTR) is part of stopping, not a failure.
    if (!stop_requested()) report_failure = std::current_exception();
  }
  stop_worker = true;
  worker.join();

  const auto stats = bridge.stats();
  log_line("stopped: " + shmcast::bridge::to_log_line(stats));
  if (failure) std::rethrow_exception(failure);
  if (report_failure) std::rethrow_exception(report_failure);
  if (inv.stats && !stdout_closed) write_stdout(shmcast::bridge::to_json(stats) + "\n");
  return 0;
}

constexpr const char* kFooter =
    "Each --out and --in may be given many times. With --sharded, --in takes channel names\n"
    "(SSUBSCRIBE has no patterns) and messages go out with SPUBLISH to that one server. With\n"
    "--cluster, the same goes to each channel's primary in a Redis Cluster: the bridge fetches\n"
    "the slot map from the seed nodes, follows MOVED and ASK, and subscribes again when a slot\n"
    "moves or a primary fails over.\n"
    "\n"
    "--stats prints one JSON object per line on stdout every --stats-interval seconds and once\n"
    "more on exit: state (connected, connecting, or stopped), forwarded_out, forwarded_in,\n"
    "dropped_redis_down, dropped_redis_error, dropped_ring_full, dropped_local_error,\n"
    "echo_suppressed_out, echo_suppressed_in, echo_forgotten, reconnects, redirects,\n"
    "slot_map_refreshes, resubscribes.\n"
    "\n"
    "Examples: shmcast-bridge --bus app --redis redis://:secret@10.0.0.5:6379 --out 'events.*'\n"
    "            --in 'events.*'\n"
    "          shmcast-bridge --bus app --cluster redis://:secret@10.0.0.5:7000,10.0.0.6:7000\n"
    "            --out 'events.*' --in events.orders";

}  // namespace

int main(int argc, char** argv) {
  Invocation inv;
  CLI::App app{
      "Forwards messages between a shmcast bus and a Redis server: local channels matching an "
      "--out pattern are published to Redis, Redis channels matching an --in pattern are "
      "published on the bus, and nothing the bridge brought in is sent back out.",
      "shmcast-bridge"};
  app.footer(kFooter);
  auto* bus_option =
      app.add_option("--bus", inv.bus, "the bus to bridge (default: $SHMCAST_BUS, else 'default')");
  app.add_option(
         "--redis", inv.url,
         "the Redis server: redis://[[user]:password@]host[:port] or unix:///path/to/socket")
      ->type_name("URL");
  app.add_option(
         "--cluster", inv.cluster_url,
         "a Redis Cluster, by seed nodes: redis://[[user]:password@]host:port[,host:port...]")
      ->type_name("URL");
  app.add_option("--out", inv.out, "forward local channels matching PATTERN to Redis")
      ->type_name("PATTERN")
      ->allow_extra_args(false);
  app.add_option("--in", inv.in, "forward Redis channels matching PATTERN to the bus")
      ->type_name("PATTERN")
      ->allow_extra_args(false);
  app.add_flag("--sharded", inv.sharded, "SPUBLISH and SSUBSCRIBE (Redis 7 sharded Pub/Sub)");
  app.add_flag("--stats", inv.stats, "print the counters as JSON lines on stdout");
  app.add_option("--stats-interval", inv.stats_interval, "seconds between --stats lines [1]")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--log-interval", inv.log_interval,
                 "seconds between counter lines in the log [60]")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--max-backoff", inv.max_backoff,
                 "longest wait between reconnection attempts, in seconds [5]")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 3600.0));

  if (const auto status = parse_command_line(app, argc, argv)) return *status;
  inv.bus_given = bus_option->count() > 0;

  install_signal_handlers();
  return run_main("shmcast-bridge", [&] { return run(inv); });
}
