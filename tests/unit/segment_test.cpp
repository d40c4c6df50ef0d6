#include "segment.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace shmcast::detail {

// Readable names in assertion failures instead of bare integers.
void PrintTo(SegmentErrc code, std::ostream* os) {
  constexpr std::string_view kNames[] = {"missing",           "already_exists", "bad_magic",
                                         "bad_version",       "not_ready",      "too_small",
                                         "permission_denied", "invalid_name",   "system"};
  const auto index = static_cast<std::size_t>(code);
  *os << (index < std::size(kNames) ? kNames[index] : "SegmentErrc(?)");
}

}  // namespace shmcast::detail

namespace {

using shmcast::detail::kSegmentHeaderSize;
using shmcast::detail::kSegmentMagic;
using shmcast::detail::Permissions;
using shmcast::detail::Segment;
using shmcast::detail::SegmentErrc;
using shmcast::detail::SegmentError;
using shmcast::detail::SegmentKind;

constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kSize = 4096;
constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// A /dev/shm name unique to this process and test; whatever ends up under it (segment, file,
// symlink, directory) is removed when the test ends, passed or failed.
class ScratchName {
 public:
  explicit ScratchName(std::string_view tag = "seg") {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    name_ = fmt::format("shmcast.test-{}-{}.{}-{}", ::getpid(), test->test_suite_name(),
                        test->name(), tag);
  }
  ~ScratchName() { std::remove(path().c_str()); }
  ScratchName(const ScratchName&) = delete;
  ScratchName& operator=(const ScratchName&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string path() const { return "/dev/shm/" + name_; }

 private:
  std::string name_;
};

class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

// The SegmentError that f throws; a test failure if it throws none.
template <class F>
SegmentError error_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const SegmentError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a SegmentError, none was thrown";
  return SegmentError(SegmentErrc::system, "(none thrown)");
}

bool mentions(const SegmentError& e, std::string_view text) {
  return std::string_view(e.what()).find(text) != std::string_view::npos;
}

Segment make_published(const std::string& name, std::size_t size = kSize,
                       SegmentKind kind = SegmentKind::ring, std::uint32_t version = kVersion) {
  auto segment = Segment::create(name, size, kind, version);
  segment.publish();
  return segment;
}

void write_file(const std::string& path, std::string_view bytes, mode_t mode = 0600) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::string read_file(const std::string& path) {
  std::string bytes;
  if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    char buffer[256];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) {
      bytes.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
  }
  return bytes;
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

std::uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Exit statuses of open_as_nobody's child besides the SegmentErrc values.
constexpr int kOpened = 100;
constexpr int kCannotDrop = 101;
constexpr int kOtherError = 102;

// Opens `name` from a child process running as nobody:nogroup and returns what the child
// reported: kOpened, the SegmentErrc it got, or another k* status.
int open_as_nobody(const std::string& name) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0) {
      ::_exit(kCannotDrop);
    }
    try {
      Segment::open(name, SegmentKind::ring, kVersion);
      ::_exit(kOpened);
    } catch (const SegmentError& e) {
      ::_exit(static_cast<int>(e.code()));
    } catch (...) {
      ::_exit(kOtherError);
    }
  }
  EXPECT_GT(pid, 0) << std::strerror(errno);
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(SegmentCreate, RoundTripThroughASecondMapping) {
  ScratchName name;
  const std::uint64_t before = realtime_ns();
  auto created = Segment::create(name.name(), kSize, SegmentKind::ring, kVersion);
  const std::uint64_t after = realtime_ns();
  EXPECT_EQ(created.name(), name.name());
  EXPECT_EQ(created.size(), kSize);
  EXPECT_EQ(created.header().layout_version.load(), 0U);
  for (std::size_t i = kSegmentHeaderSize; i < kSize; ++i) {
    created.base()[i] = static_cast<std::byte>(i * 7);
  }
  created.publish();

  auto opened = Segment::open(name.name(), SegmentKind::ring, kVersion, kSize);
  ASSERT_NE(opened.base(), created.base());
  EXPECT_EQ(opened.size(), kSize);
  EXPECT_EQ(std::memcmp(opened.base(), "\0shmcast", 8), 0);
  const auto& header = opened.header();
  EXPECT_EQ(header.magic, kSegmentMagic);
  EXPECT_EQ(header.layout_version.load(), kVersion);
  EXPECT_EQ(header.kind, static_cast<std::uint32_t>(SegmentKind::ring));
  EXPECT_EQ(header.size, kSize);
  EXPECT_EQ(header.creator_pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_GE(header.created_ns, before);
  EXPECT_LE(header.created_ns, after);
  for (std::size_t i = kSegmentHeaderSize; i < kSize; ++i) {
    ASSERT_EQ(opened.base()[i], static_cast<std::byte>(i * 7)) << "at byte " << i;
  }
  // Shared, not copied: a write through one mapping shows through the other.
  opened.base()[kSize - 1] = std::byte{0x5a};
  EXPECT_EQ(created.base()[kSize - 1], std::byte{0x5a});
}

TEST(SegmentCreate, TakenNameIsAlreadyExists) {
  ScratchName name;
  auto first = Segment::create(name.name(), kSize, SegmentKind::ring, kVersion);
  first.base()[kSegmentHeaderSize] = std::byte{1};
  const auto error =
      error_of([&] { Segment::create(name.name(), kSize, SegmentKind::ring, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::already_exists);
  EXPECT_TRUE(mentions(error, name.path())) << error.what();
  // The refused create neither removed nor reset the first segment.
  ASSERT_TRUE(Segment::exists(name.name()));
  first.publish();
  EXPECT_EQ(Segment::open(name.name(), SegmentKind::ring, kVersion).base()[kSegmentHeaderSize],
            std::byte{1});
}

TEST(SegmentCreate, SymlinkIsAlreadyExistsAndItsTargetUntouched) {
  ScratchName target("target");
  ScratchName link("link");
  write_file(target.path(), "precious", 0644);
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0) << std::strerror(errno);
  EXPECT_TRUE(Segment::exists(link.name()));

  const auto error =
      error_of([&] { Segment::create(link.name(), kSize, SegmentKind::ring, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::already_exists);
  EXPECT_TRUE(S_ISLNK(lstat_of(link.path()).st_mode));
  const struct stat st = lstat_of(target.path());
  EXPECT_EQ(st.st_mode & 07777, 0644U);
  EXPECT_EQ(st.st_size, 8);
  EXPECT_EQ(read_file(target.path()), "precious");
}

TEST(SegmentCreate, DanglingSymlinkIsAlreadyExistsAndNothingIsCreatedAtItsTarget) {
  ScratchName target("target");
  ScratchName link("link");
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0) << std::strerror(errno);
  EXPECT_TRUE(Segment::exists(link.name()));

  EXPECT_EQ(
      error_of([&] { Segment::create(link.name(), kSize, SegmentKind::ring, kVersion); }).code(),
      SegmentErrc::already_exists);
  EXPECT_FALSE(Segment::exists(target.name()));
}

TEST(SegmentCreate, PlainFileIsAlreadyExistsAndUntouched) {
  ScratchName name;
  write_file(name.path(), "someone else's", 0644);
  EXPECT_EQ(
      error_of([&] { Segment::create(name.name(), kSize, SegmentKind::ring, kVersion); }).code(),
      SegmentErrc::already_exists);
  EXPECT_EQ(read_file(name.path()), "someone else's");
  EXPECT_EQ(lstat_of(name.path()).st_mode & 07777, 0644U);
}

TEST(SegmentCreate, InvalidNamesAreRefusedEverywhere) {
  const std::string names[] = {"",
                               "a/b",
                               "/leading",
                               std::string(201, 'n'),
                               std::string(300, 'n'),
                               ".",
                               "..",
                               std::string("a\0b", 3)};
  for (const auto& name : names) {
    SCOPED_TRACE(fmt::format("name {:?}", name));
    EXPECT_EQ(error_of([&] { Segment::create(name, kSize, SegmentKind::ring, kVersion); }).code(),
              SegmentErrc::invalid_name);
    EXPECT_EQ(error_of([&] { Segment::open(name, SegmentKind::ring, kVersion); }).code(),
              SegmentErrc::invalid_name);
    EXPECT_FALSE(Segment::exists(name));
    EXPECT_FALSE(Segment::remove(name));
  }
}

TEST(SegmentCreate, NameOf200CharactersIsAccepted) {
  const std::size_t prefix = ScratchName("").name().size();
  ScratchName longest(std::string(200 - prefix, 'x'));
  ASSERT_EQ(longest.name().size(), 200U);
  make_published(longest.name());
  EXPECT_NO_THROW(Segment::open(longest.name(), SegmentKind::ring, kVersion));
}

TEST(SegmentCreate, BadArgumentsAreRefusedAndLeaveNoName) {
  ScratchName name;
  EXPECT_THROW(Segment::create(name.name(), kSegmentHeaderSize - 1, SegmentKind::ring, kVersion),
               std::invalid_argument);
  EXPECT_THROW(Segment::create(name.name(), std::numeric_limits<std::size_t>::max(),
                               SegmentKind::ring, kVersion),
               std::invalid_argument);
  EXPECT_THROW(Segment::create(name.name(), kSize, SegmentKind::ring, 0), std::invalid_argument);
  EXPECT_FALSE(Segment::exists(name.name()));
}

TEST(SegmentCreate, FailureAfterCreationRemovesTheName) {
  struct statvfs fs {};
  ASSERT_EQ(::statvfs("/dev/shm", &fs), 0);
  if (fs.f_blocks == 0) {
    GTEST_SKIP() << "/dev/shm has no size limit, so no size is sure to fail";
  }
  ScratchName name;
  const std::size_t too_big = fs.f_blocks * fs.f_frsize + (std::size_t{1} << 20);
  const auto error =
      error_of([&] { Segment::create(name.name(), too_big, SegmentKind::ring, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::system);
  EXPECT_TRUE(mentions(error, name.path())) << error.what();
  EXPECT_FALSE(Segment::exists(name.name()));
}

TEST(SegmentOpen, MissingNameIsMissing) {
  ScratchName name;
  const auto error = error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::missing);
  EXPECT_TRUE(mentions(error, name.path())) << error.what();
}

TEST(SegmentOpen, ForeignFileIsBadMagic) {
  ScratchName name;
  write_file(name.path(), std::string(kSize, 'x'));
  const auto error = error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::bad_magic);
  EXPECT_TRUE(mentions(error, "wrong magic")) << error.what();
}

// Only the magic differs, so no later check can stand in for the magic check.
TEST(SegmentOpen, SegmentWithOnlyTheMagicWrongIsBadMagic) {
  ScratchName name;
  auto created = make_published(name.name());
  created.header().magic = kSegmentMagic + 1;
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::bad_magic);
}

TEST(SegmentOpen, WrongKindIsBadMagic) {
  ScratchName name;
  make_published(name.name(), kSize, SegmentKind::ring);
  const auto error = error_of([&] { Segment::open(name.name(), SegmentKind::control, kVersion); });
  EXPECT_EQ(error.code(), SegmentErrc::bad_magic);
  EXPECT_TRUE(mentions(error, "is a ring segment")) << error.what();
}

TEST(SegmentOpen, SymlinkToASegmentIsNotFollowed) {
  ScratchName target("target");
  ScratchName link("link");
  make_published(target.name());
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { Segment::open(link.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::bad_magic);
}

TEST(SegmentOpen, DirectoryAndFifoAreBadMagic) {
  ScratchName directory("dir");
  ScratchName fifo("fifo");
  ASSERT_EQ(::mkdir(directory.path().c_str(), 0700), 0) << std::strerror(errno);
  ASSERT_EQ(::mkfifo(fifo.path().c_str(), 0600), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { Segment::open(directory.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::bad_magic);
  EXPECT_EQ(error_of([&] { Segment::open(fifo.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::bad_magic);
}

TEST(SegmentOpen, UnpublishedSegmentIsNotReadyUntilPublished) {
  ScratchName name;
  auto created = Segment::create(name.name(), kSize, SegmentKind::ring, kVersion);
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::not_ready);
  created.publish();
  EXPECT_NO_THROW(Segment::open(name.name(), SegmentKind::ring, kVersion));
}

// What a reader sees while a creator sits between shm_open and writing the header.
TEST(SegmentOpen, EmptyOrAllZeroObjectIsNotReady) {
  ScratchName empty("empty");
  ScratchName zeros("zeros");
  write_file(empty.path(), "");
  write_file(zeros.path(), std::string(kSize, '\0'));
  EXPECT_EQ(error_of([&] { Segment::open(empty.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::not_ready);
  EXPECT_EQ(error_of([&] { Segment::open(zeros.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::not_ready);
}

TEST(SegmentOpen, OtherLayoutVersionIsBadVersion) {
  ScratchName name;
  make_published(name.name(), kSize, SegmentKind::ring, 3);
  const auto error = error_of([&] { Segment::open(name.name(), SegmentKind::ring, 1); });
  EXPECT_EQ(error.code(), SegmentErrc::bad_version);
  EXPECT_TRUE(mentions(error, "layout version 3, this program speaks 1")) << error.what();
}

TEST(SegmentOpen, FileSmallerThanHeaderIsTooSmall) {
  ScratchName name;
  make_published(name.name());
  ASSERT_EQ(::truncate(name.path().c_str(), 32), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::too_small);
}

// Every header field that lies inside the file agrees with it, so only the check against the
// header's own size can refuse it.
TEST(SegmentOpen, ConsistentHeaderCutShortIsTooSmall) {
  ScratchName name;
  constexpr std::size_t kCut = 24;
  {
    auto created = make_published(name.name());
    created.header().size = kCut;
  }
  ASSERT_EQ(::truncate(name.path().c_str(), kCut), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::too_small);
}

TEST(SegmentOpen, RecordedSizeLargerThanFileIsTooSmall) {
  ScratchName name;
  auto created = make_published(name.name());
  created.header().size = 2 * kSize;
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::too_small);
}

TEST(SegmentOpen, FileLargerThanRecordedSizeIsTooSmall) {
  ScratchName name;
  make_published(name.name());
  ASSERT_EQ(::truncate(name.path().c_str(), 2 * kSize), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion); }).code(),
            SegmentErrc::too_small);
}

TEST(SegmentOpen, SmallerThanMinSizeIsTooSmall) {
  ScratchName name;
  make_published(name.name());
  EXPECT_EQ(
      error_of([&] { Segment::open(name.name(), SegmentKind::ring, kVersion, kSize + 1); }).code(),
      SegmentErrc::too_small);
  EXPECT_NO_THROW(Segment::open(name.name(), SegmentKind::ring, kVersion, kSize));
}

TEST(SegmentPermissions, DefaultModeIsExactly0600UnderAnyUmask) {
  for (const mode_t mask : {mode_t{0}, mode_t{0022}, mode_t{0077}}) {
    SCOPED_TRACE(fmt::format("umask {:04o}", mask));
    const ScopedUmask umask(mask);
    ScratchName name(fmt::format("umask{:o}", mask));
    Segment::create(name.name(), kSize, SegmentKind::ring, kVersion);
    const struct stat st = lstat_of(name.path());
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600U);
    EXPECT_EQ(st.st_uid, ::geteuid());
  }
}

TEST(SegmentPermissions, GroupAndModeAreAppliedExactly) {
  const ScopedUmask umask(0077);
  for (const mode_t mode : {mode_t{0660}, mode_t{0640}, mode_t{0664}}) {
    SCOPED_TRACE(fmt::format("mode {:04o}", mode));
    ScratchName name(fmt::format("mode{:o}", mode));
    Segment::create(name.name(), kSize, SegmentKind::ring, kVersion,
                    Permissions{.mode = mode, .group = kNogroup});
    const struct stat st = lstat_of(name.path());
    EXPECT_EQ(st.st_mode & 07777, mode);
    EXPECT_EQ(st.st_gid, kNogroup);
  }
}

TEST(SegmentPermissions, WorldWritableAndSpecialModesAreRefused) {
  for (const mode_t mode : {mode_t{0666}, mode_t{0602}, mode_t{0777}, mode_t{04600}, mode_t{02660},
                            mode_t{01600}, mode_t{010600}}) {
    SCOPED_TRACE(fmt::format("mode {:04o}", mode));
    ScratchName name(fmt::format("mode{:o}", mode));
    EXPECT_THROW(Segment::create(name.name(), kSize, SegmentKind::ring, kVersion,
                                 Permissions{.mode = mode, .group = {}}),
                 std::invalid_argument);
    EXPECT_FALSE(Segment::exists(name.name()));
  }
}

TEST(SegmentPermissions, OtherUserIsPermissionDenied) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root, to run a child as another user";
  }
  ScratchName name;
  make_published(name.name());
  EXPECT_EQ(open_as_nobody(name.name()), static_cast<int>(SegmentErrc::permission_denied));
}

TEST(SegmentPermissions, GroupMemberMayOpenOnlyWithGroupReadWrite) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root, to run a child as another user";
  }
  ScratchName read_write("rw");
  ScratchName read_only("ro");
  Segment::create(read_write.name(), kSize, SegmentKind::ring, kVersion,
                  Permissions{.mode = 0660, .group = kNogroup})
      .publish();
  Segment::create(read_only.name(), kSize, SegmentKind::ring, kVersion,
                  Permissions{.mode = 0640, .group = kNogroup})
      .publish();
  EXPECT_EQ(open_as_nobody(read_write.name()), kOpened);
  EXPECT_EQ(open_as_nobody(read_only.name()), static_cast<int>(SegmentErrc::permission_denied));
}

TEST(SegmentRemove, ReturnsTrueThenFalse) {
  ScratchName name;
  Segment::create(name.name(), kSize, SegmentKind::ring, kVersion);
  EXPECT_TRUE(Segment::exists(name.name()));
  EXPECT_TRUE(Segment::remove(name.name()));
  EXPECT_FALSE(Segment::exists(name.name()));
  EXPECT_FALSE(Segment::remove(name.name()));
}

TEST(SegmentRemove, MappingStaysUsableAfterRemove) {
  ScratchName name;
  auto old = make_published(name.name());
  old.base()[kSegmentHeaderSize] = std::byte{7};
  ASSERT_TRUE(Segment::remove(name.name()));
  EXPECT_EQ(old.base()[kSegmentHeaderSize], std::byte{7});
  old.base()[kSize - 1] = std::byte{9};
  EXPECT_EQ(old.base()[kSize - 1], std::byte{9});
  EXPECT_EQ(old.header().magic, kSegmentMagic);

  // The name is free again, and a new segment under it shares nothing with the old mapping.
  auto fresh = make_published(name.name());
  EXPECT_EQ(fresh.base()[kSegmentHeaderSize], std::byte{0});
  fresh.base()[kSegmentHeaderSize] = std::byte{1};
  EXPECT_EQ(old.base()[kSegmentHeaderSize], std::byte{7});
}

}  // namespace
