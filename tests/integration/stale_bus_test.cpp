// Buses nothing uses any more: `shm-stat --all` lists every bus on the host with its state, and
// `shm-stat --remove-dead` removes the dead ones, never one that a coordinator or a client
// still uses, nor what this user may not read or what is not shmcast's. Every test names its
// buses (other tests and users may have buses on the host meanwhile) and limits each removal to
// one of its own buses with --bus.

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "integration/json_reader.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {
namespace {

using namespace std::chrono_literals;

// Every object of `bus` under /dev/shm (the test's bus names hold no dot, so the prefix is
// exact).
std::set<std::string> objects_of(const std::string& bus) {
  return shm_names("shmcast." + bus + ".");
}

std::uint64_t bytes_of(const std::string& bus) {
  std::uint64_t bytes = 0;
  for (const std::string& name : objects_of(bus)) {
    struct stat st {};
    if (::lstat(("/dev/shm/" + name).c_str(), &st) == 0)
      bytes += static_cast<std::uint64_t>(st.st_size);
  }
  return bytes;
}

Result shm_stat(const std::vector<std::string>& args) {
  std::vector<std::string> argv{bin_dir() + "/shm-stat"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

// `shm-stat --all [--bus BUS] --json`, parsed.
Json all_json(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"--all", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  const Result r = shm_stat(args);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  return JsonParser::parse(r.out);
}

// The entry of `bus` in `shm-stat --all --json` output; throws if it is not listed.
const Json& entry_of(const Json& all, const std::string& bus) {
  for (const Json& b : all["buses"].items) {
    if (b["bus"].str() == bus) return b;
  }
  throw std::runtime_error("bus " + bus + " is not listed");
}

bool listed(const Json& all, const std::string& bus) {
  for (const Json& b : all["buses"].items) {
    if (b["bus"].str() == bus) return true;
  }
  return false;
}

// A `shmcast subscribe CHANNEL` process on `bus`, returned once it is subscribed.
std::unique_ptr<Command> subscriber(const std::string& bus) {
  auto child = std::make_unique<Command>(
      std::vector<std::string>{bin_dir() + "/shmcast", "--bus", bus, "subscribe", "stale"});
  child->close_stdin();
  EXPECT_TRUE(child->read_until_text("subscribe\nstale\n1\n")) << child->out() << child->err();
  return child;
}

void kill_now(Command& process) {
  process.signal(SIGKILL);
  EXPECT_EQ(process.wait(), 128 + SIGKILL);
}

// Leaves `bus` as a SIGKILLed coordinator and `clients` SIGKILLed subscribers leave it: in
// /dev/shm, with nothing alive to use it or clean it up. Returns the coordinator's pid.
pid_t leave_dead_bus(const std::string& bus, int clients) {
  Daemon daemon(bus);
  std::vector<std::unique_ptr<Command>> subscribers;
  for (int i = 0; i < clients; ++i) subscribers.push_back(subscriber(bus));
  // Else this process, whose start-up check took a slot, could count as a live client.
  EXPECT_TRUE(wait_for_clients(bus, static_cast<std::size_t>(clients))) << bus;
  const pid_t coordinator = daemon.pid();
  daemon.kill_now();
  for (auto& s : subscribers) kill_now(*s);
  return coordinator;
}

TEST(StaleBuses, DeadBusIsListedAndRemoved) {
  const std::string bus = unique_bus("dead");
  const RemoveSegments cleanup{bus};
  const pid_t coordinator = leave_dead_bus(bus, 2);
  const std::set<std::string> objects = objects_of(bus);
  ASSERT_EQ(objects.size(), 4U) << "control segment, lock file, two rings";

  for (const Json& all : {all_json(), all_json({"--bus", bus})}) {
    const Json& b = entry_of(all, bus);
    EXPECT_EQ(b["state"].str(), "dead");
    EXPECT_EQ(b["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(coordinator));
    EXPECT_FALSE(b["coordinator"]["alive"].flag());
    EXPECT_EQ(b["clients"]["alive"].u64(), 0U);
    EXPECT_EQ(b["clients"]["dead"].u64(), 2U);
    EXPECT_EQ(b["bytes"].u64(), bytes_of(bus));
    EXPECT_GT(b["bytes"].u64(), 0U);
    std::set<std::string> listed_objects;
    for (const Json& o : b["objects"].items) listed_objects.insert(o.str());
    EXPECT_EQ(listed_objects, objects);
    EXPECT_EQ(b["problem"].type, Json::Type::null);
  }
  const Json only = all_json({"--bus", bus});
  EXPECT_EQ(only["buses"].items.size(), 1U);

  const Result table = shm_stat({"--all", "--bus", bus});
  EXPECT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find(bus + "  dead"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("shm-stat --remove-dead"), std::string::npos) << table.out;

  const std::uint64_t bytes = bytes_of(bus);
  const Result removed = shm_stat({"--remove-dead", "--bus", bus});
  EXPECT_EQ(removed.status, 0) << removed.err;
  EXPECT_EQ(removed.out, fmt::format("removed {}: 4 objects, {} bytes\n1 dead bus removed, {} "
                                     "bytes freed\n",
                                     bus, bytes, bytes));
  EXPECT_EQ(objects_of(bus), std::set<std::string>{});
  EXPECT_FALSE(listed(all_json(), bus));

  // Nothing is left that a new coordinator or client trips over.
  try {
    (void)Bus::connect(bus);
    ADD_FAILURE() << "connected to a removed bus";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_coordinator) << e.what();
  }
  Daemon fresh(bus);
  Bus client = Bus::connect(bus);
  EXPECT_EQ(client.stats().clients.size(), 1U);
}

TEST(StaleBuses, LiveAndOrphanedBusesAreListedAndKept) {
  const std::string live_bus = unique_bus("live");
  const std::string orphaned_bus = unique_bus("orphan");
  const RemoveSegments cleanup{orphaned_bus};
  Daemon live(live_bus);
  const auto live_client = subscriber(live_bus);
  auto orphaned = std::make_unique<Daemon>(orphaned_bus);
  const auto orphan_client = subscriber(orphaned_bus);
  ASSERT_TRUE(wait_for_clients(live_bus, 1));
  ASSERT_TRUE(wait_for_clients(orphaned_bus, 1));
  const pid_t orphaned_coordinator = orphaned->pid();
  orphaned->kill_now();

  const Json all = all_json();
  const Json& l = entry_of(all, live_bus);
  EXPECT_EQ(l["state"].str(), "live");
  EXPECT_EQ(l["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(live.pid()));
  EXPECT_TRUE(l["coordinator"]["alive"].flag());
  EXPECT_EQ(l["clients"]["alive"].u64(), 1U);
  EXPECT_EQ(l["clients"]["dead"].u64(), 0U);
  EXPECT_EQ(l["bytes"].u64(), bytes_of(live_bus));
  const Json& o = entry_of(all, orphaned_bus);
  EXPECT_EQ(o["state"].str(), "orphaned");
  EXPECT_EQ(o["coordinator"]["pid"].u64(), static_cast<std::uint64_t>(orphaned_coordinator));
  EXPECT_FALSE(o["coordinator"]["alive"].flag());
  EXPECT_EQ(o["clients"]["alive"].u64(), 1U);
  EXPECT_EQ(o["bytes"].u64(), bytes_of(orphaned_bus));

  for (const std::string& bus : {live_bus, orphaned_bus}) {
    const std::set<std::string> before = objects_of(bus);
    const Result r = shm_stat({"--remove-dead", "--bus", bus, "--json"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "{\"buses\":[]}\n") << bus;
    EXPECT_EQ(objects_of(bus), before) << bus;
  }
  // Both still work: the live bus delivers, and the orphan's client still receives.
  Bus publisher = Bus::connect(live_bus);
  EXPECT_EQ(publisher.publish("stale", "still here"), 1U);
  EXPECT_TRUE(live_client->read_until_text("message\nstale\nstill here\n")) << live_client->out();

  // Once its last client is dead, the orphan is dead, and goes.
  kill_now(*orphan_client);
  EXPECT_EQ(entry_of(all_json({"--bus", orphaned_bus}), orphaned_bus)["state"].str(), "dead");
  const Result r = shm_stat({"--remove-dead", "--bus", orphaned_bus, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  const Json removal = JsonParser::parse(r.out);
  ASSERT_EQ(removal["buses"].items.size(), 1U) << r.out;
  EXPECT_TRUE(removal["buses"].items[0]["removed"].flag());
  EXPECT_EQ(removal["buses"].items[0]["objects"].items.size(), 3U) << r.out;
  EXPECT_EQ(objects_of(orphaned_bus), std::set<std::string>{});
}

// A coordinator starting on a dead bus holds its lock before it adopts it: the bus is taken as
// live, and is not removed under it.
TEST(StaleBuses, BusWhoseLockIsHeldIsKept) {
  const std::string bus = unique_bus("locked");
  const RemoveSegments cleanup{bus};
  leave_dead_bus(bus, 1);
  const std::string lock = "/dev/shm/shmcast." + bus + ".lock";
  const int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &fl), 0);

  EXPECT_EQ(entry_of(all_json({"--bus", bus}), bus)["state"].str(), "live");
  const std::set<std::string> before = objects_of(bus);
  const Result r = shm_stat({"--remove-dead", "--bus", bus});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "0 dead buses removed, 0 bytes freed\n");
  EXPECT_EQ(objects_of(bus), before);

  ::close(fd);
  EXPECT_EQ(entry_of(all_json({"--bus", bus}), bus)["state"].str(), "dead");
}

// Objects under a bus's names that are not shmcast segments of it are reported, never removed.
TEST(StaleBuses, ForeignObjectsAreReportedNotRemoved) {
  const std::string foreign_bus = unique_bus("foreign");
  const RemoveSegments foreign_cleanup{foreign_bus};
  const std::string foreign_ctl = "/dev/shm/shmcast." + foreign_bus + ".ctl";
  {
    std::ofstream out(foreign_ctl);
    out << std::string(4096, 'x');
  }
  const Json foreign = all_json({"--bus", foreign_bus});
  const Json& f = entry_of(foreign, foreign_bus);
  EXPECT_EQ(f["state"].str(), "foreign");
  EXPECT_EQ(f["bytes"].u64(), 4096U);
  EXPECT_NE(f["problem"].str().find("not a shmcast segment"), std::string::npos);
  const Result kept = shm_stat({"--remove-dead", "--bus", foreign_bus});
  EXPECT_EQ(kept.status, 0) << kept.err;
  EXPECT_NE(kept.out.find("kept " + foreign_bus + ": "), std::string::npos) << kept.out;
  EXPECT_EQ(objects_of(foreign_bus), std::set<std::string>{"shmcast." + foreign_bus + ".ctl"});

  // A file under one of a dead bus's ring names that is not a ring is kept, and so is the
  // control segment, so the bus stays listed instead of the file staying behind unseen.
  const std::string dead_bus = unique_bus("mixed");
  const RemoveSegments dead_cleanup{dead_bus};
  leave_dead_bus(dead_bus, 1);
  const std::string stray = "shmcast." + dead_bus + ".ring.7.0";
  {
    std::ofstream out("/dev/shm/" + stray);
    out << "not a ring";
  }
  const Result r = shm_stat({"--remove-dead", "--bus", dead_bus, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  const Json removal = JsonParser::parse(r.out);
  ASSERT_EQ(removal["buses"].items.size(), 1U) << r.out;
  const Json& b = removal["buses"].items[0];
  EXPECT_FALSE(b["removed"].flag());
  EXPECT_EQ(b["objects"].items.size(), 1U) << "the dead client's ring: " << r.out;
  ASSERT_EQ(b["kept"].items.size(), 2U) << r.out;
  EXPECT_NE(b["kept"].items[1].str().find(stray + " remains"), std::string::npos) << r.out;
  EXPECT_EQ(objects_of(dead_bus), (std::set<std::string>{"shmcast." + dead_bus + ".ctl",
                                                         "shmcast." + dead_bus + ".lock", stray}));
  EXPECT_EQ(entry_of(all_json({"--bus", dead_bus}), dead_bus)["state"].str(), "dead");
}

// A dead bus this user may not read is reported, and kept.
TEST(StaleBuses, UnreadableBusIsReportedNotRemoved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to look at a bus as another user";
  const struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
  const uid_t uid = nobody->pw_uid;
  const gid_t gid = nobody->pw_gid;
  const std::string bus = unique_bus("private");
  const RemoveSegments cleanup{bus};
  leave_dead_bus(bus, 0);
  const std::set<std::string> before = objects_of(bus);

  Child other([&](Link& link) {
    if (::setgid(gid) != 0 || ::setuid(uid) != 0) return 90;
    const auto buses = host_buses(bus);
    const auto removals = remove_dead_buses(bus);
    if (buses.size() != 1 || removals.size() != 1 || removals[0].kept.size() != 1) return 91;
    return link.send(health_name(buses[0].health)) && link.send(removals[0].removed ? "1" : "0") &&
                   link.send(removals[0].kept[0])
               ? 0
               : 92;
  });
  EXPECT_EQ(other.link().receive(30s), "unreadable");
  EXPECT_EQ(other.link().receive(30s), "0");
  const auto why = other.link().receive(30s);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("no permission"), std::string::npos) << *why;
  ASSERT_TRUE(other.wait(30s));
  EXPECT_TRUE(other.exited_cleanly()) << other.status();
  EXPECT_EQ(objects_of(bus), before);
  EXPECT_EQ(entry_of(all_json({"--bus", bus}), bus)["state"].str(), "dead");
}

}  // namespace
}  // namespace shmcast::test
