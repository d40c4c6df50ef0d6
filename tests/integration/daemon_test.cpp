// shmcastd as a process: one coordinator per bus, what SIGTERM leaves behind, adoption of a
// bus by a restarted coordinator, and refusals of bad settings.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "integration/bus_fixture.hpp"
#include "registry.hpp"

namespace shmcast {
namespace {

using test::Daemon;
using test::run_daemon;
using test::spawn;
using test::unique_bus;

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string control_path(const std::string& bus) {
  return "/dev/shm/shmcast." + bus + ".ctl";
}

std::optional<Message> next_message(Subscriber& sub) {
  while (auto m = sub.receive(std::chrono::seconds(5))) {
    if (m->kind == Kind::message || m->kind == Kind::pmessage) return m;
  }
  return std::nullopt;
}

TEST(DaemonStart, SecondCoordinatorOnTheSameBusIsRefused) {
  Daemon daemon;
  const auto [status, out] = run_daemon({"--bus", daemon.bus()});
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("already has a live coordinator"), std::string::npos) << out;
  // The first one still serves.
  EXPECT_TRUE(Bus::connect(daemon.bus()).coordinator_alive());
}

// A coordinator that starts while `shm-stat --remove-dead` holds the bus's lock (and then
// unlinks the lock file) waits for it, and locks the file that has the name afterwards.
TEST(DaemonStart, WaitsOutAShortHoldOfItsLockAndTakesTheLockUnderTheName) {
  const std::string bus = unique_bus("race");
  const test::RemoveSegments cleanup{bus};
  const std::string lock = "/dev/shm/shmcast." + bus + ".lock";
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &fl), 0);
  const std::string log = "/tmp/shmcastd-" + bus + ".log";
  const pid_t coordinator = spawn("shmcastd", {"--bus", bus}, log);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // it runs into the lock meanwhile
  ::unlink(lock.c_str());
  ::close(fd);

  bool started = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!started && std::chrono::steady_clock::now() < deadline) {
    try {
      started = Bus::connect(bus).coordinator_alive();
    } catch (const Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  EXPECT_TRUE(started) << test::read_file(log);
  // Its lock is the file under the name, so that a second coordinator is refused.
  const int named = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(named, 0) << "no lock file under the name";
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  EXPECT_EQ(::fcntl(named, F_OFD_GETLK, &probe), 0);
  EXPECT_NE(probe.l_type, F_UNLCK) << "nobody holds the lock under the name";
  if (named >= 0) ::close(named);
  EXPECT_EQ(test::stop(coordinator), 0);
  ::unlink(log.c_str());
}

TEST(DaemonStart, BadSettingsAreRefusedWithTheSettingNamed) {
  const std::string bus = unique_bus("bad");
  auto [status, out] = run_daemon({"--bus", bus, "--ring-bytes", "1000"});
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("--ring-bytes"), std::string::npos) << out;
  std::tie(status, out) =
      run_daemon({"--bus", bus, "--ring-bytes", "65536", "--max-payload", "40000"});
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("--max-payload"), std::string::npos) << out;
  std::tie(status, out) = run_daemon({"--bus", "../x"});
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("invalid bus name"), std::string::npos) << out;
  for (const char* mode : {"0666", "2660", "1600"}) {
    std::tie(status, out) = run_daemon({"--bus", bus, "--mode", mode});
    EXPECT_EQ(status, 1) << mode;
    EXPECT_NE(out.find("only owner and group bits"), std::string::npos) << out;
    EXPECT_FALSE(exists(control_path(bus))) << mode;
  }
}

TEST(DaemonStop, SigtermWithoutClientsRemovesTheBus) {
  const std::string bus = unique_bus("stop");
  {
    Daemon daemon(bus);
    EXPECT_TRUE(exists(control_path(bus)));
  }
  EXPECT_FALSE(exists(control_path(bus)));
  EXPECT_FALSE(exists("/dev/shm/shmcast." + bus + ".lock"));
}

