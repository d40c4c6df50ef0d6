#include "pubsub_harness.hpp"

#include "bench_support.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace pubsub_bench {
namespace {

using namespace std::chrono_literals;
using bench_support::now_ns;
using bench_support::percentile;
using bench_support::set_stamp;
using bench_support::signal_ready;
using bench_support::stamp_of;

constexpr std::size_t kCacheLine = 64;
// Throughput runs sample one message in this many, as shmcast-bench does.
constexpr std::uint64_t kThroughputSampleEvery = 64;
// Latency samples kept in total, shared among the recording processes (8 bytes each).
constexpr std::size_t kSampleBudget = std::size_t{32} << 20;
// How long a blocked role waits before it looks at `stop` again.
constexpr auto kPollInterval = 50ms;
constexpr auto kWarmUp = 500ms;
// A --count run that has not finished by then is reported as failed.
constexpr auto kCountDeadline = 30s;
// Children still running this long after `stop` are killed, and the run fails.
constexpr auto kReapGrace = 10s;

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
  bool wait_fixed = false;  // the scenario's name says how to wait
};

// The scenarios of shmcast-bench that need nothing but channels and subscribers.
std::optional<Scenario> preset(const std::string& name) {
  Scenario s;
  s.name = name;
  if (name == "single") return s;
  if (name == "fanout-10" || name == "fanout-100" || name == "fanout-1000") {
    s.subscribers = std::stoi(name.substr(7));
    // Many spinning subscribers would share two cores with the publisher and starve it.
    s.wait = Wait::block;
    return s;
  }
  if (name == "latency-spin" || name == "latency-block") {
    s.kind = Kind::lockstep;
    s.wait = name == "latency-spin" ? Wait::spin : Wait::block;
    s.wait_fixed = true;
    return s;
  }
  if (name == "no-subscribers") {
    s.subscribers = 0;
    return s;
  }
  if (name == "pingpong-spin" || name == "pingpong-block") {
    s.kind = Kind::pingpong;
    s.wait = name == "pingpong-spin" ? Wait::spin : Wait::block;
    s.wait_fixed = true;
    return s;
  }
  return std::nullopt;
}

// What one child leaves for the parent and, through the two counters, for the publishers'
// backlog check. Each counter is written by one process and polled by others, so each sits on
// its own cache line.
struct ChildResult {
  alignas(kCacheLine) std::atomic<std::uint64_t> read_total{0};  // a subscriber's reads, all
  alignas(kCacheLine) std::atomic<std::uint64_t> sent_total{0};  // a publisher's sends, all
  alignas(kCacheLine) std::uint64_t publishes = 0;               // in the window
  std::uint64_t deliveries = 0;  // receivers the transport reported, in the window
  std::uint64_t received = 0;    // messages sent and read inside the window
  std::uint64_t samples = 0;     // latency samples written
};

