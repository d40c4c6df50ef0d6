// Bad input that other tests leave out: a full client table, a bus of another layout version,
// and foreign objects holding a bus's names. Each is refused with a typed error (or one line on
// stderr and a non-zero exit), and leaves every other client of the bus as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"
#include "integration/fault_support.hpp"
#include "integration/run_command.hpp"
#include "layout.hpp"
#include "segment.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using test::Result;
using test::run;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string control_path(const std::string& bus) {
  return "/dev/shm/shmcast." + bus + ".ctl";
}

Result cli(const std::string& bus, std::vector<std::string> args) {
  std::vector<std::string> argv{test::bin_dir() + "/shmcast", "--bus", bus};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

Result shm_stat(const std::string& bus) {
  return run({test::bin_dir() + "/shm-stat", "--bus", bus});
}

// Failed with `status` and exactly one line on stderr, starting with `program: ` and holding
// every one of `needles`; nothing on stdout.
void expect_one_line(const Result& r, const std::string& program, int status,
                     const std::vector<std::string>& needles) {
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind(program + ": ", 0), 0U) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const auto& needle : needles) EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

// The error `f` throws; nullopt if it throws none.
template <class F>
std::optional<Error> error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  return std::nullopt;
}

std::size_t clients_in_stats(const Bus& bus) {
  return bus.stats().clients.size();
}

void wait_for_clients(const Bus& bus, std::size_t n) {
  const auto deadline = Clock::now() + 5s;
  while (clients_in_stats(bus) != n && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
}

// ---- too many clients ------------------------------------------------------------------------

TEST(BadInputClients, FullClientTableIsRefusedAndOthersCarryOn) {
  test::Daemon daemon(test::unique_bus("full"), {"--max-clients", "3"});
  Bus bus = Bus::connect(daemon.bus());  // a slot for its publishes
  wait_for_clients(bus, 1);
  Subscriber first = bus.subscriber();  // holds its ring in the Bus's slot
  ASSERT_EQ(clients_in_stats(bus), 1U);
  Subscriber other = bus.subscriber();
  auto second = std::make_unique<Subscriber>(bus.subscriber());
  ASSERT_EQ(clients_in_stats(bus), 3U);

  const auto refused = error_of([&] { (void)bus.subscriber(); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code(), Errc::too_many_clients);
  EXPECT_NE(std::string(refused->what()).find("all 3 are taken (shmcastd --max-clients)"),
            std::string::npos)
      << refused->what();
  const auto refused_connect = error_of([&] { (void)Bus::connect(daemon.bus()); });
  ASSERT_TRUE(refused_connect.has_value());
  EXPECT_EQ(refused_connect->code(), Errc::too_many_clients);
  expect_one_line(cli(daemon.bus(), {"publish", "x", "y"}), "shmcast", 1, {"--max-clients"});

  // The clients that hold slots are not disturbed, and inspection needs no slot.
  EXPECT_EQ(first.subscribe({"x"}), 1U);
  ASSERT_TRUE(first.receive(5s).has_value());
  EXPECT_EQ(bus.publish("x", "still here"), 1U);
  const auto m = first.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "still here");
  EXPECT_EQ(shm_stat(daemon.bus()).status, 0);
  EXPECT_EQ(clients_in_stats(bus), 3U) << "a refused client holds no slot";

  // A slot given back is taken again.
  second.reset();
  wait_for_clients(bus, 2);
  Subscriber third = bus.subscriber();
  EXPECT_EQ(third.subscribe({"x"}), 1U);
  EXPECT_EQ(bus.publish("x", "two"), 2U);
}

// ---- another layout version ------------------------------------------------------------------

// Writes `version` into the layout version field of a segment's header, as a shmcast built
// with another layout would have.
void set_layout_version(const std::string& path, std::uint32_t version) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  void* p = ::mmap(nullptr, detail::kSegmentHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  static_cast<detail::SegmentHeader*>(p)->layout_version.store(version);
  ::munmap(p, detail::kSegmentHeaderSize);
}

TEST(BadInputVersion, BusOfAnotherLayoutVersionIsRefusedByEveryProgram) {
  const std::string name = test::unique_bus("version");
  const test::RemoveSegments cleanup{name};
  test::Daemon daemon(name);
  {
    Bus bus = Bus::connect(name);
    Subscriber sub = bus.subscriber();
    ASSERT_EQ(sub.subscribe({"v"}), 1U);
    ASSERT_TRUE(sub.receive(5s).has_value());

    // A running coordinator would repair the header; what is tested is a bus that another
    // version's coordinator left behind.
    daemon.kill_now();
    set_layout_version(control_path(name), detail::kLayoutVersion + 1);
    const std::string says = fmt::format("layout version {}, this program speaks {}",
                                         detail::kLayoutVersion + 1, detail::kLayoutVersion);
    const auto refused = error_of([&] { (void)Bus::connect(name); });
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->code(), Errc::version_mismatch);
    EXPECT_NE(std::string(refused->what()).find(says), std::string::npos) << refused->what();
    const auto not_inspected = error_of([&] { (void)inspect(name); });
    ASSERT_TRUE(not_inspected.has_value());
    EXPECT_EQ(not_inspected->code(), Errc::version_mismatch);
    expect_one_line(cli(name, {"publish", "v", "x"}), "shmcast", 1, {says});
    expect_one_line(shm_stat(name), "shm-stat", 1, {says});

    // Clients attached before are untouched.
    EXPECT_EQ(bus.publish("v", "still"), 1U);
    const auto m = sub.receive(5s);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->payload, "still");
  }
  // And a coordinator of this version will not adopt it.
  const auto [status, out] = test::run_daemon({"--bus", name});
  EXPECT_EQ(status, 1);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("layout version"), std::string::npos) << out;
  EXPECT_NE(out.find("no client of this version can use it"), std::string::npos) << out;
}

