// Named shared-memory segments: create, open, remove, with a checked header.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <boost/interprocess/mapped_region.hpp>

namespace shmcast::detail {

/// What a segment holds; checked on open so a ring is never opened as a control segment.
enum class SegmentKind : std::uint32_t { control = 1, ring = 2, pool = 3 };

/// Why creating or opening a segment failed.
enum class SegmentErrc {
  missing,            // no object of that name
  already_exists,     // create: the name is taken (by anything: a segment, a file, a symlink)
  bad_magic,          // not a shmcast segment, or a segment of another kind
  bad_version,        // a shmcast segment of another layout version
  not_ready,          // created but its creator has not published it (yet, or ever)
  too_small,          // smaller than its header, than the size it records, or than asked for
  permission_denied,  // EACCES / EPERM
  invalid_name,       // empty, too long, or with '/'
  system,             // any other system error
};

class SegmentError : public std::runtime_error {
 public:
  SegmentError(SegmentErrc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  [[nodiscard]] SegmentErrc code() const noexcept { return code_; }

 private:
  SegmentErrc code_;
};

/// Who may open a segment: exact mode bits (the umask is not applied) and an optional group.
/// World-writable modes are refused.
struct Permissions {
  mode_t mode = 0600;
  std::optional<gid_t> group;
};

//  Segment header, at offset 0 of every segment (64 bytes, one cache line):
//
//   0               8               12              16
//  +---------------+---------------+---------------+
//  | magic (u64)   | layout ver.   | kind (u32)    |
//  +---------------+---------------+---------------+
//  16: size (u64)   24: creator pid (u32)  28: reserved (u32)
//  32: created, CLOCK_REALTIME ns (u64)    40..63: reserved
//
// The layout version is stored last, with release ordering: a reader that loads it with
// acquire and finds the expected value sees every other header and body field initialised.
struct SegmentHeader {
  std::uint64_t magic;
  std::atomic<std::uint32_t> layout_version;
  std::uint32_t kind;
  std::uint64_t size;
  std::uint32_t creator_pid;
  std::uint32_t reserved0;
  std::uint64_t created_ns;
  std::uint8_t reserved1[24];
};

// Pinned because other processes, possibly built by another compiler, read these bytes.
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(sizeof(SegmentHeader) == 64);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, kind) == 12);
static_assert(offsetof(SegmentHeader, size) == 16);
static_assert(offsetof(SegmentHeader, creator_pid) == 24);
static_assert(offsetof(SegmentHeader, reserved0) == 28);
static_assert(offsetof(SegmentHeader, created_ns) == 32);
static_assert(offsetof(SegmentHeader, reserved1) == 40);

// The bytes "\0shmcast" read as a little-endian u64.
inline constexpr std::uint64_t kSegmentMagic = 0x7473'6163'6d68'7300ULL;
inline constexpr std::size_t kSegmentHeaderSize = 64;
static_assert(sizeof(SegmentHeader) == kSegmentHeaderSize);

/// A mapping of one named shared-memory object (a file under /dev/shm). Move-only; unmapped
/// on destruction, never removed implicitly.
class Segment {
 public:
  /// Creates a new object `name` of `size` bytes (header included), zero-filled, with the
  /// header written but not published. Fails with already_exists if the name is taken,
  /// whatever holds it; never follows a symlink.
  static Segment create(const std::string& name, std::size_t size, SegmentKind kind,
                        std::uint32_t layout_version, const Permissions& perms = {});

  /// Opens and maps an existing, published segment read-write and checks its header:
  /// magic and kind, layout version, recorded size against the real size, and at least
  /// `min_size` bytes.
  /// With `writable` bytes (a multiple of the page size, less than the segment's size), only
  /// that first part is mapped read-write and the rest read-only (read_only_base()): a pool's
  /// payloads, which only their publisher may change.
  static Segment open(const std::string& name, SegmentKind kind, std::uint32_t layout_version,
                      std::size_t min_size = 0, std::size_t writable = 0);

  /// Removes the name; mappings stay valid until unmapped. False if there was none.
  static bool remove(const std::string& name) noexcept;

  /// True if an object of that name exists (of any kind).
  static bool exists(const std::string& name) noexcept;

  /// Stores the layout version given at create time (release): readers may now open it.
  void publish() noexcept;

  [[nodiscard]] std::byte* base() const noexcept {
    return static_cast<std::byte*>(region_.get_address());
  }
  /// The whole segment's size, the read-only part included.
  [[nodiscard]] std::size_t size() const noexcept {
    return region_.get_size() + read_only_.get_size();
  }
  /// The read-only part of a segment opened with `writable` bytes; null otherwise.
  [[nodiscard]] const std::byte* read_only_base() const noexcept {
    return static_cast<const std::byte*>(read_only_.get_address());
  }
  [[nodiscard]] SegmentHeader& header() const noexcept {
    return *reinterpret_cast<SegmentHeader*>(base());
  }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  Segment(Segment&&) noexcept = default;
  Segment& operator=(Segment&&) noexcept = default;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() = default;

 private:
  Segment(std::string name, boost::interprocess::mapped_region region, std::uint32_t version)
      : name_(std::move(name)), region_(std::move(region)), version_(version) {}

  std::string name_;
  boost::interprocess::mapped_region region_;
  boost::interprocess::mapped_region read_only_;
  std::uint32_t version_ = 0;
};

}  // namespace shmcast::detail