struct Control {
  // The parent writes these four; everyone polls them.
  alignas(kCacheLine) std::atomic<std::uint32_t> go{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_start{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> window_end{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> stop{0};
  // lockstep: messages the subscriber has read; a futex word the publisher sleeps on.
  alignas(kCacheLine) std::atomic<std::uint32_t> consumed{0};
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The region every child inherits (bench_support.hpp draws its layout).
using Shared = bench_support::SharedRegion<Control, ChildResult>;

long futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value, const timespec* timeout) {
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, timeout, nullptr,
                 0);
}

// What a role needs: its own result and samples, the control words, and (for a publisher's
// backlog check) the other children's counters.
class Slot {
 public:
  Slot(Shared& shared, std::size_t index, std::size_t subscribers, std::size_t publishers)
      : shared_(shared),
        index_(index),
        subscribers_(subscribers),
        publishers_(publishers),
        control_(shared.control()),
        result_(shared.result(index)) {}

  Control& control() { return control_; }
  ChildResult& result() { return result_; }

  bool stopped() const { return control_.stop.load(std::memory_order_acquire) != 0; }
  Stopped stop_check() const {
    return [this] { return stopped(); };
  }
  void wait_for_go() const {
    while (control_.go.load(std::memory_order_acquire) == 0) std::this_thread::sleep_for(100us);
  }

  // Whether `stamp` was taken inside the window (timed runs; a --count run's window never ends).
  bool in_window(std::uint64_t stamp) const {
    const std::uint64_t start = control_.window_start.load(std::memory_order_acquire);
    const std::uint64_t end = control_.window_end.load(std::memory_order_acquire);
    return start != 0 && stamp >= start && (end == 0 || stamp < end);
  }

  void sample(std::uint64_t ns) {
    if (result_.samples < shared_.cap()) shared_.samples(index_)[result_.samples++] = ns;
  }

  // Messages this publisher may send before it looks at the backlog again: 0 once stopped.
  // Subscribers are children [0, subscribers), publishers the `publishers` after them.
  std::uint64_t room(std::uint64_t limit) {
    if (subscribers_ == 0) return std::numeric_limits<std::uint64_t>::max();
    for (;;) {
      if (stopped()) return 0;
      std::uint64_t sent = 0;
      for (std::size_t p = 0; p < publishers_; ++p) {
        sent += shared_.result(subscribers_ + p).sent_total.load(std::memory_order_relaxed);
      }
      std::uint64_t slowest = std::numeric_limits<std::uint64_t>::max();
      for (std::size_t s = 0; s < subscribers_; ++s) {
        slowest = std::min(slowest, shared_.result(s).read_total.load(std::memory_order_relaxed));
      }
      const std::uint64_t backlog = sent > slowest ? sent - slowest : 0;
      if (backlog < limit) return std::max<std::uint64_t>(1, (limit - backlog) / publishers_);
      std::this_thread::sleep_for(20us);
    }
  }

 private:
  Shared& shared_;
  std::size_t index_;
  std::size_t subscribers_;
  std::size_t publishers_;
  Control& control_;
  ChildResult& result_;
};

constexpr const char* kChannel = "bench";

struct Run {
  const Options& opt;
  const Scenario& sc;
  Transport& transport;
};

// ---- throughput and lockstep roles ----------------------------------------------------------

void run_subscriber(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe(kChannel);
  signal_ready(ready_fd);
  const bool lockstep = run.sc.kind == Kind::lockstep;
  const std::uint64_t every = lockstep ? 1 : kThroughputSampleEvery;
  const std::uint64_t expected =
      run.opt.count * static_cast<std::uint64_t>(std::max(0, run.sc.publishers));
  ChildResult& result = slot.result();
  std::uint64_t read = 0;
  // Messages still queued when the run stops could not count any more, so they stay unread.
  while (!slot.stopped()) {
    const std::optional<std::string_view> payload = sub->receive(run.sc.wait, kPollInterval);
    if (!payload) continue;
    const std::uint64_t now = now_ns();
    const std::uint64_t stamp = stamp_of(*payload);
    result.read_total.store(++read, std::memory_order_relaxed);
    if (lockstep) {
      slot.control().consumed.store(static_cast<std::uint32_t>(read), std::memory_order_release);
      (void)futex(slot.control().consumed, FUTEX_WAKE, 1, nullptr);
    }
    // Sent before the window opened, or read after it closed: not a delivery of the window.
    if (!slot.in_window(stamp) || !slot.in_window(now)) continue;
    if (result.received++ % every == 0) slot.sample(now - stamp);
    if (expected != 0 && result.received == expected) break;
  }
}

void run_publisher(const Run& run, Slot& slot, int ready_fd) {
  auto pub = run.transport.publisher();
  std::string payload(run.opt.payload, '\0');
  signal_ready(ready_fd);
  slot.wait_for_go();

  const Stopped stopped = slot.stop_check();
  const bool lockstep = run.sc.kind == Kind::lockstep;
  const std::uint64_t batch = lockstep ? 1 : run.opt.pipeline;
  const std::uint64_t limit =
      std::max<std::uint64_t>(2 * batch, kMaxBacklogBytes / run.opt.payload);
  const std::uint64_t count = run.opt.count;
  ChildResult& result = slot.result();
  std::uint64_t sent = 0;
  std::uint64_t room = 0;
  while ((count == 0 || sent < count) && !slot.stopped()) {
    if (room == 0 && (room = slot.room(limit)) == 0) break;
    std::uint64_t n = std::min(batch, room);
    if (count != 0) n = std::min(n, count - sent);
    std::uint64_t counted = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t stamp = now_ns();
      set_stamp(payload, stamp);
      pub->queue(kChannel, payload);
      if (slot.in_window(stamp)) ++counted;
    }
    const std::optional<std::uint64_t> delivered = pub->flush(stopped);
    if (!delivered) break;
    sent += n;
    room -= n;
    result.sent_total.store(sent, std::memory_order_relaxed);
    result.publishes += counted;
    result.deliveries += counted == n ? *delivered : *delivered * counted / n;
    if (!lockstep) continue;
    // One message in flight: sleep until the subscriber has read it, leaving the cores to the
    // subscriber and to the server in between.
    const timespec timeout{0, std::chrono::nanoseconds(kPollInterval).count()};
    for (;;) {
      const std::uint32_t seen = slot.control().consumed.load(std::memory_order_acquire);
      if (seen == static_cast<std::uint32_t>(sent) || stopped()) break;
      (void)futex(slot.control().consumed, FUTEX_WAIT, seen, &timeout);
    }
  }
}

// ---- ping-pong roles ------------------------------------------------------------------------

void run_echo(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe("ping");
  auto pub = run.transport.publisher();
  signal_ready(ready_fd);
  const Stopped stopped = slot.stop_check();
  while (!slot.stopped()) {
    const std::optional<std::string_view> ping = sub->receive(run.sc.wait, kPollInterval);
    if (!ping) continue;
    pub->queue("pong", *ping);
    if (!pub->flush(stopped)) break;
  }
}

void run_pinger(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe("pong");
  auto pub = run.transport.publisher();
  std::string payload(run.opt.payload, '\0');
  signal_ready(ready_fd);
  slot.wait_for_go();
  const Stopped stopped = slot.stop_check();
  ChildResult& result = slot.result();
  while (!slot.stopped()) {
    const std::uint64_t start = now_ns();
    set_stamp(payload, start);
    pub->queue("ping", payload);
    const std::optional<std::uint64_t> delivered = pub->flush(stopped);
    if (!delivered) break;
    bool answered = false;
    while (!answered && !slot.stopped()) {
      const std::optional<std::string_view> pong = sub->receive(run.sc.wait, kPollInterval);
      answered = pong && stamp_of(*pong) == start;
    }
    const std::uint64_t end = now_ns();
    if (!answered || !slot.in_window(start)) continue;
    // Both publishes of the round trip, as shmcast-bench counts them.
    result.publishes += 2;
    result.deliveries += *delivered + (run.transport.counts_receivers() ? 1 : 0);
    ++result.received;
    slot.sample((end - start) / 2);
  }
}

// ---- the parent ---------------------------------------------------------------------------

// Runs `body` in a child process that dies with this one (see bench_support::fork_child).
pid_t spawn(const std::string& program, const std::function<void()>& body) {
  const pid_t parent = getpid();
  return bench_support::fork_child(program, [&] {
    die_with_parent(parent);
    body();
  });
}

class Children {
 public:
  void add(pid_t pid) { pids_.push_back(pid); }