// ---- foreign objects under the bus's names --------------------------------------------------

std::string random_bytes(std::size_t n) {
  std::mt19937_64 random(n);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(random());
  return bytes;
}

void write_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// shmcastd refuses the bus with one line that says what is in the way and exits with 1,
// leaving the object as it was; clients and the tools report bad_segment.
void expect_refused(const std::string& name, const std::string& says) {
  const auto [status, out] = test::run_daemon({"--bus", name});
  EXPECT_EQ(status, 1) << out;
  EXPECT_EQ(out.rfind("shmcastd: ", 0), 0U) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find(says), std::string::npos) << out;
  EXPECT_EQ(out.find("remove"), out.rfind("remove")) << "one piece of advice, not two: " << out;
  struct stat st {};
  EXPECT_NE(::lstat(("/dev/shm/shmcast." + name + ".lock").c_str(), &st), 0)
      << "the refused coordinator left its lock file";
  const auto refused = error_of([&] { (void)Bus::connect(name); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code(), Errc::bad_segment) << refused->what();
  EXPECT_NE(std::string(refused->what()).find(says), std::string::npos) << refused->what();
  expect_one_line(cli(name, {"publish", "a", "b"}), "shmcast", 1, {says});
  expect_one_line(shm_stat(name), "shm-stat", 1, {says});
}

TEST(BadInputForeign, RandomBytesUnderTheControlNameAreRefusedAndKept) {
  const std::string name = test::unique_bus("foreign");
  const test::RemoveSegments cleanup{name};
  const std::string junk = random_bytes(4096);
  write_file(control_path(name), junk);
  expect_refused(name, "is not a shmcast segment");
  EXPECT_EQ(test::read_file(control_path(name)), junk) << "the foreign file was changed";
}

TEST(BadInputForeign, FileShorterThanAHeaderIsRefused) {
  const std::string name = test::unique_bus("short");
  const test::RemoveSegments cleanup{name};
  write_file(control_path(name), "not shmcast");
  expect_refused(name, "smaller than the 64-byte segment header");
  EXPECT_EQ(test::read_file(control_path(name)), "not shmcast");
}

TEST(BadInputForeign, SymlinksUnderTheBusNamesAreNeverFollowed) {
  const std::string name = test::unique_bus("symlink");
  const test::RemoveSegments cleanup{name};
  struct RemoveFile {
    std::string path;
    ~RemoveFile() { ::unlink(path.c_str()); }
  } const target_file{fmt::format("/tmp/shmcast-test-{}-target", getpid())};
  const std::string& target = target_file.path;
  write_file(target, "target");
  ASSERT_EQ(::symlink(target.c_str(), control_path(name).c_str()), 0);
  expect_refused(name, "is a symbolic link");
  EXPECT_EQ(test::read_file(target), "target");

  // A symlink where the coordinator keeps its lock is refused as well.
  ::unlink(control_path(name).c_str());
  const std::string lock = "/dev/shm/shmcast." + name + ".lock";
  ASSERT_EQ(::symlink(target.c_str(), lock.c_str()), 0);
  const auto [status, out] = test::run_daemon({"--bus", name});
  EXPECT_EQ(status, 1) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("cannot open " + lock), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(control_path(name))) << "a bus was created anyway";
  EXPECT_EQ(test::read_file(target), "target");
}

// An empty object is what a coordinator leaves when it dies between creating the control
// segment and sizing it; the next coordinator, which holds the bus's lock, takes the name over.
TEST(BadInputForeign, EmptyControlObjectIsTakenOverByTheNextCoordinator) {
  const std::string name = test::unique_bus("empty");
  const test::RemoveSegments cleanup{name};
  write_file(control_path(name), "");
  test::Daemon daemon(name);
  Bus bus = Bus::connect(name);
  Subscriber sub = bus.subscriber();
  EXPECT_EQ(sub.subscribe({"e"}), 1U);
  EXPECT_EQ(bus.publish("e", "x"), 1U);
}

}  // namespace
}  // namespace shmcast
