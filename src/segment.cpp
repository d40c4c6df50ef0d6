#include "segment.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <limits>
#include <new>
#include <system_error>

#include <fmt/format.h>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "process.hpp"

namespace shmcast::detail {

namespace bip = boost::interprocess;

namespace {

constexpr std::size_t kMaxNameLength = 200;

// glibc's shm_open keeps every object here; messages name this path because it is what a user
// sees with `ls` and can remove with `rm`.
constexpr std::string_view kShmDirectory = "/dev/shm/";

std::string disk_path(const std::string& name) {
  return std::string(kShmDirectory) + name;
}

bool valid_name(const std::string& name) noexcept {
  // "." and ".." would name /dev/shm itself and its parent.
  return !name.empty() && name.size() <= kMaxNameLength && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string::npos;
}

void check_name(const std::string& name) {
  if (!valid_name(name)) {
    throw SegmentError(SegmentErrc::invalid_name,
                       fmt::format("invalid shared-memory segment name {:?}: use 1 to {} "
                                   "characters, without '/' or NUL, other than '.' and '..'",
                                   name, kMaxNameLength));
  }
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// Boost reports system failures with their errno; anything else only through what().
std::string describe(const bip::interprocess_exception& e) {
  return e.get_native_error() != 0 ? errno_text(e.get_native_error()) : std::string(e.what());
}

std::string_view kind_name(std::uint32_t kind) {
  switch (static_cast<SegmentKind>(kind)) {
    case SegmentKind::control: return "control";
    case SegmentKind::ring: return "ring";
    case SegmentKind::pool: return "pool";
  }
  return "unknown";
}

// Owner, group and mode of the object, to tell a user whose permission is missing.
std::string ownership(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return {};
  }
  return fmt::format(" (owner uid {}, group gid {}, mode {:04o})", st.st_uid, st.st_gid,
                     st.st_mode & 07777);
}

SegmentError create_error(const bip::interprocess_exception& e, const std::string& path) {
  switch (e.get_native_error()) {
    case EEXIST:
      return {SegmentErrc::already_exists,
              fmt::format("shared-memory segment {} already exists (a stale segment or another "
                          "program's file): remove it or pick another bus name",
                          path)};
    case EACCES:
    case EPERM:
      return {SegmentErrc::permission_denied,
              fmt::format("no permission to create shared-memory segment {}: check that this "
                          "user may write to /dev/shm",
                          path)};
    case EINVAL:
    case ENAMETOOLONG:
      return {SegmentErrc::invalid_name,
              fmt::format("the system refused the name of shared-memory segment {}: pick a "
                          "shorter bus name",
                          path)};
    default:
      return {SegmentErrc::system,
              fmt::format("cannot create shared-memory segment {}: {}", path, describe(e))};
  }
}

SegmentError open_error(const bip::interprocess_exception& e, const std::string& path) {
  switch (e.get_native_error()) {
    case ENOENT:
      return {SegmentErrc::missing,
              fmt::format("shared-memory segment {} does not exist: start the program that "
                          "creates it first",
                          path)};
    case EACCES:
    case EPERM:
      return {SegmentErrc::permission_denied,
              fmt::format("no permission to open shared-memory segment {}{}: run as its owner, "
                          "or have its creator grant your group read-write access",
                          path, ownership(path))};
    // shm_open opens with O_NOFOLLOW, so a symlink fails with ELOOP instead of being followed.
    case ELOOP:
      return {SegmentErrc::bad_magic,
              fmt::format("{} is a symbolic link, not a shmcast segment: remove it or pick "
                          "another bus name",
                          path)};
    // glibc's shm_open turns EISDIR into EINVAL; the name itself was checked before.
    case EINVAL:
      return {SegmentErrc::bad_magic,
              fmt::format("{} is a directory, not a shmcast segment: remove it or pick another "
                          "bus name",
                          path)};
    default:
      return {SegmentErrc::system,
              fmt::format("cannot open shared-memory segment {}: {}", path, describe(e))};
  }
}

[[noreturn]] void throw_system(int err, std::string_view action, const std::string& path) {
  throw SegmentError(SegmentErrc::system, fmt::format("cannot {} shared-memory segment {}: {}",
                                                      action, path, errno_text(err)));
}

}  // namespace

Segment Segment::create(const std::string& name, std::size_t size, SegmentKind kind,
                        std::uint32_t layout_version, const Permissions& perms) {
  check_name(name);
  if ((perms.mode & ~mode_t{0777}) != 0) {
    throw std::invalid_argument(fmt::format(
        "segment mode {:04o} has bits outside 0777: give only read/write permission bits",
        perms.mode));
  }
  if ((perms.mode & S_IWOTH) != 0) {
    throw std::invalid_argument(fmt::format(
        "segment mode {:04o} is world-writable: shmcast never creates such segments; use a "
        "group instead",
        perms.mode));
  }
  if (size < kSegmentHeaderSize ||
      size > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
    throw std::invalid_argument(fmt::format("segment size {} is not between {} and {} bytes", size,
                                            kSegmentHeaderSize, std::numeric_limits<off_t>::max()));
  }
  if (layout_version == 0) {
    throw std::invalid_argument("layout version 0 is reserved for a segment not yet published");
  }

  const std::string path = disk_path(name);
  bip::shared_memory_object object;
  try {
    // O_CREAT | O_EXCL: an existing name of any kind, a dangling symlink included, is refused
    // rather than opened or followed. Owner-only until the group is set, so no other group
    // ever holds access, even briefly.
    object = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write,
                                       bip::permissions(0600));
  } catch (const bip::interprocess_exception& e) {
    throw create_error(e, path);
  }