  // Reads one byte per child from `fd`; false if a child failed first.
  bool await_ready(int fd, std::size_t count) {
    std::size_t got = 0;
    while (got < count) {
      if (poll_exits() > 0 || failed_) return false;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      const ssize_t n = read(fd, buf, std::min(sizeof buf, count - got));
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Waits until every child has exited or `deadline` passes. True if all exited.
  bool wait_all(std::chrono::steady_clock::time_point deadline) {
    while (running() > 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
      poll_exits();
    }
    return true;
  }

  // Kills whatever still runs and reaps it. True if every child exited with 0 on its own.
  bool finish() {
    bool ok = !failed_;
    for (pid_t& pid : pids_) {
      if (pid <= 0) continue;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
      ok = false;
    }
    return ok;
  }

 private:
  std::size_t running() const {
    return static_cast<std::size_t>(
        std::count_if(pids_.begin(), pids_.end(), [](pid_t p) { return p > 0; }));
  }
  // Reaps children that exited; returns how many of those failed.
  std::size_t poll_exits() {
    std::size_t failed = 0;
    for (pid_t& pid : pids_) {
      int status = 0;
      if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) ++failed;
      }
    }
    if (failed > 0) failed_ = true;
    return failed;
  }

  std::vector<pid_t> pids_;
  bool failed_ = false;
};

struct Report {
  double window_s = 0;
  std::uint64_t publishes = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t received = 0;
  std::vector<std::uint64_t> latencies;
};

std::optional<Report> run(const std::string& program, const Run& r) {
  using Role = std::function<void(Slot&, int)>;
  // Roles in fork order: the receiving side first (they signal once subscribed), then the
  // sending side (they signal once connected, then wait for `go`).
  std::vector<Role> receivers;
  std::vector<Role> senders;
  if (r.sc.kind == Kind::pingpong) {
    receivers.emplace_back([&](Slot& s, int fd) { run_echo(r, s, fd); });
    senders.emplace_back([&](Slot& s, int fd) { run_pinger(r, s, fd); });
  } else {
    for (int i = 0; i < r.sc.subscribers; ++i) {
      receivers.emplace_back([&](Slot& s, int fd) { run_subscriber(r, s, fd); });
    }
    for (int i = 0; i < r.sc.publishers; ++i) {
      senders.emplace_back([&](Slot& s, int fd) { run_publisher(r, s, fd); });
    }
  }
  const std::size_t children = receivers.size() + senders.size();
  Shared shared(children, std::max<std::size_t>(1024, kSampleBudget / children));
  Control& control = shared.control();

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  Children kids;
  std::size_t index = 0;
  const auto launch = [&](const Role& role) {
    const std::size_t at = index++;
    kids.add(spawn(program, [&, at] {
      close(ready[0]);
      Slot slot(shared, at, receivers.size(), senders.size());
      role(slot, ready[1]);
    }));
  };
  for (const Role& role : receivers) launch(role);
  bool ok = kids.await_ready(ready[0], receivers.size());
  if (ok) {
    for (const Role& role : senders) launch(role);
    ok = kids.await_ready(ready[0], senders.size());
  }
  close(ready[0]);
  close(ready[1]);

  Report report;
  if (ok && r.opt.count != 0) {
    // Every message counts: the window opens before the first and closes after the last.
    const std::uint64_t start = now_ns();
    control.window_start.store(start, std::memory_order_release);
    control.go.store(1, std::memory_order_release);
    ok = kids.wait_all(std::chrono::steady_clock::now() + kCountDeadline);
    report.window_s = static_cast<double>(now_ns() - start) / 1e9;
  } else if (ok) {
    control.go.store(1, std::memory_order_release);
    std::this_thread::sleep_for(kWarmUp);
    const std::uint64_t start = now_ns();
    control.window_start.store(start, std::memory_order_release);
    std::this_thread::sleep_for(std::chrono::duration<double>(r.opt.seconds));
    const std::uint64_t end = now_ns();
    control.window_end.store(end, std::memory_order_release);
    report.window_s = static_cast<double>(end - start) / 1e9;
  }
  control.stop.store(1, std::memory_order_release);
  ok = kids.wait_all(std::chrono::steady_clock::now() + kReapGrace) && ok;
  ok = kids.finish() && ok;
  if (!ok) return std::nullopt;

  for (std::size_t i = 0; i < children; ++i) {
    const ChildResult& c = shared.result(i);
    report.publishes += c.publishes;
    report.deliveries += c.deliveries;
    report.received += c.received;
    const std::uint64_t* s = shared.samples(i);
    report.latencies.insert(report.latencies.end(), s, s + c.samples);
  }
  if (!r.transport.counts_receivers()) report.deliveries = report.received;
  std::sort(report.latencies.begin(), report.latencies.end());
  return report;
}

void print(const Run& r, const Report& rep) {
  const auto& l = rep.latencies;
  const double mean =
      l.empty() ? 0.0
                : static_cast<double>(std::accumulate(l.begin(), l.end(), std::uint64_t{0})) /
                      static_cast<double>(l.size());
  const double pubs = static_cast<double>(rep.publishes) / rep.window_s;
  const double dels = static_cast<double>(rep.deliveries) / rep.window_s;
  const double recv = static_cast<double>(rep.received) / rep.window_s;
  const char* wait = r.sc.wait == Wait::spin ? "spin" : "block";
  const std::uint64_t expected = r.sc.kind == Kind::throughput
                                     ? r.opt.count * static_cast<std::uint64_t>(r.sc.publishers) *
                                           static_cast<std::uint64_t>(r.sc.subscribers)
                                     : 0;
  const std::string count_fields =
      r.opt.count == 0 ? std::string()
                       : fmt::format(",\"count\":{},\"expected\":{}", r.opt.count, expected);
  if (r.opt.json) {
    fmt::print(
        "{{\"scenario\":\"{}\",\"transport\":\"{}\",\"publishers\":{},\"subscribers\":{},"
        "\"payload\":{},\"wait\":\"{}\",\"pipeline\":{},\"seconds\":{:.3f},"
        "\"publishes_per_s\":{:.0f},\"deliveries_per_s\":{:.0f},\"received_per_s\":{:.0f},"
        "\"received\":{}{},\"latency_ns\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},"
        "\"mean\":{:.0f},\"samples\":{}}}}}\n",
        r.sc.name, r.transport.name(), r.sc.publishers, r.sc.subscribers, r.opt.payload, wait,
        r.opt.pipeline, rep.window_s, pubs, dels, recv, rep.received, count_fields,
        percentile(l, 0.5), percentile(l, 0.99), percentile(l, 0.999), l.empty() ? 0 : l.back(),
        mean, l.size());
    return;
  }
  const std::string how = r.sc.kind == Kind::pingpong ? std::string("round trip / 2")
                          : r.sc.kind == Kind::lockstep
                              ? std::string("one-way, every message")
                              : fmt::format("one-way, every {}th message", kThroughputSampleEvery);
  fmt::print(
      "scenario     {} over {} ({} publisher(s), {} subscriber(s), payload {} B, wait {}, "
      "pipeline {}, {:.2f} s)\n",
      r.sc.name, r.transport.name(), r.sc.publishers, r.sc.subscribers, r.opt.payload, wait,
      r.opt.pipeline, rep.window_s);
  fmt::print("publishes/s  {:.0f}\n", pubs);
  fmt::print("deliveries/s {:.0f}   (messages read in the window: {:.0f}/s, {} in all{})\n", dels,
             recv, rep.received,
             r.opt.count == 0 ? std::string() : fmt::format(" of {} expected", expected));
  fmt::print("latency ns   p50 {}  p99 {}  p99.9 {}  max {}  mean {:.0f}   ({} samples, {})\n",
             percentile(l, 0.5), percentile(l, 0.99), percentile(l, 0.999),
             l.empty() ? 0 : l.back(), mean, l.size(), how);
}

}  // namespace

