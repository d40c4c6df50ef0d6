// shmcast-bench: publishers and subscribers as separate processes, measuring throughput and
// one-way latency of shmcast, and the floor a bare cache line or futex sets for comparison.
//
// The parent never connects to the bus: it forks every role, lines them up through a pipe
// (subscribers subscribed before any publisher starts), runs the clock, and merges what the
// children leave in one anonymous MAP_SHARED region.
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "private_coordinator.hpp"
#include "shmcast/shmcast.hpp"

namespace {

using namespace std::chrono_literals;
using bench_support::now_ns;
using bench_support::percentile;
using bench_support::set_stamp;
using bench_support::signal_ready;
using bench_support::stamp_of;

constexpr std::size_t kCacheLine = 64;
// Throughput runs sample one message in this many so recording never becomes the bottleneck.
constexpr std::uint64_t kThroughputSampleEvery = 64;
static_assert((kThroughputSampleEvery & (kThroughputSampleEvery - 1)) == 0, "sampled with a mask");
// Latency samples kept in total, shared among the recording processes (8 bytes each).
constexpr std::size_t kSampleBudget = std::size_t{32} << 20;
// A subscriber with nothing to read wakes this often to see whether the run is over.
constexpr auto kPollInterval = 50ms;
constexpr auto kWarmUp = 500ms;

std::atomic<bool> g_interrupted{false};

void on_signal(int) {
  g_interrupted.store(true);
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

enum class Kind {
  throughput,   // publishers flood, subscribers count and sample
  lockstep,     // one message in flight: the publisher waits until the subscriber has read it
  pingpong,     // two processes answer each other over two channels
  floor_spin,   // the same ping-pong over one bare shared cache line
  floor_futex,  // the same ping-pong over two bare futex words
};

struct Scenario {
  std::string name;
  Kind kind = Kind::throughput;
  int publishers = 1;
  int subscribers = 1;
  shmcast::Wait wait = shmcast::Wait::spin;
  bool wait_fixed = false;       // the scenario's name says how to wait; --wait may not change it
  std::size_t patterns = 0;      // held by one extra, idle subscriber process
  std::size_t channels = 1;      // spread over the subscribers, one subscriber each
  int stopped = 0;               // extra subscriber processes, SIGSTOPped once subscribed
  bool compare_stopped = false;  // run again without the stopped ones and print the ratio
  // Subscribe/unsubscribe pairs per second that one more process makes on a channel nobody
  // publishes to, in every other phase of the window; the publish rate is counted per phase.
  int churn = 0;
};

// The channel the churning process subscribes to and leaves.
constexpr const char* kChurnChannel = "churn";
// The window of a churn run alternates quiet and churning phases of this length, so both rates
// come from the same processes on the same cores: this machine's run-to-run spread (a factor of
// two, with the placement of its vCPUs) does not enter the ratio.
constexpr auto kChurnPhase = 100ms;

std::optional<Scenario> preset(const std::string& name) {
  Scenario s;
  s.name = name;
  if (name == "single") return s;
  if (name == "fanout-10" || name == "fanout-100" || name == "fanout-1000") {
    s.subscribers = std::stoi(name.substr(7));
    // Many spinning subscribers would share two cores with the publisher and starve it.
    s.wait = shmcast::Wait::sleep;
    return s;
  }
  if (name == "latency-spin" || name == "latency-block") {
    s.kind = Kind::lockstep;
    s.wait = name == "latency-spin" ? shmcast::Wait::spin : shmcast::Wait::sleep;
    s.wait_fixed = true;
    return s;
  }
  if (name == "patterns-10000" || name == "patterns-0") {
    s.patterns = name == "patterns-0" ? 0 : 10'000;
    return s;
  }
  if (name == "churn") {
    s.churn = 1000;
    return s;
  }
  if (name == "no-subscribers") {
    s.subscribers = 0;
    return s;
  }
  if (name == "stopped-subscriber") {
    // fanout to 4 readers, plus one more subscriber that is stopped for the whole run.
    s.subscribers = 4;
    s.stopped = 1;
    s.compare_stopped = true;
    s.wait = shmcast::Wait::sleep;
    return s;
  }
  if (name == "channels-100k") {
    s.channels = 100'000;
    s.subscribers = 10;
    s.wait = shmcast::Wait::sleep;
    return s;
  }
  if (name == "pingpong-spin" || name == "pingpong-block") {
    s.kind = Kind::pingpong;
    s.wait = name == "pingpong-spin" ? shmcast::Wait::spin : shmcast::Wait::sleep;
    s.wait_fixed = true;
    return s;
  }
  if (name == "floor-spin" || name == "floor-block") {
    s.kind = name == "floor-spin" ? Kind::floor_spin : Kind::floor_futex;
    s.wait = name == "floor-spin" ? shmcast::Wait::spin : shmcast::Wait::sleep;
    s.wait_fixed = true;
    return s;
  }
  return std::nullopt;
}

// What one child process leaves for the parent. A line of its own: a publisher and a
// subscriber counting side by side would otherwise make every message a cache miss for both.
struct alignas(kCacheLine) ChildResult {
  std::uint64_t publishes = 0;            // in the measured window
  std::uint64_t deliveries = 0;           // sum of publish() results in the window
  std::uint64_t received = 0;             // messages read that were published in the window
  std::uint64_t dropped = 0;              // the subscriber's dropped() at the end (whole run)
  std::uint64_t samples = 0;              // latency samples written
  std::uint64_t churned = 0;              // subscribe/unsubscribe pairs completed in the window
  std::uint64_t publishes_churning = 0;   // publishes and deliveries in the churning phases
  std::uint64_t deliveries_churning = 0;  // (the two above count the others)
};

// The region every process shares, all fields written by one side and read by the other.
//
//   +--------------------+  offset 0
//   | Control            |  one cache line per independently written word
//   +--------------------+
//   | ChildResult[n]     |
//   +--------------------+
//   | samples[n][cap]    |  uint64 ns
//   +--------------------+
struct Control {
  // The parent writes these; everyone polls them, so each sits alone on its line to keep the
  // lockstep and floor words below free of false sharing.
  alignas(kCacheLine) std::atomic<std::uint32_t> go{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_start{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_end{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> stop{0};
  // lockstep: messages the subscriber has read.
  alignas(kCacheLine) std::atomic<std::uint64_t> consumed{0};
  // floor-spin: odd values from the pinger, even from the echo.
  alignas(kCacheLine) std::atomic<std::uint32_t> line{0};
  // floor-block: futex words, one per direction.
  alignas(kCacheLine) std::atomic<std::uint32_t> ping{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> pong{0};
  // churn: 1 while the churning process churns.
  alignas(kCacheLine) std::atomic<std::uint32_t> churning{0};
};
static_assert(sizeof(Control) == 9 * kCacheLine);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

using Shared = bench_support::SharedRegion<Control, ChildResult>;

// A child's view: its own result slot and sample buffer, and the shared control words.
struct Slot {
  Control& control;
  ChildResult& result;
  std::uint64_t* samples;
  std::size_t cap;

  bool in_window(std::uint64_t stamp) const {
    const std::uint64_t start = control.window_start.load(std::memory_order_acquire);
    const std::uint64_t end = control.window_end.load(std::memory_order_acquire);
    return start != 0 && stamp >= start && (end == 0 || stamp < end);
  }
  bool stopped() const { return control.stop.load(std::memory_order_acquire) != 0; }
  void sample(std::uint64_t ns) {
    if (result.samples < cap) samples[result.samples++] = ns;
  }
};

struct Options {
  std::string bus;
  std::string scenario = "single";
  double seconds = 3.0;
  std::size_t payload = 64;
  std::optional<int> publishers;
  std::optional<int> subscribers;
  std::optional<std::string> wait;
  std::optional<std::size_t> patterns;
  std::optional<int> churn;
  bool json = false;
};

shmcast::ConnectOptions connect_options() {
  shmcast::ConnectOptions o;
  // Hundreds of processes attaching at once queue at the coordinator on two cores.
  o.request_timeout = 120s;
  return o;
}

void wait_for_go(const Control& control) {
  while (control.go.load(std::memory_order_acquire) == 0) std::this_thread::sleep_for(100us);
}

void drain_confirmations(shmcast::Subscriber& sub) {
  while (sub.try_receive()) {
  }
}

// Subscribes in batches and drains the confirmations in between, so tens of thousands of them
// never have to fit in the subscriber's ring at once.
void subscribe_all(shmcast::Subscriber& sub, const std::vector<std::string>& names, bool pattern) {
  constexpr std::size_t kBatch = 1000;
  for (std::size_t at = 0; at < names.size(); at += kBatch) {
    const std::span<const std::string> batch(names.data() + at,
                                             std::min(kBatch, names.size() - at));
    pattern ? sub.psubscribe(batch) : sub.subscribe(batch);
    drain_confirmations(sub);
  }
}

std::string channel_name(std::size_t i, std::size_t channels) {
  return channels == 1 ? std::string("bench") : fmt::format("ch:{}", i);
}

// ---- throughput and lockstep roles ----------------------------------------------------------

void run_subscriber(const Options& opt, const Scenario& sc, Slot& slot, int index, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  // One channel: every subscriber holds it (fanout). More: each holds its share of them.
  std::vector<std::string> names;
  for (std::size_t i = sc.channels == 1 ? 0 : static_cast<std::size_t>(index); i < sc.channels;
       i += static_cast<std::size_t>(sc.subscribers)) {
    names.push_back(channel_name(i, sc.channels));
  }
  subscribe_all(sub, names, false);
  signal_ready(ready_fd);

  const bool lockstep = sc.kind == Kind::lockstep;
  const std::uint64_t every = lockstep ? 1 : kThroughputSampleEvery;
  std::uint64_t read = 0;
  // The callback loop reads frames in place, as a latency-minded user would.
  const auto on_frame = [&](const shmcast::MessageView& m) {
    if (m.kind != shmcast::Kind::message && m.kind != shmcast::Kind::pmessage) return true;
    const std::uint64_t stamp = stamp_of(m.payload);
    ++read;
    if (lockstep) slot.control.consumed.store(read, std::memory_order_release);
    // Read after the window closed, a message was queued while the clock ran but not delivered
    // in it: counting it would credit the ring's backlog to the window. The window's end is
    // stored once it has passed, so a stored end means "read after it", without a clock read.
    if (slot.in_window(stamp) && slot.control.window_end.load(std::memory_order_acquire) == 0 &&
        (slot.result.received++ & (every - 1)) == 0) {
      slot.sample(now_ns() - stamp);
    }
    return !slot.stopped();
  };
  while (!slot.stopped()) sub.listen(on_frame, kPollInterval, sc.wait);
  slot.result.dropped = sub.dropped();
}

// A subscriber that the parent stops (SIGSTOP) once it is subscribed, and continues at the end:
// its ring fills, and every later publish drops its copy for it.
void run_stopped_subscriber(const Options& opt, Slot& slot, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  sub.subscribe({channel_name(0, 1)});
  drain_confirmations(sub);
  signal_ready(ready_fd);
  while (!slot.stopped()) (void)sub.receive(kPollInterval);
  slot.result.dropped = sub.dropped();
}

// An idle subscriber that only holds patterns, to load the registry.
void run_pattern_holder(const Options& opt, const Scenario& sc, Slot& slot, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  std::vector<std::string> patterns;
  patterns.reserve(sc.patterns);
  for (std::size_t i = 0; i < sc.patterns; ++i) patterns.push_back(fmt::format("idle:{}:*", i));
  subscribe_all(sub, patterns, true);
  signal_ready(ready_fd);
  while (!slot.stopped()) (void)sub.receive(kPollInterval);
  slot.result.dropped = sub.dropped();
}

void run_publisher(const Options& opt, const Scenario& sc, Slot& slot, int index, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  std::vector<std::string> names;
  names.reserve(sc.channels);
  for (std::size_t i = 0; i < sc.channels; ++i) names.push_back(channel_name(i, sc.channels));
  std::vector<std::byte> payload(opt.payload);
  signal_ready(ready_fd);
  wait_for_go(slot.control);

  // Publishers start at different channels so they do not walk the same rings in step.
  std::size_t next = static_cast<std::size_t>(index) *
                     (sc.channels / std::max(1, sc.publishers) + 1) % sc.channels;
  // Throughput runs read the clock once per 16 publishes, so the harness does not cost more than
  // a publish: a stamp is then early by at most 15 publishes, which overstates latency, never
  // understates it. Lockstep runs stamp every publish.
  const bool lockstep = sc.kind == Kind::lockstep;
  const std::uint64_t clock_every = lockstep ? 1 : 16;
  std::uint64_t stamp = 0;
  bool counted = false;
  bool churning = false;
  std::uint64_t sent = 0;
  for (std::uint64_t n = 0;; ++n) {
    if (n % clock_every == 0) {
      if (slot.stopped()) break;
      stamp = now_ns();
      counted = slot.in_window(stamp);
      churning = slot.control.churning.load(std::memory_order_relaxed) != 0;
    }
    set_stamp(payload, stamp);
    const std::size_t delivered = bus.publish(names[next], payload);
    if (++next == sc.channels) next = 0;
    if (counted) {
      ++(churning ? slot.result.publishes_churning : slot.result.publishes);
      (churning ? slot.result.deliveries_churning : slot.result.deliveries) += delivered;
    }
    if (!lockstep || delivered == 0) continue;
    ++sent;
    while (slot.control.consumed.load(std::memory_order_acquire) < sent && !slot.stopped())
      cpu_relax();
  }
}

// Subscribes to and leaves kChurnChannel sc.churn times a second, evenly spaced, while the
// parent says so.
void run_churner(const Options& opt, const Scenario& sc, Slot& slot, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  signal_ready(ready_fd);
  wait_for_go(slot.control);
  const auto period = std::chrono::nanoseconds(1'000'000'000 / sc.churn);
  auto next = std::chrono::steady_clock::now();
  while (!slot.stopped()) {
    if (slot.control.churning.load(std::memory_order_acquire) == 0) {
      std::this_thread::sleep_for(100us);
      next = std::chrono::steady_clock::now();
      continue;
    }
    sub.subscribe({kChurnChannel});
    sub.unsubscribe({kChurnChannel});
    drain_confirmations(sub);
    if (slot.in_window(now_ns()) && slot.control.window_end.load(std::memory_order_acquire) == 0)
      ++slot.result.churned;
    next += period;
    std::this_thread::sleep_until(next);
  }
}

// ---- ping-pong roles ------------------------------------------------------------------------

void run_echo(const Options& opt, const Scenario& sc, Slot& slot, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  sub.subscribe({"ping"});
  drain_confirmations(sub);
  signal_ready(ready_fd);
  // Answers from inside the callback, with the frame still in place: no copy on the way back.
  const auto answer = [&](const shmcast::MessageView& m) {
    if (m.kind == shmcast::Kind::message) (void)bus.publish("pong", m.payload);
    return !slot.stopped();
  };
  while (!slot.stopped()) sub.listen(answer, kPollInterval, sc.wait);
  slot.result.dropped = sub.dropped();
}

void run_pinger(const Options& opt, const Scenario& sc, Slot& slot, int ready_fd) {
  auto bus = shmcast::Bus::connect(opt.bus, connect_options());
  auto sub = bus.subscriber();
  sub.subscribe({"pong"});
  drain_confirmations(sub);
  std::vector<std::byte> payload(opt.payload);
  signal_ready(ready_fd);
  wait_for_go(slot.control);
  while (!slot.stopped()) {
    const std::uint64_t start = now_ns();
    set_stamp(payload, start);
    const std::size_t delivered = bus.publish("ping", payload);
    bool answered = false;
    const auto is_answer = [&](const shmcast::MessageView& m) {
      answered = m.kind == shmcast::Kind::message && stamp_of(m.payload) == start;
      return !answered && !slot.stopped();
    };
    while (delivered > 0 && !answered && !slot.stopped())
      sub.listen(is_answer, kPollInterval, sc.wait);
    const std::uint64_t end = now_ns();
    if (!answered || !slot.in_window(start)) continue;
    // Both publishes of the round trip: the echo's answer arrived, so it delivered one.
    slot.result.publishes += 2;
    slot.result.deliveries += delivered + 1;
    ++slot.result.received;
    slot.sample((end - start) / 2);
  }
  slot.result.dropped = sub.dropped();
}

// ---- floor roles: the same ping-pong without shmcast ------------------------------------------

long futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value, const timespec* timeout) {
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, timeout, nullptr,
                 0);
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen) {
  const timespec timeout{0, std::chrono::nanoseconds(kPollInterval).count()};
  (void)futex(word, FUTEX_WAIT, seen, &timeout);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  (void)futex(word, FUTEX_WAKE, 1, nullptr);
}

void run_floor_echo(const Scenario& sc, Slot& slot, int ready_fd) {
  Control& c = slot.control;
  signal_ready(ready_fd);
  std::uint32_t seen = 0;
  while (!slot.stopped()) {
    if (sc.kind == Kind::floor_spin) {
      const std::uint32_t v = c.line.load(std::memory_order_acquire);
      if (v % 2 == 1) {
        c.line.store(v + 1, std::memory_order_release);
      } else {
        cpu_relax();
      }
      continue;
    }
    const std::uint32_t v = c.ping.load(std::memory_order_acquire);
    if (v == seen) {
      futex_wait(c.ping, seen);
      continue;
    }
    seen = v;
    c.pong.store(v, std::memory_order_release);
    futex_wake(c.pong);
  }
}

void run_floor_pinger(const Scenario& sc, Slot& slot, int ready_fd) {
  Control& c = slot.control;
  signal_ready(ready_fd);
  wait_for_go(c);
  std::uint32_t round = 0;
  while (!slot.stopped()) {
    const std::uint64_t start = now_ns();
    ++round;
    bool answered = false;
    if (sc.kind == Kind::floor_spin) {
      const std::uint32_t odd = 2 * round - 1;
      c.line.store(odd, std::memory_order_release);
      while (!(answered = c.line.load(std::memory_order_acquire) == odd + 1) && !slot.stopped()) {
        cpu_relax();
      }
    } else {
      c.ping.store(round, std::memory_order_release);
      futex_wake(c.ping);
      for (;;) {
        const std::uint32_t v = c.pong.load(std::memory_order_acquire);
        if ((answered = v == round) || slot.stopped()) break;
        futex_wait(c.pong, v);
      }
    }
    const std::uint64_t end = now_ns();
    if (!answered || !slot.in_window(start)) continue;
    slot.result.publishes += 2;
    slot.result.deliveries += 2;
    ++slot.result.received;
    slot.sample((end - start) / 2);
  }
}

// ---- the parent ---------------------------------------------------------------------------

std::uint64_t ring_bytes_for(std::size_t payload) {
  // A message must fit in half a ring; a quarter leaves room for several in flight.
  return std::max<std::uint64_t>(std::uint64_t{1} << 20, std::bit_ceil(4 * (payload + 512)));
}

// The limits a scenario needs, as shmcastd flags.
std::vector<std::string> coordinator_flags(const Scenario& sc, std::size_t payload) {
  const std::size_t per_client = std::max<std::size_t>(
      sc.patterns, (sc.channels + static_cast<std::size_t>(std::max(1, sc.subscribers)) - 1) /
                       static_cast<std::size_t>(std::max(1, sc.subscribers)));
  const auto arg = [](std::string flag, std::uint64_t value) {
    return std::vector<std::string>{std::move(flag), std::to_string(value)};
  };
  const std::vector<std::vector<std::string>> flags = {
      // A subscribing process holds two slots: its Bus connection and its Subscriber.
      arg("--max-clients", 2 * static_cast<std::uint64_t>(sc.subscribers + sc.publishers) + 16),
      arg("--max-subscriptions", std::max<std::size_t>(1024, per_client + 16)),
      arg("--max-channels", std::max<std::size_t>(16384, sc.channels + 16)),
      arg("--max-patterns", std::max<std::size_t>(4096, sc.patterns + 16)),
      arg("--max-total-subscriptions",
          std::max<std::size_t>(65536, sc.channels + sc.patterns + 64)),
      arg("--ring-bytes", ring_bytes_for(payload)),
      arg("--max-payload", std::max<std::size_t>(65536, payload)),
  };
  std::vector<std::string> out;
  for (const auto& f : flags) out.insert(out.end(), f.begin(), f.end());
  return out;
}

class Children {
 public:
  void add(pid_t pid) { pids_.push_back(pid); }

  // Reads one byte per child from `fd`. False if a child failed first or the run was
  // interrupted.
  bool await_ready(int fd, std::size_t count) {
    std::size_t got = 0;
    while (got < count) {
      if (g_interrupted.load() || any_failed()) return false;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      const ssize_t n = read(fd, buf, std::min(sizeof buf, count - got));
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Waits for every child; true if all exited with 0.
  bool reap() {
    bool ok = !failed_;
    for (pid_t pid : pids_) {
      if (pid <= 0) continue;
      int status = 0;
      if (waitpid(pid, &status, 0) == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        ok = false;
    }
    pids_.clear();
    return ok;
  }

  void kill_all() {
    for (pid_t pid : pids_) {
      if (pid > 0) kill(pid, SIGKILL);
    }
  }

 private:
  bool any_failed() {
    for (pid_t& pid : pids_) {
      int status = 0;
      if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) failed_ = true;
      }
    }
    return failed_;
  }

  std::vector<pid_t> pids_;
  bool failed_ = false;
};

struct Report {
  double window_s = 0;
  std::uint64_t publishes = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
  std::uint64_t churned = 0;
  double churning_s = 0;  // of window_s
  std::uint64_t publishes_churning = 0;
  std::uint64_t deliveries_churning = 0;
  std::vector<std::uint64_t> latencies;
};

void sleep_unless_interrupted(std::chrono::nanoseconds span) {
  const auto until = std::chrono::steady_clock::now() + span;
  while (!g_interrupted.load() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
}

std::optional<Report> run(const Options& opt, const Scenario& sc) {
  // Roles in fork order: the receiving side first (they signal once subscribed), then the
  // sending side (they signal once connected, then wait for `go`).
  std::vector<std::function<void(Slot&, int)>> receivers;
  std::vector<std::function<void(Slot&, int)>> senders;
  switch (sc.kind) {
    case Kind::throughput:
    case Kind::lockstep:
      for (int i = 0; i < sc.subscribers; ++i) {
        receivers.push_back([&, i](Slot& s, int fd) { run_subscriber(opt, sc, s, i, fd); });
      }
      if (sc.patterns > 0) {
        receivers.push_back([&](Slot& s, int fd) { run_pattern_holder(opt, sc, s, fd); });
      }
      for (int i = 0; i < sc.stopped; ++i) {
        receivers.push_back([&](Slot& s, int fd) { run_stopped_subscriber(opt, s, fd); });
      }
      for (int i = 0; i < sc.publishers; ++i) {
        senders.push_back([&, i](Slot& s, int fd) { run_publisher(opt, sc, s, i, fd); });
      }
      if (sc.churn > 0) {
        senders.push_back([&](Slot& s, int fd) { run_churner(opt, sc, s, fd); });
      }
      break;
    case Kind::pingpong:
      receivers.push_back([&](Slot& s, int fd) { run_echo(opt, sc, s, fd); });
      senders.push_back([&](Slot& s, int fd) { run_pinger(opt, sc, s, fd); });
      break;
    case Kind::floor_spin:
    case Kind::floor_futex:
      receivers.push_back([&](Slot& s, int fd) { run_floor_echo(sc, s, fd); });
      senders.push_back([&](Slot& s, int fd) { run_floor_pinger(sc, s, fd); });
      break;
  }
  const std::size_t children = receivers.size() + senders.size();
  Shared shared(children, std::max<std::size_t>(1024, kSampleBudget / children));
  Control& control = shared.control();

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  Children kids;
  std::size_t index = 0;
  const auto launch = [&](const std::function<void(Slot&, int)>& role) {
    Slot slot{control, shared.result(index), shared.samples(index), shared.cap()};
    ++index;
    const pid_t pid = bench_support::fork_child("shmcast-bench", [&, slot]() mutable {
      close(ready[0]);
      role(slot, ready[1]);
    });
    kids.add(pid);
    return pid;
  };
  std::vector<pid_t> stopped;  // the last sc.stopped receivers
  for (std::size_t i = 0; i < receivers.size(); ++i) {
    const pid_t pid = launch(receivers[i]);
    if (i + static_cast<std::size_t>(sc.stopped) >= receivers.size()) stopped.push_back(pid);
  }
  bool ok = kids.await_ready(ready[0], receivers.size());
  for (const pid_t pid : stopped) kill(pid, SIGSTOP);
  if (ok) {
    for (const auto& role : senders) launch(role);
    ok = kids.await_ready(ready[0], senders.size());
  }
  close(ready[0]);
  close(ready[1]);

  Report report;
  if (ok) {
    control.go.store(1, std::memory_order_release);
    sleep_unless_interrupted(kWarmUp);
    const std::uint64_t start = now_ns();
    control.window_start.store(start, std::memory_order_release);
    const auto window = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(opt.seconds));
    if (sc.churn == 0) {
      sleep_unless_interrupted(window);
    } else {
      const std::uint64_t until = start + static_cast<std::uint64_t>(window.count());
      bool churning = false;
      for (std::uint64_t phase = start; phase < until && !g_interrupted.load();) {
        sleep_unless_interrupted(std::min<std::chrono::nanoseconds>(
            kChurnPhase, std::chrono::nanoseconds(until - phase)));
        const std::uint64_t next = now_ns();
        if (churning) report.churning_s += static_cast<double>(next - phase) / 1e9;
        churning = !churning;
        control.churning.store(churning ? 1 : 0, std::memory_order_release);
        phase = next;
      }
      control.churning.store(0, std::memory_order_release);
    }
    const std::uint64_t end = now_ns();
    control.window_end.store(end, std::memory_order_release);
    report.window_s = static_cast<double>(end - start) / 1e9;
  }
  control.stop.store(1, std::memory_order_release);
  for (const pid_t pid : stopped) kill(pid, SIGCONT);
  // The floor's futex waiters sleep with a timeout, so they see `stop` on their own.
  if (!ok) kids.kill_all();
  ok = kids.reap() && ok && !g_interrupted.load();
  if (!ok) return std::nullopt;

  for (std::size_t i = 0; i < children; ++i) {
    const ChildResult& r = shared.result(i);
    report.publishes += r.publishes;
    report.deliveries += r.deliveries;
    report.received += r.received;
    report.dropped += r.dropped;
    report.churned += r.churned;
    report.publishes_churning += r.publishes_churning;
    report.deliveries_churning += r.deliveries_churning;
    const std::uint64_t* s = shared.samples(i);
    report.latencies.insert(report.latencies.end(), s, s + r.samples);
  }
  std::sort(report.latencies.begin(), report.latencies.end());
  return report;
}

// Messages each reading subscriber read per second.
double per_subscriber(const Scenario& sc, const Report& r) {
  return static_cast<double>(r.received) / r.window_s / std::max(1, sc.subscribers);
}

void print(const Options& opt, const Scenario& sc, const Report& r) {
  const auto& l = r.latencies;
  const double mean =
      l.empty() ? 0.0
                : static_cast<double>(std::accumulate(l.begin(), l.end(), std::uint64_t{0})) /
                      static_cast<double>(l.size());
  // Without churn the quiet phase is the whole window.
  const double quiet_s = r.window_s - r.churning_s;
  const double pubs = static_cast<double>(r.publishes) / quiet_s;
  const double dels = static_cast<double>(r.deliveries) / quiet_s;
  const double recv = static_cast<double>(r.received) / r.window_s;
  const double churning_s = std::max(r.churning_s, 1e-9);
  const double churn = static_cast<double>(r.churned) / churning_s;
  const double pubs_churning = static_cast<double>(r.publishes_churning) / churning_s;
  const double dels_churning = static_cast<double>(r.deliveries_churning) / churning_s;
  const double ratio = pubs > 0 ? pubs_churning / pubs : 0;
  const char* wait = sc.wait == shmcast::Wait::spin ? "spin" : "block";
  if (opt.json) {
    fmt::print(
        "{{\"scenario\":\"{}\",\"publishers\":{},\"subscribers\":{},\"payload\":{},\"wait\":\"{}\","
        "\"seconds\":{:.3f},\"publishes_per_s\":{:.0f},\"deliveries_per_s\":{:.0f},"
        "\"received_per_s\":{:.0f},\"latency_ns\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},"
        "\"mean\":{:.0f},\"samples\":{}}},\"dropped\":{},\"patterns\":{}",
        sc.name, sc.publishers, sc.subscribers, opt.payload, wait, r.window_s, pubs, dels, recv,
        percentile(l, 0.5), percentile(l, 0.99), percentile(l, 0.999), l.empty() ? 0 : l.back(),
        mean, l.size(), r.dropped, sc.patterns);
    if (sc.churn > 0) {
      fmt::print(
          ",\"churn_per_s\":{:.0f},\"publishes_per_s_churning\":{:.0f},"
          "\"deliveries_per_s_churning\":{:.0f},\"ratio\":{:.3f}",
          churn, pubs_churning, dels_churning, ratio);
    }
    fmt::print("}}\n");
    return;
  }
  const bool round_trip = sc.kind != Kind::throughput && sc.kind != Kind::lockstep;
  const std::string how = round_trip ? std::string("round trip / 2")
                          : sc.kind == Kind::lockstep
                              ? std::string("one-way, every message")
                              : fmt::format("one-way, every {}th message", kThroughputSampleEvery);
  fmt::print(
      "scenario     {} ({} publisher(s), {} subscriber(s), payload {} B, wait {}, {:.2f} s)\n",
      sc.name, sc.publishers, sc.subscribers, opt.payload, wait, r.window_s);
  fmt::print("publishes/s  {:.0f}\n", pubs);
  fmt::print("deliveries/s {:.0f}   (messages read in the window: {:.0f}/s)\n", dels, recv);
  fmt::print("latency ns   p50 {}  p99 {}  p99.9 {}  max {}  mean {:.0f}   ({} samples, {})\n",
             percentile(l, 0.5), percentile(l, 0.99), percentile(l, 0.999),
             l.empty() ? 0 : l.back(), mean, l.size(), how);
  fmt::print("dropped      {}\n", r.dropped);
  if (sc.patterns > 0) fmt::print("patterns     {} (held by an idle subscriber)\n", sc.patterns);
  if (sc.churn > 0) {
    fmt::print("churn        {:.0f} subscribe/unsubscribe pairs/s on '{}', every other {} ms\n",
               churn, kChurnChannel, kChurnPhase.count());
    fmt::print(
        "with churn   publishes/s {:.0f}, deliveries/s {:.0f} (the rates above are without); "
        "publishes ratio {:.3f}\n",
        pubs_churning, dels_churning, ratio);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmcast-bench: shmcast throughput and latency with publishers and subscribers in "
      "separate processes. Without --bus it starts a private shmcastd (the one next to "
      "this program) and stops it at the end."};
  Options opt;
  app.add_option("--bus", opt.bus,
                 "Use the running coordinator of this bus instead of a private one");
  app.add_option("--scenario", opt.scenario,
                 "single, fanout-10, fanout-100, fanout-1000, latency-spin, latency-block, "
                 "patterns-10000, patterns-0, no-subscribers, channels-100k, pingpong-spin, "
                 "pingpong-block, floor-spin, floor-block, stopped-subscriber, churn")
      ->capture_default_str();
  app.add_option("--seconds", opt.seconds, "Measured window, after a 0.5 s warm-up")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--payload", opt.payload, "Payload bytes (at least 8: the send timestamp)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{8}, std::size_t{1} << 30));
  app.add_option("--publishers", opt.publishers, "Publisher processes (throughput scenarios)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--subscribers", opt.subscribers, "Subscriber processes (throughput scenarios)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--wait", opt.wait, "How subscribers wait: spin (busy-poll) or block (futex)")
      ->check(CLI::IsMember({"spin", "block"}));
  app.add_option("--patterns", opt.patterns,
                 "Patterns an idle subscriber holds, none of them matching the published channel "
                 "(throughput scenarios)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 24));
  app.add_option("--churn", opt.churn,
                 "Subscribe/unsubscribe pairs per second on an unrelated channel (churn)")
      ->check(CLI::Range(1, 1'000'000));
  app.add_flag("--json", opt.json, "Print one JSON object");
  CLI11_PARSE(app, argc, argv);

  std::optional<Scenario> sc = preset(opt.scenario);
  if (!sc) {
    fmt::print(stderr, "shmcast-bench: unknown scenario '{}' (see --help)\n", opt.scenario);
    return 2;
  }
  const bool fixed_roles = sc->kind != Kind::throughput;
  if (fixed_roles && (opt.publishers || opt.subscribers)) {
    fmt::print(stderr,
               "shmcast-bench: {} runs one sender and one receiver; drop --publishers and "
               "--subscribers\n",
               sc->name);
    return 2;
  }
  if (opt.wait) {
    const shmcast::Wait w = *opt.wait == "spin" ? shmcast::Wait::spin : shmcast::Wait::sleep;
    if (sc->wait_fixed && w != sc->wait) {
      fmt::print(stderr, "shmcast-bench: {} fixes the wait in its name; drop --wait\n", sc->name);
      return 2;
    }
    sc->wait = w;
  }
  if (fixed_roles && opt.patterns) {
    fmt::print(stderr, "shmcast-bench: {} holds no patterns; drop --patterns\n", sc->name);
    return 2;
  }
  if (opt.churn && sc->churn == 0) {
    fmt::print(stderr, "shmcast-bench: --churn is for the churn scenario\n");
    return 2;
  }
  if (opt.patterns) sc->patterns = *opt.patterns;
  if (opt.churn) sc->churn = *opt.churn;
  if (opt.publishers) sc->publishers = *opt.publishers;
  if (opt.subscribers) sc->subscribers = *opt.subscribers;
  if (sc->channels > 1 && sc->subscribers == 0) {
    fmt::print(stderr, "shmcast-bench: {} needs at least one subscriber\n", sc->name);
    return 2;
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  pid_t coordinator = 0;  // a private one, while it runs
  const auto stop_coordinator = [&coordinator] {
    bench_support::stop_private_coordinator(coordinator);
    coordinator = 0;
  };
  const bool bus_given = !opt.bus.empty();
  const bool floor = sc->kind == Kind::floor_spin || sc->kind == Kind::floor_futex;
  try {
    if (opt.bus.empty() && !floor) {
      opt.bus = fmt::format("bench-{}", getpid());
      coordinator =
          bench_support::start_private_coordinator(opt.bus, coordinator_flags(*sc, opt.payload));
    }
    std::optional<Report> report = run(opt, *sc);
    stop_coordinator();
    if (!report) {
      fmt::print(stderr,
                 "shmcast-bench: {} did not finish (a child failed or the run was "
                 "interrupted)\n",
                 sc->name);
      return 1;
    }
    print(opt, *sc, *report);
    if (sc->compare_stopped) {
      // The same run without the stopped subscriber, on a fresh bus.
      Scenario without = *sc;
      without.name = sc->name + "-baseline";
      without.stopped = 0;
      Options base = opt;
      if (!bus_given) {
        base.bus = fmt::format("bench-{}-baseline", getpid());
        coordinator = bench_support::start_private_coordinator(
            base.bus, coordinator_flags(without, opt.payload));
      }
      std::optional<Report> baseline = run(base, without);
      stop_coordinator();
      if (!baseline) {
        fmt::print(stderr, "shmcast-bench: {} did not finish\n", without.name);
        return 1;
      }
      print(base, without, *baseline);
      const double with = per_subscriber(*sc, *report);
      const double alone = per_subscriber(without, *baseline);
      const double ratio = alone > 0 ? with / alone : 0;
      if (opt.json) {
        fmt::print(
            "{{\"scenario\":\"{}\",\"per_live_subscriber_per_s\":{:.0f},"
            "\"baseline_per_subscriber_per_s\":{:.0f},\"ratio\":{:.3f}}}\n",
            sc->name, with, alone, ratio);
      } else {
        fmt::print(
            "per live subscriber: {:.0f} messages/s with {} stopped subscriber(s), {:.0f} "
            "without: ratio {:.3f}\n",
            with, sc->stopped, alone, ratio);
      }
    }
  } catch (const std::exception& e) {
    stop_coordinator();
    fmt::print(stderr, "shmcast-bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