  // From here on the name is ours: give it back on any failure, so a retry can succeed.
  try {
    const int fd = object.get_mapping_handle().handle;
    if (perms.group && ::fchown(fd, static_cast<uid_t>(-1), *perms.group) != 0) {
      const int err = errno;
      if (err == EPERM) {
        throw SegmentError(SegmentErrc::permission_denied,
                           fmt::format("cannot give shared-memory segment {} to group {}: this "
                                       "user is not a member of that group",
                                       path, *perms.group));
      }
      throw_system(err, fmt::format("give group {} to", *perms.group), path);
    }
    // shm_open applies the umask; the mode asked for must hold exactly.
    if (::fchmod(fd, perms.mode) != 0) {
      throw_system(errno, fmt::format("set mode {:04o} on", perms.mode), path);
    }
    try {
      object.truncate(static_cast<bip::offset_t>(size));
    } catch (const bip::interprocess_exception& e) {
      throw SegmentError(SegmentErrc::system,
                         fmt::format("cannot size shared-memory segment {} to {} bytes: {}", path,
                                     size, describe(e)));
    }
    // tmpfs allocates pages on first touch and answers a full /dev/shm with SIGBUS in whichever
    // process touches them first; reserving them now turns that into this error instead.
    if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); err != 0) {
      throw SegmentError(SegmentErrc::system,
                         fmt::format("cannot reserve {} bytes for shared-memory segment {}: {}; "
                                     "free or enlarge /dev/shm, or ask for a smaller size",
                                     size, path, errno_text(err)));
    }
    bip::mapped_region region;
    try {
      region = bip::mapped_region(object, bip::read_write, 0, size);
    } catch (const bip::interprocess_exception& e) {
      throw SegmentError(SegmentErrc::system,
                         fmt::format("cannot map shared-memory segment {}: {}", path, describe(e)));
    }
    auto* header = ::new (region.get_address()) SegmentHeader{};
    header->kind = static_cast<std::uint32_t>(kind);
    header->size = size;
    header->creator_pid = static_cast<std::uint32_t>(::getpid());
    header->created_ns = realtime_ns();
    // Written after the fields above, with release: an opener that sees the magic sees them too,
    // and a header still all zeros means "being created", not "not a shmcast segment".
    std::atomic_ref<std::uint64_t>(header->magic).store(kSegmentMagic, std::memory_order_release);
    return Segment(name, std::move(region), layout_version);
  } catch (...) {
    bip::shared_memory_object::remove(name.c_str());
    throw;
  }
}