void die_with_parent(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
}

void add_options(CLI::App& app, Options& opt) {
  app.add_option("--scenario", opt.scenario,
                 "single, fanout-10, fanout-100, fanout-1000, latency-spin, latency-block, "
                 "no-subscribers, pingpong-spin, pingpong-block")
      ->capture_default_str();
  app.add_option("--seconds", opt.seconds, "Measured window, after a 0.5 s warm-up")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--payload", opt.payload, "Payload bytes (at least 8: the send timestamp)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{8}, std::size_t{1} << 26));
  app.add_option("--publishers", opt.publishers, "Publisher processes (throughput scenarios)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--subscribers", opt.subscribers, "Subscriber processes (throughput scenarios)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--wait", opt.wait,
                 "How subscribers wait: spin (busy-poll the socket) or block (sleep in poll)")
      ->check(CLI::IsMember({"spin", "block"}));
  app.add_option("--count", opt.count,
                 "Send exactly this many messages per publisher, without warm-up or window, and "
                 "report how many arrived (throughput scenarios)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  app.add_flag("--json", opt.json, "Print one JSON object");
}

int run_and_report(const std::string& program, const Options& opt, Transport& transport) {
  std::optional<Scenario> sc = preset(opt.scenario);
  if (!sc) {
    fmt::print(stderr, "{}: unknown scenario '{}' (see --help)\n", program, opt.scenario);
    return 2;
  }
  if (sc->kind != Kind::throughput && (opt.publishers || opt.subscribers || opt.count != 0)) {
    fmt::print(stderr,
               "{}: {} runs one sender and one receiver for a timed window; drop "
               "--publishers, --subscribers and --count\n",
               program, sc->name);
    return 2;
  }
  if (opt.wait) {
    const Wait w = *opt.wait == "spin" ? Wait::spin : Wait::block;
    if (sc->wait_fixed && w != sc->wait) {
      fmt::print(stderr, "{}: {} fixes the wait in its name; drop --wait\n", program, sc->name);
      return 2;
    }
    sc->wait = w;
  }
  if (opt.publishers) sc->publishers = *opt.publishers;
  if (opt.subscribers) sc->subscribers = *opt.subscribers;

  // A peer that went away must fail the write that noticed, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  try {
    const Run r{opt, *sc, transport};
    const std::optional<Report> report = run(program, r);
    if (!report) {
      fmt::print(stderr, "{}: {} did not finish (a child failed or timed out)\n", program,
                 sc->name);
      return 1;
    }
    print(r, *report);
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 1;
  }
  return 0;
}

}  // namespace pubsub_bench