// The names of a bus's objects in /dev/shm, sorted.
std::vector<std::string> objects_of(const std::string& bus) {
  const std::string prefix = "shmcast." + bus + ".";
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A SIGTERM or SIGINT that reaches a coordinator while it starts, creates or adopts the bus
// ends it as one that reaches it while serving does: the bus removed if no live client is
// attached, left for adoption otherwise, and the next coordinator starts on it. The signal is
// sent 0, 1, 2, ... ms after the start, so that across the sweep it lands before main, during
// creation or adoption, and while serving.
TEST(DaemonStop, SignalWhileStartingEndsAsOneWhileServing) {
  enum class Before { nothing, dead_coordinator, dead_coordinator_and_live_client };
  for (const Before before :
       {Before::nothing, Before::dead_coordinator, Before::dead_coordinator_and_live_client}) {
    int during_start = 0;  // signals sent before the coordinator said it serves
    for (int ms = 0; ms <= 40; ms += ms < 30 ? 1 : 5) {
      const int sig = ms % 2 == 0 ? SIGTERM : SIGINT;
      SCOPED_TRACE(
          fmt::format("case {}, signal {} after {} ms", static_cast<int>(before), sig, ms));
      const std::string name = unique_bus("startsig");
      test::RemoveSegments cleanup{name};
      std::optional<Bus> client;
      std::optional<Subscriber> sub;
      if (before != Before::nothing) {
        Daemon first(name);
        if (before == Before::dead_coordinator_and_live_client) {
          client = Bus::connect(name);
          sub = client->subscriber();
          ASSERT_EQ(sub->subscribe({"kept"}), 1U);
        }
        first.kill_now();
      }
      const std::vector<std::string> left = objects_of(name);
      const std::string log = fmt::format("/tmp/shmcastd-{}-stopped.log", name);
      const pid_t pid = spawn("shmcastd", {"--bus", name}, log);
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      const bool serving = test::read_file(log).find("serving") != std::string::npos;
      const int status = test::stop(pid, sig);
      const std::string said = test::read_file(log);
      ::unlink(log.c_str());
      if (WIFSIGNALED(status)) {
        // It had not reached main, where the signal is held: it cannot have touched the bus.
        EXPECT_EQ(WTERMSIG(status), sig);
        EXPECT_EQ(objects_of(name), left);
      } else {
        ASSERT_TRUE(WIFEXITED(status));
        EXPECT_EQ(WEXITSTATUS(status), 0) << said;
        if (!serving) ++during_start;
        if (before == Before::dead_coordinator_and_live_client) {
          EXPECT_EQ(objects_of(name), left) << said;
        } else {
          EXPECT_EQ(objects_of(name), std::vector<std::string>{}) << said;
        }
      }

      Daemon next(name);
      const std::string next_said = test::read_file(fmt::format("/tmp/shmcastd-{}.log", name));
      if (client) {
        EXPECT_NE(next_said.find("adopted a running bus"), std::string::npos) << next_said;
        const std::vector<std::string> kept{"kept"};
        EXPECT_EQ(client->numsub(kept)[0].second, 1U);
        EXPECT_EQ(client->publish("kept", "still here"), 1U);
      } else if (before == Before::nothing || !WIFSIGNALED(status)) {
        EXPECT_NE(next_said.find("new bus"), std::string::npos) << next_said;
      }
      sub.reset();
      client.reset();
    }
    fmt::print("case {}: {} of the signals landed while the coordinator was starting\n",
               static_cast<int>(before), during_start);
    EXPECT_GT(during_start, 0) << "no signal landed while the coordinator was starting";
  }
}

TEST(DaemonStop, SegmentsAreOwnerOnlyByDefault) {
  Daemon daemon;
  struct stat st {};
  ASSERT_EQ(::stat(control_path(daemon.bus()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  int rings = 0;
  const std::string prefix = "shmcast." + daemon.bus() + ".ring.";
  for (const auto& f : std::filesystem::directory_iterator("/dev/shm")) {
    if (f.path().filename().string().rfind(prefix, 0) != 0) continue;
    ++rings;
    ASSERT_EQ(::stat(f.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600U) << f.path();
  }
  EXPECT_EQ(rings, 1);
}

// systemctl restart must not cut off running subscribers: SIGTERM leaves a bus with clients,
// the data path keeps flowing meanwhile, and the next coordinator adopts every subscription.
TEST(DaemonRestart, SigtermWithClientsLeavesTheBusAndTheNextOneAdoptsIt) {
  const std::string name = unique_bus("restart");
  auto first = std::make_unique<Daemon>(name);
  std::unique_ptr<Daemon> second;  // declared before the clients, so they leave before it stops
  Bus bus = Bus::connect(name);
  Subscriber sub = bus.subscriber();
  sub.subscribe({"news"});
  sub.psubscribe({"n*"});
  const pid_t first_pid = first->pid();
  first.reset();  // SIGTERM, and wait for it to exit

  EXPECT_TRUE(exists(control_path(name))) << "a bus with clients stays";
  EXPECT_FALSE(bus.coordinator_alive());
  EXPECT_EQ(bus.publish("news", "while down"), 2U) << "publishing needs no coordinator";
  auto m = next_message(sub);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "while down");
  EXPECT_TRUE(next_message(sub).has_value());  // and the pmessage

  second = std::make_unique<Daemon>(name);
  EXPECT_NE(second->pid(), first_pid);
  EXPECT_TRUE(bus.coordinator_alive());
  const std::vector<std::string> news{"news"};
  EXPECT_EQ(bus.numsub(news)[0].second, 1U);
  EXPECT_EQ(bus.numpat(), 1U);
  EXPECT_EQ(sub.subscribe({"more"}), 3U) << "the adopted client can still subscribe";
  EXPECT_EQ(bus.publish("more", "after"), 1U);
  m = next_message(sub);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->channel, "more");
}

TEST(DaemonRestart, ClientThatDiedWhileNoCoordinatorRanIsReapedOnAdoption) {
  const std::string name = unique_bus("reap");
  auto first = std::make_unique<Daemon>(name);
  std::unique_ptr<Daemon> second;  // declared before the client, so it leaves before it stops
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    Bus bus = Bus::connect(name);
    Subscriber sub = bus.subscriber();
    sub.subscribe({"gone"});
    (void)!write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  Bus bus = Bus::connect(name);
  const std::vector<std::string> gone{"gone"};
  ASSERT_EQ(bus.numsub(gone)[0].second, 1U);
  {
    // One death under the first coordinator: the count of reaped clients goes on from it.
    const pid_t victim = fork();
    ASSERT_GE(victim, 0);
    if (victim == 0) {
      Bus early = Bus::connect(name);
      Subscriber sub = early.subscriber();
      (void)!write(ready[1], "x", 1);
      pause();
      _exit(0);
    }
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    test::stop(victim, SIGKILL);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (bus.stats().reaped < 1 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(bus.stats().reaped, 1U);
  }

  first->kill_now();  // SIGKILL: no chance to clean anything
  test::stop(child, SIGKILL);
  EXPECT_EQ(bus.numsub(gone)[0].second, 1U) << "nobody reaps while no coordinator runs";

  second = std::make_unique<Daemon>(name);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (bus.numsub(gone)[0].second != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(bus.numsub(gone)[0].second, 0U);
  EXPECT_EQ(bus.channels().size(), 0U);
  EXPECT_EQ(bus.stats().reaped, 2U) << "the count of deaths only grows, across adoptions too";
  close(ready[0]);
  close(ready[1]);
}

// A bus with two subscribers, whose registry a test overwrites while the coordinator is
// stopped and then hands to a new coordinator to adopt.
class Adoption : public ::testing::Test {
 protected:
  // Stops the coordinator (its audit cannot repair what the test then writes) and returns the
  // shared registry.
  detail::ControlView& pause() {
    view_.emplace(detail::Segment::open(detail::control_name(name_), detail::SegmentKind::control,
                                        detail::kLayoutVersion));
    EXPECT_TRUE(test::pause_child(first_->pid()));
    return *view_;
  }
  // Kills the stopped coordinator and starts one that adopts the bus as it was left.
  void adopt() {
    first_->kill_now();
    second_ = std::make_unique<Daemon>(name_);
  }
  [[nodiscard]] std::string log() const {
    return test::read_file(fmt::format("/tmp/shmcastd-{}.log", name_));
  }

  const std::string name_ = unique_bus("adopt");
  std::unique_ptr<Daemon> first_ = std::make_unique<Daemon>(name_);
  std::unique_ptr<Daemon> second_;  // declared before the clients, so it stops after them
  Bus bus_ = Bus::connect(name_);
  Subscriber one_ = bus_.subscriber();
  Subscriber two_ = bus_.subscriber();
  std::optional<detail::ControlView> view_;
};

// A client counts once in an entry's list: a second node naming the same client (left by a
// writer of the segment) is dropped, so no subscriber gets a message twice.
TEST_F(Adoption, KeepsOneNodePerClientInAnEntry) {
  ASSERT_EQ(one_.subscribe({"x"}), 1U);
  ASSERT_EQ(two_.subscribe({"x"}), 1U);
  const std::vector<std::string> x{"x"};
  ASSERT_EQ(bus_.numsub(x)[0].second, 2U);

  detail::ControlView& view = pause();
  std::vector<std::uint32_t> used;
  for (std::uint32_t i = 0; i < view.geometry().node_count; ++i) {
    if (view.node(i).client != detail::kFreeNode) used.push_back(i);
  }
  ASSERT_EQ(used.size(), 2U);
  view.node(used[1]).client = view.node(used[0]).client;
  adopt();

  EXPECT_EQ(bus_.numsub(x)[0].second, 1U);
  EXPECT_EQ(bus_.publish("x", "once"), 1U);
  EXPECT_NE(log().find("quarantined 0 entries and 1 subscription nodes"), std::string::npos)
      << log();
}

// A name found twice in the table becomes one entry holding the clients of both, each once.
TEST_F(Adoption, MergesANameFoundTwiceWithEachClientOnce) {
  ASSERT_EQ(one_.subscribe({"x", "y"}), 2U);
  ASSERT_EQ(two_.subscribe({"y"}), 1U);

  detail::ControlView& view = pause();
  const std::int64_t y = detail::find_entry(view, detail::Table::channels, "y");
  ASSERT_GE(y, 0);
  view.entry_name(detail::Table::channels, static_cast<std::uint32_t>(y))[0] =
      'x';  // "y" is now a second "x"
  adopt();

  const std::vector<std::string> names{"x", "y"};
  const auto counts = bus_.numsub(names);
  EXPECT_EQ(counts[0].second, 2U) << "one and two, one of them once";
  EXPECT_EQ(counts[1].second, 0U);
  EXPECT_EQ(bus_.publish("x", "once each"), 2U);
  EXPECT_NE(log().find("repaired channel 'x': it was in the table twice; merged"),
            std::string::npos)
      << log();
}

TEST(DaemonRestart, RequestsFailClearlyWhileNoCoordinatorRuns) {
  const std::string name = unique_bus("down");
  auto daemon = std::make_unique<Daemon>(name);
  Bus bus = Bus::connect(name, ConnectOptions{std::chrono::milliseconds(500)});
  Subscriber sub = bus.subscriber();
  daemon->kill_now();
  try {
    sub.subscribe({"x"});
    FAIL() << "subscribe succeeded without a coordinator";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::coordinator_gone);
    EXPECT_NE(std::string(e.what()).find("shmcastd --bus " + name), std::string::npos) << e.what();
  }
  daemon = std::make_unique<Daemon>(name);
  EXPECT_EQ(sub.subscribe({"x"}), 1U);
}

// `systemctl restart shmcastd` while a client starts: the stopped coordinator removed the unused
// bus (SIGTERM) or left it with a dead pid (SIGKILL). A new Bus, and a new Subscriber of a Bus
// that stays, wait for the coordinator started 300 ms later, as a request would, and work.
class RestartGap : public ::testing::TestWithParam<int> {
 protected:
  using Clock = std::chrono::steady_clock;

  void stop(Daemon& daemon) const {
    GetParam() == SIGKILL ? daemon.kill_now() : (void)daemon.terminate();
  }

  // Runs `open` in a thread while this one starts the next coordinator 300 ms later (from this
  // thread: a child's parent-death signal follows the thread that forked it). Returns how long
  // `open` took; rethrows what it threw.
  template <class F>
  Clock::duration open_while_restarting(std::unique_ptr<Daemon>& daemon, F&& open) {
    const std::string name = daemon->bus();
    Clock::duration took{};
    std::exception_ptr failure;
    {
      std::jthread client([&] {
        const auto start = Clock::now();
        try {
          open();
        } catch (...) {
          failure = std::current_exception();
        }
        took = Clock::now() - start;
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      daemon = std::make_unique<Daemon>(name);
    }
    if (failure) std::rethrow_exception(failure);
    return took;
  }
};

TEST_P(RestartGap, NewBusAndSubscriberWaitForTheRestartedCoordinator) {
  const std::string name = unique_bus("gap");
  const test::RemoveSegments cleanup{name};  // a killed coordinator leaves them
  auto daemon = std::make_unique<Daemon>(name);

  stop(*daemon);
  EXPECT_EQ(exists(control_path(name)), GetParam() == SIGKILL) << "SIGTERM removes an unused bus";
  std::optional<Bus> bus;
  EXPECT_GE(open_while_restarting(daemon, [&] { bus = Bus::connect(name); }),
            std::chrono::milliseconds(250))
      << "connected to no coordinator";
  EXPECT_TRUE(bus->coordinator_alive());

  stop(*daemon);
  EXPECT_TRUE(exists(control_path(name))) << "a bus with a client stays";
  std::optional<Subscriber> sub;
  EXPECT_GE(open_while_restarting(daemon, [&] { sub = bus->subscriber(); }),
            std::chrono::milliseconds(250))
      << "attached to no coordinator";
  EXPECT_EQ(sub->subscribe({"after"}), 1U);
  EXPECT_EQ(bus->publish("after", "restart"), 1U);
  const auto m = next_message(*sub);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "restart");
}

// With no coordinator coming back, the same clients fail after the request timeout, with the
// error they got at once before.
TEST_P(RestartGap, NewBusAndSubscriberFailAfterTheTimeoutWithoutOne) {
  const std::string name = unique_bus("nogap");
  const test::RemoveSegments cleanup{name};
  const ConnectOptions soon{std::chrono::milliseconds(300)};
  auto daemon = std::make_unique<Daemon>(name);
  Bus bus = Bus::connect(name, soon);
  const auto expect_no_coordinator = [&](const std::string& bus_name, const auto& open) {
    SCOPED_TRACE(bus_name);
    const auto took =
        test::expect_error(Errc::no_coordinator, "start shmcastd --bus " + bus_name, open);
    EXPECT_GE(took, soon.request_timeout);
    EXPECT_LT(took, soon.request_timeout + std::chrono::seconds(2));
  };
  stop(*daemon);
  expect_no_coordinator(name, [&] { (void)bus.subscriber(); });
  expect_no_coordinator(name, [&] { (void)Bus::connect(name, soon); });
  const std::string never_made = unique_bus("never");
  expect_no_coordinator(never_made, [&] { (void)Bus::connect(never_made, soon); });
}

INSTANTIATE_TEST_SUITE_P(, RestartGap, ::testing::Values(SIGTERM, SIGKILL),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGKILL ? "Sigkill" : "Sigterm");
                         });

// Clients can write the whole control segment. A subscription list turned into a loop must
// neither hang nor crash the coordinator: its walks are bounded and checked.
TEST(DaemonHostile, CorruptSubscriptionListsNeitherHangNorCrashTheCoordinator) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  auto victim = std::make_unique<Subscriber>(bus.subscriber());
  victim->subscribe({"a", "b"});
  Subscriber other = bus.subscriber();
  other.subscribe({"a"});
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  int corrupted = 0;
  for (std::uint32_t i = 0; i < view.geometry().node_count; ++i) {
    detail::Node& n = view.node(i);
    if (n.client == detail::kFreeNode) continue;
    n.next = i + 1;  // each node now points at itself
    ++corrupted;
  }
  ASSERT_EQ(corrupted, 3);
  victim.reset();  // its detach makes the coordinator unlink its nodes through those lists
  Subscriber late = bus.subscriber();
  EXPECT_EQ(late.subscribe({"c"}), 1U) << "the coordinator still serves";
  EXPECT_TRUE(bus.coordinator_alive());
  const std::vector<std::string> c{"c"};
  EXPECT_EQ(bus.numsub(c)[0].second, 1U);
}

TEST(SubscriberListen, CallbackLoopSeesEveryFrameWithoutCopies) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"a"});
  sub.psubscribe({"a*"});
  ASSERT_EQ(bus.publish("a", std::string("x\0y", 3)), 2U);
  std::vector<std::string> seen;
  const std::size_t handled = sub.listen(
      [&](const MessageView& m) {
        seen.push_back(std::string(kind_name(m.kind)) + "|" + std::string(m.pattern) + "|" +
                       std::string(m.channel) + "|" + std::string(m.payload) + "|" +
                       std::to_string(m.count));
        return seen.size() < 4;
      },
      std::chrono::seconds(5));
  EXPECT_EQ(handled, 4U);
  const std::vector<std::string> expected{"subscribe||a||1", "psubscribe||a*||2",
                                          std::string("message||a|x\0y|0", 16),
                                          std::string("pmessage|a*|a|x\0y|0", 19)};
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(sub.listen([](const MessageView&) { return true; }, std::chrono::milliseconds(50)), 0U);
}

}  // namespace
}  // namespace shmcast
