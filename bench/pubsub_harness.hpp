// The harness of shmcast-bench, redis-bench-pubsub, uds-bench and floor-bench: the scenarios,
// options, roles and report, over any transport that can subscribe a connection to channels and
// publish to them, so that bench/compare.sh runs every program alike and their figures come
// from the same code. What only one transport has (shmcast's stopped subscriber, churn and
// pattern holder, the floor's bare futex words) comes in through Transport's hooks.
//
// Publishers and subscribers are separate processes (fork). Every payload starts with its send
// time (CLOCK_MONOTONIC ns); a message counts as received only if it was sent inside the
// measured window and read before the window closed. A transport with an unbounded queue (Redis
// with its pub/sub output-buffer limit off) must not let the publisher run ahead without bound,
// so publishers wait while the slowest subscriber is more than kMaxBacklogBytes of messages
// behind: the size of a shmcast subscriber's ring.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench_support.hpp"

namespace pubsub_bench {

/// How a subscriber waits for its next message: busy-polling, asleep (in poll(2) or on a
/// futex), asleep at once (shmcast: Wait::sleep, never spinning first; the others: as block),
/// or the way the transport waits when told nothing (shmcast: the library's default).
enum class Wait { spin, block, sleep, by_default };

/// True once the run is over; blocking calls check it at least every 50 ms.
using Stopped = std::function<bool()>;

/// Called with each message's payload, valid during the call; returns false to stop listening.
using OnMessage = std::function<bool(std::string_view)>;

/// One connection subscribed to channels.
class Subscription {
 public:
  virtual ~Subscription() = default;
  /// The payload of the next message, valid until the next call; nullopt if none arrived within
  /// `timeout`. Throws std::runtime_error if the connection failed.
  virtual std::optional<std::string_view> receive(Wait wait, std::chrono::milliseconds timeout) = 0;
  /// Calls `on_message` for every message until it returns false or `timeout` passes with none.
  virtual void listen(const OnMessage& on_message, Wait wait, std::chrono::milliseconds timeout) {
    while (const std::optional<std::string_view> payload = receive(wait, timeout)) {
      if (!on_message(*payload)) return;
    }
  }
  /// Messages the transport dropped for this subscription (a full shmcast ring); 0 if it never
  /// drops.
  virtual std::uint64_t dropped() const { return 0; }
};

/// One connection that publishes.
class Publisher {
 public:
  virtual ~Publisher() = default;
  /// Queues one message; a transport may send it at once or at flush().
  virtual void queue(std::string_view channel, std::string_view payload) = 0;
  /// Where the throughput and lockstep publisher writes its next message: `buffer` (as long as
  /// the payload), queued as a copy at commit(), or memory the transport lends for it (shmcast
  /// --publish loan). Empty if `stopped` turned true while the transport had none to lend.
  virtual std::span<char> claim(std::string& buffer, const Stopped& /*stopped*/) { return buffer; }
  /// Queues the message written into what claim() returned, as queue() does.
  virtual void commit(std::string_view channel, std::span<char> written) {
    queue(channel, std::string_view(written.data(), written.size()));
  }
  /// Sends every queued message and waits for whatever the transport answers. Returns the
  /// receivers the transport reports, summed over the messages (0 if it reports none), or
  /// nullopt if `stopped` turned true first. Throws std::runtime_error if the connection failed.
  virtual std::optional<std::uint64_t> flush(const Stopped& stopped) = 0;
  /// True if it sends what it queued only at flush(), as a batch (a server transport, or
  /// shmcast --publish batch): the loop then queues --pipeline messages per flush.
  virtual bool batches() const { return false; }
};

enum class Kind {
  throughput,  // publishers send as fast as the transport takes it, subscribers count
  lockstep,    // one message in flight: the publisher waits until the subscriber has read it
  pingpong,    // two processes answer each other over two channels
};

struct Scenario {
  std::string name;
  Kind kind = Kind::throughput;
  int publishers = 1;
  int subscribers = 1;
  Wait wait = Wait::spin;
  bool wait_fixed = false;       // the scenario's name says how to wait; --wait may not change it
  bool own_roles = false;        // the transport's add_roles() makes every process of the run
  std::size_t channels = 1;      // spread over the subscribers, one subscriber each
  std::size_t patterns = 0;      // held by one extra, idle subscriber process (the transport's)
  int stopped = 0;               // extra subscriber processes, SIGSTOPped once subscribed
  bool compare_stopped = false;  // run again without the stopped ones and print the ratio
  // Subscribe/unsubscribe pairs per second that one more process (the transport's) makes in
  // every other phase of the window; the publish rate is counted per phase.
  int churn = 0;
  // Messages per second each publisher sends, evenly spaced; 0: as fast as the transport takes
  // them. A paced run samples the latency of every message.
  std::uint64_t rate = 0;
  // Subscribers only, on a quiet bus, waiting until the window ends: what their waiting costs.
  bool idle = false;
  double seconds = 3.0;  // the window, unless --seconds says otherwise
};

/// The channel of message `i` of `channels`: "bench" when there is one.
std::string channel_name(std::size_t i, std::size_t channels);

/// The one channel of a transport that subscribes a connection to one only; throws if there
/// are more (the scenarios with many channels are shmcast's).
const std::string& one_channel(const std::vector<std::string>& channels);

inline constexpr std::size_t kCacheLine = 64;
/// How long a blocked role waits before it looks at `stop` again.
inline constexpr std::chrono::milliseconds kPollInterval{50};

// What one child leaves for the parent and, through the two counters, for the publishers'
// backlog check. Each counter is written by one process and polled by others, so each sits on
// its own cache line.
struct ChildResult {
  alignas(kCacheLine) std::atomic<std::uint64_t> read_total{0};  // a subscriber's reads, all
  alignas(kCacheLine) std::atomic<std::uint64_t> sent_total{0};  // a publisher's sends, all
  alignas(kCacheLine) std::uint64_t publishes = 0;               // in the window
  std::uint64_t deliveries = 0;           // receivers the transport reported, in the window
  std::uint64_t received = 0;             // messages sent and read inside the window
  std::uint64_t samples = 0;              // latency samples written
  std::uint64_t dropped = 0;              // a subscriber's dropped() at the end (whole run)
  std::uint64_t churned = 0;              // subscribe/unsubscribe pairs completed in the window
  std::uint64_t publishes_churning = 0;   // publishes and deliveries in the churning phases
  std::uint64_t deliveries_churning = 0;  // (the two above count the others)
};

// The parent writes the first four and `churning`; everyone polls them, so each sits alone on
// its line, keeping the lockstep word and the roles' own words free of false sharing.
struct Control {
  alignas(kCacheLine) std::atomic<std::uint32_t> go{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_start{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_end{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> stop{0};
  // lockstep: messages the subscriber has read; a futex word the publisher may sleep on.
  alignas(kCacheLine) std::atomic<std::uint32_t> consumed{0};
  // 1 while the churning process churns.
  alignas(kCacheLine) std::atomic<std::uint32_t> churning{0};
  // For a transport's own roles (the floor's cache line and futex words).
  struct alignas(kCacheLine) Word {
    std::atomic<std::uint32_t> value{0};
  };
  Word words[3];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The region every child inherits (bench_support.hpp draws its layout).
using Shared = bench_support::SharedRegion<Control, ChildResult>;

/// What a role needs: its own result and samples, the control words, and (for a publisher's
/// backlog check) the other children's counters.
class Slot {
 public:
  /// Subscribers are children [0, subscribers), publishers [first_publisher, + publishers).
  Slot(Shared& shared, std::size_t index, std::size_t subscribers, std::size_t first_publisher,
       std::size_t publishers)
      : shared_(shared),
        index_(index),
        subscribers_(subscribers),
        first_publisher_(first_publisher),
        publishers_(publishers),
        control_(shared.control()),
        result_(shared.result(index)) {}

  Control& control() { return control_; }
  ChildResult& result() { return result_; }

  bool stopped() const { return control_.stop.load(std::memory_order_acquire) != 0; }
  Stopped stop_check() const {
    return [this] { return stopped(); };
  }
  void wait_for_go() const;

  /// Whether `stamp` was taken inside the window (a --count run's window never ends).
  bool in_window(std::uint64_t stamp) const {
    const std::uint64_t start = control_.window_start.load(std::memory_order_acquire);
    const std::uint64_t end = control_.window_end.load(std::memory_order_acquire);
    return start != 0 && stamp >= start && (end == 0 || stamp < end);
  }
  /// Whether the window has closed. Its end is stored once it has passed, so a message read
  /// while this is false was read inside it, without a clock read.
  bool window_closed() const { return control_.window_end.load(std::memory_order_acquire) != 0; }

  void sample(std::uint64_t ns) {
    if (result_.samples < shared_.cap()) shared_.samples(index_)[result_.samples++] = ns;
  }

  /// Messages this publisher may send before it looks at the backlog again: 0 once stopped.
  std::uint64_t room(std::uint64_t limit);

 private:
  Shared& shared_;
  std::size_t index_;
  std::size_t subscribers_;
  std::size_t first_publisher_;
  std::size_t publishers_;
  Control& control_;
  ChildResult& result_;
};

/// A process of the run: it writes one byte to `ready_fd` once it is ready.
using Role = std::function<void(Slot&, int ready_fd)>;

struct Options;
class Transport;

/// One run: its options, scenario and transport.
struct Run {
  const Options& opt;
  const Scenario& sc;
  Transport& transport;
};

/// Opens connections and says what the transport is. Called in the child processes, after
/// fork, except for the hooks that say they run in the parent.
class Transport {
 public:
  virtual ~Transport() = default;
  /// A subscription to `channels` that is in force when this returns.
  virtual std::unique_ptr<Subscription> subscribe(const std::vector<std::string>& channels) = 0;
  virtual std::unique_ptr<Publisher> publisher() = 0;
  /// Whether flush() reports receivers (Redis's PUBLISH and shmcast's publish() do; a bare
  /// socket does not).
  virtual bool counts_receivers() const = 0;
  /// Whether messages pass through a server process. A server needs a core, so a lockstep
  /// publisher sleeps instead of spinning, and its unbounded buffers need the backlog bound;
  /// without one, a publish costs tens of nanoseconds, so the publisher reads the clock once
  /// per 16 messages instead of for each.
  virtual bool has_server() const = 0;
  /// Goes into the report: "shmcast", "redis", "uds", "floor".
  virtual std::string name() const = 0;

  // ---- hooks for what only this transport has ----

  /// A scenario that only this transport offers, or nullopt (parent).
  virtual std::optional<Scenario> scenario(const std::string& /*name*/) const {
    return std::nullopt;
  }
  /// Applies this transport's own options to `sc`; returns why they do not fit, or "" (parent).
  virtual std::string adjust(Scenario& /*sc*/) const { return {}; }
  /// Adds the processes a scenario needs beyond its publishers and subscribers (parent).
  virtual void add_roles(const Run& /*run*/, std::vector<Role>& /*receivers*/,
                         std::vector<Role>& /*senders*/) {}
  /// Runs one publisher; the default loops over publisher(). A transport may run publish_loop
  /// over a final class of its own, so the compiler can inline its publish.
  virtual void run_publisher(const Run& run, Slot& slot, std::size_t index, int ready_fd);
  /// Called in the parent before each run (after the one before has ended) and after it.
  virtual void begin_run(const Scenario& /*sc*/) {}
  virtual void end_run() {}
  /// Processes of the run the harness did not fork (a server, a coordinator), whose CPU time
  /// counts too (parent, during a run).
  virtual std::vector<pid_t> servers() const { return {}; }
};

/// Bytes of messages a publisher may be ahead of its slowest subscriber (a shmcast ring).
inline constexpr std::size_t kMaxBacklogBytes = std::size_t{1} << 20;

struct Options {
  std::string scenario = "single";
  std::optional<double> seconds;  // the scenario's window if not given
  std::size_t payload = 64;
  std::optional<int> publishers;
  std::optional<int> subscribers;
  std::optional<std::string> wait;
  std::size_t pipeline = 1;  // messages per flush; only Redis offers more than one
  std::uint64_t count = 0;   // messages per publisher instead of a timed window; 0: timed
  std::optional<std::uint64_t> rate;
  // The publisher writes every byte of each payload before it publishes it, and each subscriber
  // reads its last byte as well as its stamp: a message that is made and used, not only moved.
  bool fill = false;
  bool json = false;
};

/// Adds the options every program takes; `scenarios` lists the names --help shows.
void add_options(CLI::App& app, Options& options, const std::string& scenarios);

/// The scenarios every transport offers, for --help.
std::string common_scenarios();

/// Runs the scenario over `transport` and prints the report. Returns the exit status.
int run_and_report(const std::string& program, const Options& options, Transport& transport);

/// Throughput runs sample one message in this many so recording never becomes the bottleneck.
inline constexpr std::uint64_t kThroughputSampleEvery = 64;

// ---- the roles every transport runs (pubsub_roles.cpp) ----

/// Subscriber `index` of a throughput, lockstep or idle run: reads, counts and samples.
void run_subscriber(const Run& run, Slot& slot, std::size_t index, int ready_fd);
/// A subscriber that never reads: the parent stops it (SIGSTOP) once it is subscribed, and
/// continues it at the end.
void run_stopped_subscriber(const Run& run, Slot& slot, int ready_fd);
/// Ping-pong: the echo answers every ping on "pong"; the pinger times the round trips.
void run_echo(const Run& run, Slot& slot, int ready_fd);
void run_pinger(const Run& run, Slot& slot, int ready_fd);

/// Called first in a child just forked from `parent`: the child is killed (SIGKILL) when the
/// parent dies, so a benchmark killed midway leaves no processes behind. Exits at once if the
/// parent is gone already (it died before the request took effect).
void die_with_parent(pid_t parent);

/// A hint to the core that this thread spins.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// Sleeps while `word` holds `seen`, at most kPollInterval, so the caller looks at `stop` again.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen);
/// Wakes one process sleeping on `word`.
void futex_wake(std::atomic<std::uint32_t>& word);

/// Waits until the lockstep subscriber has read `sent` messages or the run stops: asleep on the
/// futex word if `sleep` (a server needs the core), else spinning.
void await_consumed(Slot& slot, std::uint32_t sent, bool sleep);

/// Spaces a paced publisher's messages evenly: absolute deadlines, so a late wake-up does not
/// push every later message back.
class Pacer {
 public:
  explicit Pacer(std::uint64_t rate);
  /// Sleeps until the next message is due; returns at once for an unpaced publisher.
  void wait() {
    if (period_ns_ != 0) sleep_until_next();
  }

 private:
  void sleep_until_next();
  std::uint64_t period_ns_ = 0;
  std::uint64_t next_ns_ = 0;
};

/// The publisher's loop over any Publisher: `P` is a final class, or Publisher itself.
template <class P>
void publish_loop(const Run& run, Slot& slot, P& pub, std::size_t index) {
  const Scenario& sc = run.sc;
  std::vector<std::string> names;
  names.reserve(sc.channels);
  for (std::size_t i = 0; i < sc.channels; ++i) names.push_back(channel_name(i, sc.channels));
  std::string payload(run.opt.payload, '\0');
  slot.wait_for_go();

  // Publishers start at different channels so they do not walk the same rings in step.
  std::size_t next = index *
                     (sc.channels / static_cast<std::size_t>(std::max(1, sc.publishers)) + 1) %
                     sc.channels;
  const Stopped stopped = slot.stop_check();
  const bool lockstep = sc.kind == Kind::lockstep;
  const bool server = run.transport.has_server();
  const bool counts = run.transport.counts_receivers();
  const bool fill = run.opt.fill;
  // Messages per flush: --pipeline for a transport that sends them as a batch. Without a server
  // a publish costs tens of nanoseconds, so the loop reads the clock and does its books once
  // per 16 of them: a stamp is then early by at most 15 publishes (or pipeline - 1), which
  // overstates latency, never understates it. Lockstep runs stamp every one.
  const std::uint64_t batch = lockstep || sc.rate > 0   ? 1
                              : server || pub.batches() ? run.opt.pipeline
                                                        : 16;
  const std::uint64_t limit =
      server && sc.subscribers > 0
          ? std::max<std::uint64_t>(2 * batch, kMaxBacklogBytes / run.opt.payload)
          : std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t count = run.opt.count;
  ChildResult& result = slot.result();
  std::uint64_t sent = 0;
  std::uint64_t room = limit;
  Pacer pacer(sc.rate);
  while ((count == 0 || sent < count) && !slot.stopped()) {
    pacer.wait();
    if (room == 0 && (room = slot.room(limit)) == 0) break;
    std::uint64_t n = std::min(batch, room);
    if (count != 0) n = std::min(n, count - sent);
    std::uint64_t stamp = bench_support::now_ns();
    const bool counted = slot.in_window(stamp);
    const bool churning = slot.control().churning.load(std::memory_order_relaxed) != 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::span<char> message = pub.claim(payload, stopped);
      if (message.empty()) return;
      if (fill) {
        // A byte that changes with every message, so no write repeats what is there already.
        std::memset(message.data() + sizeof stamp, static_cast<int>((sent + i) & 0xff),
                    message.size() - sizeof stamp);
      }
      // Stamped once written: the latency is the message's way, not its making.
      if (fill || (server && i > 0)) stamp = bench_support::now_ns();
      bench_support::set_stamp(message, stamp);
      pub.commit(names[next], message);
      if (++next == sc.channels) next = 0;
    }
    const std::optional<std::uint64_t> delivered = pub.flush(stopped);
    if (!delivered) break;
    sent += n;
    if (server) {
      room -= n;
      result.sent_total.store(sent, std::memory_order_relaxed);
    }
    // A batch counts whole: the window's edges move by at most one batch.
    if (counted) {
      (churning ? result.publishes_churning : result.publishes) += n;
      (churning ? result.deliveries_churning : result.deliveries) += *delivered;
    }
    if (!lockstep || (counts && *delivered == 0)) continue;
    await_consumed(slot, static_cast<std::uint32_t>(sent), server);
  }
}

}  // namespace pubsub_bench
