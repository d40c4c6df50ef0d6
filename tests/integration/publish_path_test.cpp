// ARCHITECTURE.md invariant 1, held by the kernel: once its routes are warm, a publisher whose
// subscribers are awake makes no system call. A forked publisher warms its routes, then puts
// its thread under a seccomp filter that lets through only the write of its report and the
// exit, and traps anything else with SIGSYS; its handler reports which call it was. The
// subscribers live in other processes: two spin on their rings, one never reads them (it
// never asked for a wake-up either, and its ring fills, so the drop path runs under the filter
// too). A second test puts a subscriber asleep in receive() in front of the same harness and
// requires the filter to catch the futex wake-up it is owed: the harness can fail.
//
// A lock nobody contends makes no system call, so this catches a lock on the publish path
// only once it is contended.

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "shmcast/shmcast.hpp"
#include "support/seccomp.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;

using testing::kAuditArch;

constexpr std::string_view kPayload = "0123456789abcdef";

// What the publisher process tells the test, as one frame of a Link.
struct Report {
  enum Stage : std::uint64_t { finished, trapped, no_filter, failed };
  std::uint64_t stage = failed;
  std::uint64_t published = 0;   // publishes made under the filter
  std::uint64_t deliveries = 0;  // what every publish returned, the warm-up ones included
  std::int64_t syscall = -1;     // the call the filter trapped
  std::int64_t error = 0;        // errno of a filter that could not be installed
};

struct ReportFrame {
  std::uint64_t size = sizeof(Report);  // the length prefix Link::receive reads
  Report report;
};

// For the SIGSYS handler, which may call nothing but write and exit_group.
int g_report_fd = -1;
std::atomic<std::uint64_t> g_published{0};
std::atomic<std::uint64_t> g_deliveries{0};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Raw system calls: the libc wrappers may be intercepted by a sanitizer, whose exit path does
// more than exit. Not [[noreturn]] either: ASan precedes a call to a noreturn function with a
// sigaltstack call of its own.
void send_and_exit(const Report& report, int status) {
  ReportFrame frame;
  frame.report = report;
  (void)::syscall(SYS_write, g_report_fd, &frame, sizeof frame);
  ::syscall(SYS_exit_group, status);
}

extern "C" void on_sigsys(int /*signal*/, siginfo_t* info, void* /*context*/) {
  Report report;
  report.stage = Report::trapped;
  report.published = g_published.load(std::memory_order_relaxed);
  report.deliveries = g_deliveries.load(std::memory_order_relaxed);
  report.syscall = info->si_syscall;
  send_and_exit(report, 3);
}

// Allows write(report_fd, ...) and exit_group; traps every other call with SIGSYS. A call
// made with another architecture's numbers kills the process.
bool install_filter(int report_fd) {
  using testing::kSeccompArch;
  using testing::kSeccompFirstArg;
  using testing::kSeccompNr;
  sock_filter program[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kSeccompArch),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kSeccompNr),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_write, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kSeccompFirstArg),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(report_fd), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
  };
  // Only this thread is filtered: it is the one that publishes.
  return testing::filter_this_thread(program);
}

struct Plan {
  std::vector<std::string> channels;  // each published to once per round, in turn
  std::uint64_t rounds = 0;
  std::chrono::microseconds pause{0};  // between publishes, spent spinning: no system call
};

void spin(std::uint64_t spins) {
  for (std::uint64_t n = 0; n < spins; ++n) asm volatile("" ::: "memory");
}

// How many spins take `pause`, measured before the filter: the clock may be a system call.
std::uint64_t spins_for(std::chrono::microseconds pause) {
  if (pause.count() == 0) return 0;
  constexpr std::uint64_t kSample = 1'000'000;
  const auto start = std::chrono::steady_clock::now();
  spin(kSample);
  const auto took = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  const auto per_spin = std::max<double>(1e-3, static_cast<double>(took.count()) / kSample);
  return static_cast<std::uint64_t>(static_cast<double>(std::chrono::nanoseconds(pause).count()) /
                                    per_spin);
}

