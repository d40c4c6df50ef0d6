// Who may attach to a bus. Run as root, the tests create throwaway users and a group, and run
// clients as them: another user cannot attach to a 0600 bus; with --group G --mode 0660 a member
// of G can, and a user outside G still cannot. No segment of a bus is ever world-accessible.
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "integration/run_command.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using test::Child;
using test::Link;
using namespace std::chrono_literals;

// Runs a command as root; true if it exited with 0. Tests running in parallel may hold the
// lock of /etc/passwd for a moment, so it is tried again a few times.
bool succeeds(const std::vector<std::string>& argv) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    if (test::run(argv).status == 0) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// A group and two users made for one test and removed when it ends, passed or failed: `member`
// belongs to the group, `outsider` does not.
class ThrowawayAccounts {
 public:
  ThrowawayAccounts() {
    const int pid = ::getpid();
    group_ = fmt::format("shmg{}", pid);
    member_ = fmt::format("shmm{}", pid);
    outsider_ = fmt::format("shmo{}", pid);
    made_ = succeeds({"groupadd", group_}) &&
            succeeds({"useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group_, member_}) &&
            succeeds({"useradd", "-M", "-N", "-s", "/usr/sbin/nologin", outsider_});
  }
  ~ThrowawayAccounts() {
    for (const std::string& user : {member_, outsider_}) {
      if (::getpwnam(user.c_str()) != nullptr) (void)succeeds({"userdel", "-r", user});
    }
    if (::getgrnam(group_.c_str()) != nullptr) (void)succeeds({"groupdel", group_});
  }
  ThrowawayAccounts(const ThrowawayAccounts&) = delete;
  ThrowawayAccounts& operator=(const ThrowawayAccounts&) = delete;

  [[nodiscard]] bool made() const { return made_; }
  [[nodiscard]] const std::string& group() const { return group_; }
  [[nodiscard]] const std::string& member() const { return member_; }
  [[nodiscard]] const std::string& outsider() const { return outsider_; }

 private:
  std::string group_;
  std::string member_;
  std::string outsider_;
  bool made_ = false;
};

// Becomes `user` (its groups included), for good: only a forked child may call this.
bool become(const std::string& user) {
  const struct passwd* pw = ::getpwnam(user.c_str());
  return pw != nullptr && ::initgroups(user.c_str(), pw->pw_gid) == 0 &&
         ::setgid(pw->pw_gid) == 0 && ::setuid(pw->pw_uid) == 0 && ::geteuid() == pw->pw_uid;
}

constexpr int kAttached = 0;
constexpr int kCannotBecome = 90;
constexpr int kOtherError = 91;

// In a child running as `user`: connects to `bus`, and if that works subscribes to "perm" and
// waits for one message. Exits with kAttached, or 10 + the Errc of the failure.
int attach_as(const std::string& user, const std::string& bus_name, Link& link) {
  if (!become(user)) return kCannotBecome;
  try {
    Bus bus = Bus::connect(bus_name);
    Subscriber sub = bus.subscriber();
    sub.subscribe({"perm"});
    if (!link.send("subscribed")) return kOtherError;
    for (int frames = 0; frames < 2; ++frames) {
      const auto m = sub.receive(10s);
      if (!m) return kOtherError;
      if (m->kind == Kind::message) return m->payload == "for the group" ? kAttached : kOtherError;
    }
    return kOtherError;
  } catch (const Error& e) {
    if (e.code() == Errc::permission_denied) {
      (void)link.send(e.what());
    }
    return 10 + static_cast<int>(e.code());
  }
}

int exit_code(Child& child) {
  EXPECT_TRUE(child.wait(30s));
  return WIFEXITED(child.status()) ? WEXITSTATUS(child.status()) : -1;
}

// Every object of the bus under /dev/shm: none may be accessible to others.
void expect_nothing_world_accessible(const std::string& bus, std::uint32_t mode) {
  const auto names = test::shm_names("shmcast." + bus + ".");
  EXPECT_GE(names.size(), 2U) << "the control segment and the lock at least";
  for (const std::string& name : names) {
    struct stat st {};
    ASSERT_EQ(::lstat(("/dev/shm/" + name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << name;
    EXPECT_EQ(st.st_mode & 0007, 0U) << name << fmt::format(" has mode {:04o}", st.st_mode & 07777);
    EXPECT_EQ(st.st_mode & 0777 & ~mode, 0U)
        << name << fmt::format(" has mode {:04o}, more than {:04o}", st.st_mode & 07777, mode);
  }
}

TEST(Permissions, OtherUserCannotAttachToAPrivateBus) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to create a throwaway user and run as it";
  const ThrowawayAccounts accounts;
  ASSERT_TRUE(accounts.made()) << "useradd / groupadd failed";
  test::Daemon daemon(test::unique_bus("private"));
  Bus bus = Bus::connect(daemon.bus());
  Subscriber own = bus.subscriber();
  own.subscribe({"perm"});

  Child intruder([&](Link& link) { return attach_as(accounts.member(), daemon.bus(), link); });
  const auto said = intruder.link().receive(30s);
  EXPECT_EQ(exit_code(intruder), 10 + static_cast<int>(Errc::permission_denied));
  ASSERT_TRUE(said.has_value());
  EXPECT_NE(said->find("permission"), std::string::npos) << *said;
  EXPECT_EQ(bus.publish("perm", "x"), 1U) << "only the owner's subscriber";
  expect_nothing_world_accessible(daemon.bus(), 0600);
}

TEST(Permissions, GroupMemberAttachesToAGroupBusAndOthersDoNot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to create throwaway users and run as them";
  const ThrowawayAccounts accounts;
  ASSERT_TRUE(accounts.made()) << "useradd / groupadd failed";
  test::Daemon daemon(test::unique_bus("group"), {"--group", accounts.group(), "--mode", "0660"});
  Bus bus = Bus::connect(daemon.bus());

  Child member([&](Link& link) { return attach_as(accounts.member(), daemon.bus(), link); });
  ASSERT_EQ(member.link().receive(30s), "subscribed");
  // Its ring, made by the member, carries the bus's group and mode too.
  const struct group* g = ::getgrnam(accounts.group().c_str());
  ASSERT_NE(g, nullptr);
  for (const std::string& name : test::ring_files(daemon.bus())) {
    struct stat st {};
    ASSERT_EQ(::lstat(("/dev/shm/" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, g->gr_gid) << name;
    EXPECT_EQ(st.st_mode & 07777, 0660U) << name;
  }
  expect_nothing_world_accessible(daemon.bus(), 0660);
  EXPECT_EQ(bus.publish("perm", "for the group"), 1U);
  EXPECT_EQ(exit_code(member), kAttached);

  Child outsider([&](Link& link) { return attach_as(accounts.outsider(), daemon.bus(), link); });
  EXPECT_EQ(exit_code(outsider), 10 + static_cast<int>(Errc::permission_denied));
}

}  // namespace
}  // namespace shmcast
