#include "pubsub_harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "bench_support.hpp"

namespace pubsub_bench {
namespace {

using namespace std::chrono_literals;
using bench_support::now_ns;
using bench_support::percentile;

// Latency samples kept in total, shared among the recording processes (8 bytes each).
constexpr std::size_t kSampleBudget = std::size_t{32} << 20;
constexpr auto kWarmUp = 500ms;
// A --count run that has not finished by then is reported as failed.
constexpr auto kCountDeadline = 30s;
// Children still running this long after `stop` are killed, and the run fails.
constexpr auto kReapGrace = 20s;
// The window of a churn run alternates quiet and churning phases of this length, so both rates
// come from the same processes on the same cores: this machine's run-to-run spread (a factor of
// two, with the placement of its vCPUs) does not enter the ratio.
constexpr auto kChurnPhase = 100ms;

std::atomic<bool> g_interrupted{false};

void on_signal(int) {
  g_interrupted.store(true);
}

// The scenarios every transport offers: they need nothing but channels and subscribers.
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
  if (name == "idle") {
    // As many subscribers as fanout-1000, none of them ever woken by a message.
    s.idle = true;
    s.publishers = 0;
    s.subscribers = 1000;
    s.wait = Wait::by_default;
    s.seconds = 10.0;
    return s;
  }
  if (name == "sparse") {
    // A message every millisecond: what the subscriber's wait costs when messages are apart.
    s.rate = 1000;
    s.wait = Wait::by_default;
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

const char* wait_name(Wait wait) {
  switch (wait) {
    case Wait::spin: return "spin";
    case Wait::block: return "block";
    case Wait::sleep: return "sleep";
    case Wait::by_default: return "default";
  }
  return "?";
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
  const std::vector<pid_t>& pids() const { return pids_; }

  // Reads one byte per child from `fd`; false if a child failed first or the run was
  // interrupted.
  bool await_ready(int fd, std::size_t count) {
    std::size_t got = 0;
    while (got < count) {
      if (g_interrupted.load() || poll_exits() > 0 || failed_) return false;
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

  // Kills the first `count` children (SIGKILL) and reaps them: the end of their run.
  void end_first(std::size_t count) {
    for (std::size_t i = 0; i < count && i < pids_.size(); ++i) {
      if (pids_[i] <= 0) continue;
      kill(pids_[i], SIGKILL);
      waitpid(pids_[i], nullptr, 0);
      pids_[i] = -1;
    }
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

// CPU time (user + system, ns) each process has used so far, summed over its threads; 0 for one
// that is gone. The scheduler's own count, to the nanosecond: /proc/PID/stat's ticks are too
// coarse for a run that uses a few milliseconds.
std::vector<std::uint64_t> cpu_ns(const std::vector<pid_t>& pids) {
  std::vector<std::uint64_t> out;
  out.reserve(pids.size());
  for (const pid_t pid : pids) {
    std::uint64_t total = 0;
    std::error_code ec;
    const std::filesystem::path tasks = fmt::format("/proc/{}/task", pid);
    for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
      std::ifstream in(task.path() / "schedstat");
      std::uint64_t ns = 0;
      if (in >> ns) total += ns;
    }
    out.push_back(pid > 0 ? total : 0);
  }
  return out;
}

// CPU time the processes used between two samples of cpu_ns; one that ended in between
// counts nothing.
std::uint64_t used(const std::vector<std::uint64_t>& before,
                   const std::vector<std::uint64_t>& after) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (after[i] > before[i]) sum += after[i] - before[i];
  }
  return sum;
}

// CPU time of the run's processes over the window: the children's and the servers'.
class CpuMeter {
 public:
  CpuMeter(const std::vector<pid_t>& children, std::vector<pid_t> servers)
      : children_(children), servers_(std::move(servers)) {}
  void start() {
    children_before_ = cpu_ns(children_);
    servers_before_ = cpu_ns(servers_);
  }
  void stop() {
    children_ns_ = used(children_before_, cpu_ns(children_));
    servers_ns_ = used(servers_before_, cpu_ns(servers_));
  }
  std::uint64_t children_ns() const { return children_ns_; }
  std::uint64_t servers_ns() const { return servers_ns_; }

 private:
  std::vector<pid_t> children_;
  std::vector<pid_t> servers_;
  std::vector<std::uint64_t> children_before_;
  std::vector<std::uint64_t> servers_before_;
  std::uint64_t children_ns_ = 0;
  std::uint64_t servers_ns_ = 0;
};

struct Report {
  double window_s = 0;
  double churning_s = 0;  // of window_s
  std::uint64_t publishes = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
  std::uint64_t churned = 0;
  std::uint64_t publishes_churning = 0;
  std::uint64_t deliveries_churning = 0;
  bool cpu_measured = false;      // a timed window, whose CPU time was sampled
  std::uint64_t children_ns = 0;  // the forked processes'
  std::uint64_t cpu_ns = 0;       // all processes of the run, in the window
  std::uint64_t server_ns = 0;    // of which the server's or coordinator's
  std::vector<std::uint64_t> latencies;
};

void sleep_unless_interrupted(std::chrono::nanoseconds span) {
  const auto until = std::chrono::steady_clock::now() + span;
  while (!g_interrupted.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
        10ms, std::max<std::chrono::nanoseconds>(until - std::chrono::steady_clock::now(), 0ns)));
  }
}

// Runs the timed window; with churn it alternates quiet and churning phases. Returns the
// seconds spent churning.
double run_window(const Run& r, Control& control, std::uint64_t start) {
  const auto window = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(r.sc.seconds));
  if (r.sc.churn == 0) {
    sleep_unless_interrupted(window);
    return 0;
  }
  double churning_s = 0;
  const std::uint64_t until = start + static_cast<std::uint64_t>(window.count());
  bool churning = false;
  for (std::uint64_t phase = start; phase < until && !g_interrupted.load();) {
    sleep_unless_interrupted(
        std::min<std::chrono::nanoseconds>(kChurnPhase, std::chrono::nanoseconds(until - phase)));
    const std::uint64_t next = now_ns();
    if (churning) churning_s += static_cast<double>(next - phase) / 1e9;
    churning = !churning;
    control.churning.store(churning ? 1 : 0, std::memory_order_release);
    phase = next;
  }
  control.churning.store(0, std::memory_order_release);
  return churning_s;
}

std::optional<Report> run(const std::string& program, const Run& r) {
  // Roles in fork order: the receiving side first (they signal once subscribed), then the
  // sending side (they signal once connected, then wait for `go`).
  std::vector<Role> receivers;
  std::vector<Role> senders;
  if (!r.sc.own_roles && r.sc.kind == Kind::pingpong) {
    receivers.emplace_back([&](Slot& s, int fd) { run_echo(r, s, fd); });
    senders.emplace_back([&](Slot& s, int fd) { run_pinger(r, s, fd); });
  } else if (!r.sc.own_roles) {
    for (int i = 0; i < r.sc.subscribers; ++i) {
      receivers.emplace_back(
          [&, i](Slot& s, int fd) { run_subscriber(r, s, static_cast<std::size_t>(i), fd); });
    }
    for (int i = 0; i < r.sc.publishers; ++i) {
      senders.emplace_back([&, i](Slot& s, int fd) {
        r.transport.run_publisher(r, s, static_cast<std::size_t>(i), fd);
      });
    }
  }
  r.transport.add_roles(r, receivers, senders);
  // The stopped subscribers come last among the receivers.
  for (int i = 0; i < r.sc.stopped; ++i) {
    receivers.emplace_back([&](Slot& s, int fd) { run_stopped_subscriber(r, s, fd); });
  }
  const std::size_t children = receivers.size() + senders.size();
  Shared shared(children, std::max<std::size_t>(1024, kSampleBudget / children));
  Control& control = shared.control();

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  Children kids;
  std::size_t index = 0;
  // The backlog check reads the subscribers' and publishers' counters by index.
  const std::size_t subscribers = static_cast<std::size_t>(r.sc.own_roles ? 0 : r.sc.subscribers);
  const std::size_t publishers = static_cast<std::size_t>(r.sc.own_roles ? 0 : r.sc.publishers);
  const auto launch = [&](const Role& role, std::size_t at) {
    kids.add(spawn(program, [&, at] {
      close(ready[0]);
      Slot slot(shared, at, subscribers, receivers.size(), publishers);
      role(slot, ready[1]);
    }));
  };
  for (const Role& role : receivers) launch(role, index++);
  bool ok = kids.await_ready(ready[0], receivers.size());
  std::vector<pid_t> stopped(kids.pids().end() - r.sc.stopped, kids.pids().end());
  for (const pid_t pid : stopped) kill(pid, SIGSTOP);
  if (ok) {
    for (const Role& role : senders) launch(role, index++);
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
    sleep_unless_interrupted(kWarmUp);
    CpuMeter cpu(kids.pids(), r.transport.servers());
    cpu.start();
    const std::uint64_t start = now_ns();
    control.window_start.store(start, std::memory_order_release);
    report.churning_s = run_window(r, control, start);
    const std::uint64_t end = now_ns();
    control.window_end.store(end, std::memory_order_release);
    cpu.stop();
    report.window_s = static_cast<double>(end - start) / 1e9;
    report.cpu_measured = true;
    report.children_ns = cpu.children_ns();
    report.cpu_ns = cpu.children_ns() + cpu.servers_ns();
    report.server_ns = cpu.servers_ns();
  }
  control.stop.store(1, std::memory_order_release);
  for (const pid_t pid : stopped) kill(pid, SIGCONT);
  if (r.sc.idle) kids.end_first(subscribers);
  ok = kids.wait_all(std::chrono::steady_clock::now() + kReapGrace) && ok;
  ok = kids.finish() && ok && !g_interrupted.load();
  if (!ok) return std::nullopt;

  for (std::size_t i = 0; i < children; ++i) {
    const ChildResult& c = shared.result(i);
    report.publishes += c.publishes;
    report.deliveries += c.deliveries;
    report.received += c.received;
    report.dropped += c.dropped;
    report.churned += c.churned;
    report.publishes_churning += c.publishes_churning;
    report.deliveries_churning += c.deliveries_churning;
    const std::uint64_t* s = shared.samples(i);
    report.latencies.insert(report.latencies.end(), s, s + c.samples);
  }
  if (!r.transport.counts_receivers()) report.deliveries = report.received;
  std::sort(report.latencies.begin(), report.latencies.end());
  return report;
}

void print(const Run& r, const Report& rep) {
  const Scenario& sc = r.sc;
  const auto& l = rep.latencies;
  const double mean =
      l.empty() ? 0.0
                : static_cast<double>(std::accumulate(l.begin(), l.end(), std::uint64_t{0})) /
                      static_cast<double>(l.size());
  // Without churn the quiet phase is the whole window.
  const double quiet_s = rep.window_s - rep.churning_s;
  const double pubs = static_cast<double>(rep.publishes) / quiet_s;
  const double dels = static_cast<double>(rep.deliveries) / quiet_s;
  const double recv = static_cast<double>(rep.received) / rep.window_s;
  const double churning_s = std::max(rep.churning_s, 1e-9);
  const double churn = static_cast<double>(rep.churned) / churning_s;
  const double pubs_churning = static_cast<double>(rep.publishes_churning) / churning_s;
  const double dels_churning = static_cast<double>(rep.deliveries_churning) / churning_s;
  const double churn_ratio = pubs > 0 ? pubs_churning / pubs : 0;
  const char* wait = wait_name(sc.wait);
  // Percent of one core over the window.
  const auto idle_percent = [&](std::uint64_t ns) {
    return static_cast<double>(ns) / (rep.window_s * 1e9) * 100.0;
  };
  // Per message read; a round trip reads two.
  const std::uint64_t reads = rep.received * (sc.kind == Kind::pingpong ? 2 : 1);
  const auto per_read = [&](std::uint64_t ns) {
    return rep.cpu_measured && reads > 0
               ? fmt::format("{:.0f}", static_cast<double>(ns) / static_cast<double>(reads))
               : std::string("null");
  };
  const std::uint64_t expected = sc.kind == Kind::throughput
                                     ? r.opt.count * static_cast<std::uint64_t>(sc.publishers) *
                                           static_cast<std::uint64_t>(sc.subscribers)
                                     : 0;
  if (r.opt.json) {
    const std::string count_fields =
        r.opt.count == 0 ? std::string()
                         : fmt::format(",\"count\":{},\"expected\":{}", r.opt.count, expected);
    fmt::print(
        "{{\"scenario\":\"{}\",\"transport\":\"{}\",\"publishers\":{},\"subscribers\":{},"
        "\"payload\":{},\"fill\":{},\"wait\":\"{}\",\"pipeline\":{},\"seconds\":{:.3f},"
        "\"publishes_per_s\":{:.0f},\"deliveries_per_s\":{:.0f},\"received_per_s\":{:.0f},"
        "\"received\":{}{},\"rate\":{},\"latency_ns\":{{\"p50\":{},\"p90\":{},\"p99\":{},"
        "\"p999\":{},\"max\":{},\"mean\":{:.0f},\"samples\":{}}},\"dropped\":{},\"patterns\":{},"
        "\"cpu_ns_per_delivery\":{},\"server_cpu_ns_per_delivery\":{}",
        sc.name, r.transport.name(), sc.publishers, sc.subscribers, r.opt.payload, r.opt.fill, wait,
        r.opt.pipeline, rep.window_s, pubs, dels, recv, rep.received, count_fields, sc.rate,
        percentile(l, 0.5), percentile(l, 0.9), percentile(l, 0.99), percentile(l, 0.999),
        l.empty() ? 0 : l.back(), mean, l.size(), rep.dropped, sc.patterns, per_read(rep.cpu_ns),
        per_read(rep.server_ns));
    if (sc.idle) {
      fmt::print(",\"subscribers_cpu_percent\":{:.3f},\"server_cpu_percent\":{:.3f}",
                 idle_percent(rep.children_ns), idle_percent(rep.server_ns));
    }
    if (sc.churn > 0) {
      fmt::print(
          ",\"churn_per_s\":{:.0f},\"publishes_per_s_churning\":{:.0f},"
          "\"deliveries_per_s_churning\":{:.0f},\"ratio\":{:.3f}",
          churn, pubs_churning, dels_churning, churn_ratio);
    }
    fmt::print("}}\n");
    return;
  }
  const std::string how = sc.kind == Kind::pingpong ? std::string("round trip / 2")
                          : sc.kind == Kind::lockstep || sc.rate > 0
                              ? std::string("one-way, every message")
                              : fmt::format("one-way, every {}th message", kThroughputSampleEvery);
  fmt::print(
      "scenario     {} over {} ({} publisher(s), {} subscriber(s), payload {} B{}, wait {}, "
      "pipeline {}, {:.2f} s)\n",
      sc.name, r.transport.name(), sc.publishers, sc.subscribers, r.opt.payload,
      r.opt.fill ? " filled" : "", wait, r.opt.pipeline, rep.window_s);
  fmt::print("publishes/s  {:.0f}\n", pubs);
  fmt::print("deliveries/s {:.0f}   (messages read in the window: {:.0f}/s, {} in all{})\n", dels,
             recv, rep.received,
             r.opt.count == 0 ? std::string() : fmt::format(" of {} expected", expected));
  fmt::print(
      "latency ns   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0f}   ({} samples, {})\n",
      percentile(l, 0.5), percentile(l, 0.9), percentile(l, 0.99), percentile(l, 0.999),
      l.empty() ? 0 : l.back(), mean, l.size(), how);
  if (sc.rate > 0) fmt::print("rate         {} messages/s per publisher, evenly spaced\n", sc.rate);
  fmt::print("dropped      {}\n", rep.dropped);
  fmt::print("cpu ns       {} per message read, all processes; {} of it the server's\n",
             per_read(rep.cpu_ns), per_read(rep.server_ns));
  if (sc.idle) {
    fmt::print(
        "idle cpu     {:.3f} % of one core for the {} subscribers together, {:.3f} % for the "
        "server or coordinator\n",
        idle_percent(rep.children_ns), sc.subscribers, idle_percent(rep.server_ns));
  }
  if (sc.patterns > 0) fmt::print("patterns     {} (held by an idle subscriber)\n", sc.patterns);
  if (sc.churn > 0) {
    fmt::print("churn        {:.0f} subscribe/unsubscribe pairs/s, every other {} ms\n", churn,
               kChurnPhase.count());
    fmt::print(
        "with churn   publishes/s {:.0f}, deliveries/s {:.0f} (the rates above are without); "
        "publishes ratio {:.3f}\n",
        pubs_churning, dels_churning, churn_ratio);
  }
}

// Messages each reading subscriber read per second.
double per_subscriber(const Scenario& sc, const Report& r) {
  return static_cast<double>(r.received) / r.window_s / std::max(1, sc.subscribers);
}

// One run on a fresh start of whatever the transport needs; nullopt (said on stderr) if it
// failed.
std::optional<Report> run_once(const std::string& program, const Run& r) {
  r.transport.begin_run(r.sc);
  std::optional<Report> report;
  try {
    report = run(program, r);
  } catch (...) {
    r.transport.end_run();
    throw;
  }
  r.transport.end_run();
  if (!report) {
    fmt::print(stderr, "{}: {} did not finish (a child failed, timed out or was interrupted)\n",
               program, r.sc.name);
  }
  return report;
}

// The stopped-subscriber comparison: the same run without the stopped ones, and the ratio of
// the messages each reader read per second.
bool compare_stopped(const std::string& program, const Run& r, const Report& with_stopped) {
  Scenario without = r.sc;
  without.name = r.sc.name + "-baseline";
  without.stopped = 0;
  const Run base{r.opt, without, r.transport};
  const std::optional<Report> baseline = run_once(program, base);
  if (!baseline) return false;
  print(base, *baseline);
  const double with = per_subscriber(r.sc, with_stopped);
  const double alone = per_subscriber(without, *baseline);
  const double ratio = alone > 0 ? with / alone : 0;
  if (r.opt.json) {
    fmt::print(
        "{{\"scenario\":\"{}\",\"per_live_subscriber_per_s\":{:.0f},"
        "\"baseline_per_subscriber_per_s\":{:.0f},\"ratio\":{:.3f}}}\n",
        r.sc.name, with, alone, ratio);
  } else {
    fmt::print(
        "per live subscriber: {:.0f} messages/s with {} stopped subscriber(s), {:.0f} without: "
        "ratio {:.3f}\n",
        with, r.sc.stopped, alone, ratio);
  }
  return true;
}

}  // namespace