// The publisher process: warm every route, close the filter over itself, publish.
[[noreturn]] void publisher_main(const std::string& bus_name, const Plan& plan, int report_fd) {
  g_report_fd = report_fd;
  Report report;
  try {
    Bus bus = Bus::connect(bus_name);
    std::uint64_t deliveries = 0;
    for (const auto& channel : plan.channels) deliveries += bus.publish(channel, kPayload);
    g_deliveries.store(deliveries, std::memory_order_relaxed);

    const std::uint64_t pause_spins = spins_for(plan.pause);
    struct sigaction action {};
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGSYS, &action, nullptr) != 0 || !install_filter(report_fd)) {
      report.stage = Report::no_filter;
      report.error = errno;
      send_and_exit(report, 4);
    }
    for (std::uint64_t round = 0; round < plan.rounds; ++round) {
      for (const auto& channel : plan.channels) {
        deliveries += bus.publish(channel, kPayload);
        g_deliveries.store(deliveries, std::memory_order_relaxed);
        g_published.fetch_add(1, std::memory_order_relaxed);
        spin(pause_spins);
      }
    }
    report.stage = Report::finished;
    report.published = g_published.load(std::memory_order_relaxed);
    report.deliveries = deliveries;
    send_and_exit(report, 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "publisher: %s\n", e.what());
    send_and_exit(report, 5);
  }
  __builtin_unreachable();
}

struct Outcome {
  std::optional<Report> report;
  int status = 0;
};

// Forks the publisher and returns what it reported and its wait status.
Outcome run_publisher(const std::string& bus_name, const Plan& plan) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(102);
    for (const int fd : Link::tracked_fds()) ::close(fd);
    ::close(fds[0]);
    publisher_main(bus_name, plan, fds[1]);
  }
  ::close(fds[1]);
  Outcome outcome;
  {
    Link link(fds[0], -1, false);
    if (const auto frame = link.receive(60s)) outcome.report = from_frame<Report>(*frame);
  }
  if (!outcome.report) ::kill(pid, SIGKILL);
  while (::waitpid(pid, &outcome.status, 0) < 0 && errno == EINTR) {
  }
  return outcome;
}

std::string describe(long syscall) {
  switch (syscall) {
    case SYS_futex: return "futex";
    case SYS_getpid: return "getpid";
    case SYS_getppid: return "getppid";
    case SYS_gettid: return "gettid";
    case SYS_clock_gettime: return "clock_gettime";
    case SYS_sched_yield: return "sched_yield";
    case SYS_mmap: return "mmap";
    case SYS_munmap: return "munmap";
    case SYS_brk: return "brk";
    case SYS_madvise: return "madvise";
    case SYS_openat: return "openat";
    case SYS_read: return "read";
    case SYS_write: return "write";
    case SYS_close: return "close";
    default: return fmt::format("number {}", syscall);
  }
}

// Set by SIGUSR1 in a subscriber process: the test's word to stop reading and report.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop(int /*signal*/) {
  g_stop.store(true, std::memory_order_relaxed);
}

// What a subscriber process does with its ring once subscribed.
enum class Reader { spinning, sleeping, stalled };

struct Tally {
  std::uint64_t received = 0;  // message and pmessage frames
  std::uint64_t dropped = 0;
};

int subscriber_main(const std::string& bus_name, Reader reader,
                    const std::vector<std::string>& channels,
                    const std::vector<std::string>& patterns, Link& link) {
  struct sigaction action {};
  action.sa_handler = on_stop;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGUSR1, &action, nullptr);
  Bus bus = Bus::connect(bus_name);
  Subscriber sub = bus.subscriber();
  if (!channels.empty()) sub.subscribe(channels);
  if (!patterns.empty()) sub.psubscribe(patterns);
  for (std::size_t n = 0; n < channels.size() + patterns.size(); ++n) {
    if (!sub.receive(10s, Wait::spin)) return 1;
  }
  if (!link.send("ready")) return 1;
  Tally tally;
  const auto count = [&](const MessageView& m) {
    if (m.kind == Kind::message || m.kind == Kind::pmessage) ++tally.received;
    return true;
  };
  // Until the test says stop: short rounds, so its word is seen soon.
  while (!g_stop.load(std::memory_order_relaxed)) {
    switch (reader) {
      case Reader::spinning: sub.listen(count, 20ms, Wait::spin); break;
      case Reader::sleeping: sub.listen(count, 20ms, Wait::sleep); break;
      case Reader::stalled: std::this_thread::sleep_for(1ms); break;
    }
  }
  // The publisher has exited: whatever it wrote is in the ring.
  while (sub.listen(count, 0ns, Wait::spin) > 0) {
  }
  tally.dropped = sub.dropped();
  return link.send(frame_of(tally)) ? 0 : 1;
}