Segment Segment::open(const std::string& name, SegmentKind kind, std::uint32_t layout_version,
                      std::size_t min_size, std::size_t writable) {
  check_name(name);
  const std::string path = disk_path(name);
  bip::shared_memory_object object;
  try {
    object = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    throw open_error(e, path);
  }

  struct stat st {};
  if (::fstat(object.get_mapping_handle().handle, &st) != 0) {
    throw_system(errno, "inspect", path);
  }
  if (!S_ISREG(st.st_mode)) {
    throw SegmentError(SegmentErrc::bad_magic,
                       fmt::format("{} is not a regular file, so not a shmcast segment: remove it "
                                   "or pick another bus name",
                                   path));
  }
  const auto real_size = static_cast<std::uint64_t>(st.st_size);
  // An empty object is what create leaves between shm_open and ftruncate.
  if (real_size == 0) {
    throw SegmentError(SegmentErrc::not_ready,
                       fmt::format("shared-memory segment {} is empty: its creator has not set it "
                                   "up yet; retry, or remove it if its creator died",
                                   path));
  }
  if (real_size < kSegmentHeaderSize) {
    throw SegmentError(SegmentErrc::too_small,
                       fmt::format("shared-memory segment {} is {} bytes, smaller than the {}-byte "
                                   "segment header: it is not a shmcast segment; remove it",
                                   path, real_size, kSegmentHeaderSize));
  }

  if (writable >= real_size) writable = 0;
  bip::mapped_region region;
  bip::mapped_region read_only;
  try {
    if (writable == 0) {
      region = bip::mapped_region(object, bip::read_write, 0, static_cast<std::size_t>(real_size));
    } else {
      region = bip::mapped_region(object, bip::read_write, 0, writable);
      read_only = bip::mapped_region(object, bip::read_only, static_cast<bip::offset_t>(writable),
                                     static_cast<std::size_t>(real_size) - writable);
    }
  } catch (const bip::interprocess_exception& e) {
    throw SegmentError(SegmentErrc::system,
                       fmt::format("cannot map shared-memory segment {}: {}", path, describe(e)));
  }
  auto& header = *static_cast<SegmentHeader*>(region.get_address());

  // Acquire loads of the fields the creator writes last pair with its release stores, so the
  // creator may still be writing while this runs.
  const std::uint32_t version = header.layout_version.load(std::memory_order_acquire);
  const std::uint64_t magic =
      std::atomic_ref<std::uint64_t>(header.magic).load(std::memory_order_acquire);
  if (magic == 0 && version == 0) {
    throw SegmentError(SegmentErrc::not_ready,
                       fmt::format("shared-memory segment {} has no header yet: its creator has "
                                   "not set it up; retry, or remove it if its creator died",
                                   path));
  }
  if (magic != kSegmentMagic) {
    throw SegmentError(SegmentErrc::bad_magic,
                       fmt::format("{} is not a shmcast segment (wrong magic number): remove it "
                                   "if it is stale, or pick another bus name",
                                   path));
  }
  if (header.kind != static_cast<std::uint32_t>(kind)) {
    throw SegmentError(SegmentErrc::bad_magic,
                       fmt::format("shared-memory segment {} is a {} segment (kind {}), not a {} "
                                   "segment: remove it if it is stale, or pick another name",
                                   path, kind_name(header.kind), header.kind,
                                   kind_name(static_cast<std::uint32_t>(kind))));
  }
  if (version == 0) {
    throw SegmentError(SegmentErrc::not_ready,
                       fmt::format("shared-memory segment {} is not ready: its creator has not "
                                   "published it; retry, or remove it if its creator died",
                                   path));
  }
  if (version != layout_version) {
    throw SegmentError(SegmentErrc::bad_version,
                       fmt::format("shared-memory segment {} has layout version {}, this program "
                                   "speaks {}: use matching versions of shmcast",
                                   path, version, layout_version));
  }
  if (header.size != real_size) {
    throw SegmentError(SegmentErrc::too_small,
                       fmt::format("shared-memory segment {} records a size of {} bytes but is {} "
                                   "bytes: it is corrupt; remove it and restart its creator",
                                   path, header.size, real_size));
  }
  if (real_size < min_size) {
    throw SegmentError(SegmentErrc::too_small,
                       fmt::format("shared-memory segment {} is {} bytes, smaller than the {} "
                                   "bytes expected: it is corrupt or from a misconfigured creator",
                                   path, real_size, min_size));
  }
  Segment segment(name, std::move(region), layout_version);
  segment.read_only_ = std::move(read_only);
  return segment;
}

bool Segment::remove(const std::string& name) noexcept {
  return valid_name(name) && bip::shared_memory_object::remove(name.c_str());
}

bool Segment::exists(const std::string& name) noexcept {
  if (!valid_name(name)) {
    return false;
  }
  // Built in place, not in a std::string, so that nothing here can throw.
  std::array<char, kShmDirectory.size() + kMaxNameLength + 1> path{};
  kShmDirectory.copy(path.data(), kShmDirectory.size());
  name.copy(path.data() + kShmDirectory.size(), name.size());
  // lstat, so that a symlink counts as taking the name, as it does for create.
  struct stat st {};
  return ::lstat(path.data(), &st) == 0;
}

void Segment::publish() noexcept {
  header().layout_version.store(version_, std::memory_order_release);
}

}  // namespace shmcast::detail