void die_with_parent(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
}

std::string common_scenarios() {
  return "single, fanout-10, fanout-100, fanout-1000, latency-spin, latency-block, "
         "no-subscribers, pingpong-spin, pingpong-block, sparse, idle";
}

void add_options(CLI::App& app, Options& opt, const std::string& scenarios) {
  app.add_option("--scenario", opt.scenario, scenarios)->capture_default_str();
  app.add_option("--seconds", opt.seconds,
                 "Measured window, after a 0.5 s warm-up (default 3; idle: 10)")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--payload", opt.payload, "Payload bytes (at least 8: the send timestamp)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{8}, std::size_t{1} << 26));
  app.add_option("--publishers", opt.publishers, "Publisher processes (throughput scenarios)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--subscribers", opt.subscribers, "Subscriber processes (throughput scenarios)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--wait", opt.wait,
                 "How subscribers wait: spin (busy-poll), block (sleep in poll or on the futex), "
                 "sleep (shmcast: Wait::sleep, asleep at once; the others: as block) or default "
                 "(the transport's own default)")
      ->check(CLI::IsMember({"spin", "block", "sleep", "default"}));
  app.add_option("--count", opt.count,
                 "Send exactly this many messages per publisher, without warm-up or window, and "
                 "report how many arrived (throughput scenarios)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  app.add_option("--rate", opt.rate,
                 "Messages per second each publisher sends, evenly spaced, every one's latency "
                 "sampled (throughput scenarios; sparse: 1000)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
  app.add_flag("--fill", opt.fill,
               "The publisher writes every byte of each payload before it stamps and publishes "
               "it, and each subscriber reads its last byte too (throughput and latency "
               "scenarios)");
  app.add_flag("--json", opt.json, "Print one JSON object");
}