std::unique_ptr<Child> start_subscriber(const std::string& bus_name, Reader reader,
                                        std::vector<std::string> channels,
                                        std::vector<std::string> patterns = {}) {
  auto child = std::make_unique<Child>(
      [=](Link& link) { return subscriber_main(bus_name, reader, channels, patterns, link); });
  if (child->link().receive(30s) != "ready") throw std::runtime_error("subscriber not ready");
  return child;
}

Tally stop_subscriber(Child& child) {
  child.kill(SIGUSR1, false);
  const auto frame = child.link().receive(30s);
  EXPECT_TRUE(child.wait(10s));
  EXPECT_TRUE(child.exited_cleanly()) << "subscriber status " << child.status();
  return frame ? from_frame<Tally>(*frame) : Tally{};
}

TEST(PublishPath, WarmRoutesToAwakeSubscribersMakeNoSystemCall) {
  if (kAuditArch == 0) GTEST_SKIP() << "no seccomp filter written for this architecture";
  // A small ring, so that the stalled subscriber's fills and the drop path runs under the
  // filter too.
  Daemon daemon(unique_bus("nosyscall"), {"--ring-bytes", "65536", "--max-payload", "1024"});
  const std::string bus = daemon.bus();
  auto plain = start_subscriber(bus, Reader::spinning, {"hot"});
  auto mixed = start_subscriber(bus, Reader::spinning, {"hot"}, {"h*"});
  auto stalled = start_subscriber(bus, Reader::stalled, {"hot"});

  // Per round: "hot" reaches 4 targets, "hx" 1 (the pattern), "nobody" none.
  Plan plan{{"hot", "hx", "nobody"}, 5000, 0us};
  const Outcome outcome = run_publisher(bus, plan);
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
  for (Child* child : {plain.get(), mixed.get(), stalled.get()}) {
    const Tally tally = stop_subscriber(*child);
    received += tally.received;
    dropped += tally.dropped;
  }

  ASSERT_TRUE(outcome.report.has_value())
      << "the publisher sent no report; wait status " << outcome.status;
  const Report& report = *outcome.report;
  if (report.stage == Report::no_filter) {
    GTEST_SKIP() << "cannot install a seccomp filter here: " << std::strerror(report.error);
  }
  if (report.stage == Report::trapped) {
    FAIL() << "publish " << report.published + 1 << " of " << plan.rounds * plan.channels.size()
           << " made system call " << describe(report.syscall)
           << " with its routes warm and every subscriber awake (ARCHITECTURE.md invariant 1)";
  }
  ASSERT_EQ(report.stage, Report::finished);
  EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 0) << outcome.status;
  EXPECT_EQ(report.published, plan.rounds * plan.channels.size());
  EXPECT_EQ(report.deliveries, received) << "deliveries counted by the publisher";
  EXPECT_EQ(received + dropped, (plan.rounds + 1) * 5) << "every target got or dropped each";
  EXPECT_GT(dropped, 0U) << "the stalled subscriber's ring never filled: the drop path did "
                            "not run under the filter";
}

// The same harness catches the one system call the publish path may make: the wake-up of a
// subscriber that announced it sleeps.
TEST(PublishPath, FilterCatchesTheWakeUpOfASleepingSubscriber) {
  if (kAuditArch == 0) GTEST_SKIP() << "no seccomp filter written for this architecture";
  Daemon daemon(unique_bus("wakeup"));
  auto sleeper = start_subscriber(daemon.bus(), Reader::sleeping, {"hot"});
  // The sleeper reads each message and is asleep again long before the next: the first
  // publish or the second finds it asleep.
  const Outcome outcome = run_publisher(daemon.bus(), Plan{{"hot"}, 2000, 2ms});
  (void)stop_subscriber(*sleeper);

  ASSERT_TRUE(outcome.report.has_value()) << "wait status " << outcome.status;
  if (outcome.report->stage == Report::no_filter) {
    GTEST_SKIP() << "cannot install a seccomp filter here: "
                 << std::strerror(outcome.report->error);
  }
  ASSERT_EQ(outcome.report->stage, Report::trapped)
      << "2000 publishes 2 ms apart never found the subscriber asleep";
  EXPECT_EQ(describe(outcome.report->syscall), "futex");
  EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 3) << outcome.status;
}

}  // namespace
}  // namespace shmcast::test