int run_and_report(const std::string& program, const Options& opt, Transport& transport) {
  std::optional<Scenario> sc = preset(opt.scenario);
  if (!sc) sc = transport.scenario(opt.scenario);
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
    const Wait w = *opt.wait == "spin"    ? Wait::spin
                   : *opt.wait == "block" ? Wait::block
                   : *opt.wait == "sleep" ? Wait::sleep
                                          : Wait::by_default;
    if (sc->wait_fixed && w != sc->wait) {
      fmt::print(stderr, "{}: {} fixes the wait in its name; drop --wait\n", program, sc->name);
      return 2;
    }
    sc->wait = w;
  }
  if (opt.rate && sc->kind != Kind::throughput) {
    fmt::print(stderr, "{}: {} is not paced; drop --rate\n", program, sc->name);
    return 2;
  }
  if (opt.rate) sc->rate = *opt.rate;
  if (opt.fill && (sc->kind == Kind::pingpong || sc->idle)) {
    fmt::print(stderr, "{}: {} has no payload to fill; drop --fill\n", program, sc->name);
    return 2;
  }
  if (opt.seconds) sc->seconds = *opt.seconds;
  if (sc->idle && (opt.publishers || opt.count != 0 || opt.rate)) {
    fmt::print(stderr, "{}: idle has no publisher; drop --publishers, --count and --rate\n",
               program);
    return 2;
  }
  if (opt.publishers) sc->publishers = *opt.publishers;
  if (opt.subscribers) sc->subscribers = *opt.subscribers;
  if (sc->channels > 1 && sc->subscribers == 0) {
    fmt::print(stderr, "{}: {} needs at least one subscriber\n", program, sc->name);
    return 2;
  }
  if (const std::string why = transport.adjust(*sc); !why.empty()) {
    fmt::print(stderr, "{}: {}\n", program, why);
    return 2;
  }

  // A peer that went away must fail the write that noticed, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  try {
    const Run r{opt, *sc, transport};
    const std::optional<Report> report = run_once(program, r);
    if (!report) return 1;
    print(r, *report);
    if (sc->compare_stopped && !compare_stopped(program, r, *report)) return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 1;
  }
  return 0;
}

}  // namespace pubsub_bench
