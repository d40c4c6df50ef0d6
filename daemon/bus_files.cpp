#include "bus_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "layout.hpp"
#include "process.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {

using detail::BusHeader;
using detail::kBusHeaderOffset;
using detail::kFreeNode;
using detail::Node;
using detail::Segment;
using detail::SegmentErrc;
using detail::SegmentError;

void check_limits(const Limits& l) {
  const auto fail = [](const std::string& what) { throw Error(Errc::invalid_setting, what); };
  const auto within = [&](std::string_view name, std::uint64_t value, std::uint64_t most) {
    if (value < 1 || value > most) fail(fmt::format("--{} must be between 1 and {}", name, most));
  };
  within("max-clients", l.max_clients, detail::kMaxClientsBound);
  if (l.max_channel > detail::kMaxNameBound) {
    fail(fmt::format("--max-channel must be at most {} bytes", detail::kMaxNameBound));
  }
  if (l.max_pattern > detail::kMaxNameBound) {
    fail(fmt::format("--max-pattern must be at most {} bytes", detail::kMaxNameBound));
  }
  if (l.max_subscriptions < 1) fail("--max-subscriptions must be at least 1");
  within("max-channels", l.max_channels, detail::kMaxNamesBound);
  within("max-patterns", l.max_patterns, detail::kMaxNamesBound);
  within("max-total-subscriptions", l.max_total_subscriptions, detail::kMaxTotalSubscriptionsBound);
  if (l.ring_bytes < detail::kRingMinCapacity || l.ring_bytes > detail::kRingMaxCapacity ||
      (l.ring_bytes & (l.ring_bytes - 1)) != 0) {
    fail(fmt::format("--ring-bytes {} must be a power of two between {} and {}", l.ring_bytes,
                     detail::kRingMinCapacity, detail::kRingMaxCapacity));
  }
  within("max-holds", l.max_holds, detail::kMaxHoldsBound);
  if (l.pool_bytes > detail::kMaxPoolBytesBound ||
      (l.pool_bytes != 0 && l.pool_bytes < detail::kPoolBlock)) {
    fail(fmt::format("--pool-bytes {} must be 0 (no loans) or between {} and {}", l.pool_bytes,
                     detail::kPoolBlock, detail::kMaxPoolBytesBound));
  }
  if (l.max_unread_loan_bytes < detail::kPoolBlock) {
    fail(fmt::format("--max-unread-loan-bytes must be at least {}", detail::kPoolBlock));
  }
  const std::uint64_t frame = detail::max_frame(detail::to_bus_limits(l));
  if (frame > detail::ring_max_payload(l.ring_bytes)) {
    fail(fmt::format(
        "--max-payload {} with --max-channel {} makes messages of up to {} bytes, more than "
        "half of --ring-bytes {} can hold ({}): lower --max-payload or raise --ring-bytes",
        l.max_payload, l.max_channel, frame, l.ring_bytes, detail::ring_max_payload(l.ring_bytes)));
  }
}

// One coordinator per bus: an open-file-description lock, which the kernel drops when its
// holder dies, so a crashed coordinator never blocks its successor. A coordinator that stops
// and `shm-stat --remove-dead` unlink the lock file while they hold the lock: a lock taken on a
// file that lost its name meanwhile locks nothing, so the name is checked once locked. The
// removal holds the lock for a moment only, so it is waited for.
int take_bus_lock(const std::string& path, const std::string& bus, std::uint32_t mode) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  for (;;) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode & 0660);
    if (fd < 0) {
      throw Error(errno == EACCES ? Errc::permission_denied : Errc::system,
                  fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    }
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    struct stat held {};
    struct stat named {};
    const bool locked = fcntl(fd, F_OFD_SETLK, &fl) == 0;
    if (locked && ::fstat(fd, &held) == 0 && ::lstat(path.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
      return fd;
    }
    ::close(fd);
    if (std::chrono::steady_clock::now() > deadline) break;
    if (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw Error(
      Errc::coordinator_running,
      fmt::format("bus '{}' already has a live coordinator: stop it first, or use another --bus",
                  bus));
}

std::optional<Segment> open_control(const std::string& bus) {
  const std::string name = detail::control_name(bus);
  try {
    return Segment::open(name, detail::SegmentKind::control, detail::kLayoutVersion);
  } catch (const SegmentError& e) {
    switch (e.code()) {
      case SegmentErrc::missing: break;
      case SegmentErrc::not_ready:  // its creator died before publishing it: nobody uses it
        Segment::remove(name);
        break;
      case SegmentErrc::bad_version:
        throw Error(
            Errc::version_mismatch,
            fmt::format("{}; no client of this version can use it: remove /dev/shm/shmcast.{}.* "
                        "once its clients are gone",
                        e.what(), bus));
      case SegmentErrc::permission_denied: throw Error(Errc::permission_denied, e.what());
      // The segment's own message already says what to do about it.
      default: throw Error(Errc::bad_segment, e.what());
    }
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const Error*>(&e) != nullptr) throw;
    throw Error(Errc::bad_segment,
                fmt::format("{}: remove /dev/shm/{} or use another --bus", e.what(), name));
  }
  return std::nullopt;
}

Segment create_control(const CoordinatorOptions& options, const CoordinatorStamp& stamp) {
  const std::string name = detail::control_name(options.bus);
  const detail::BusLimits limits = detail::to_bus_limits(options.limits);
  const detail::ControlGeometry g = detail::control_geometry(limits);
  detail::Permissions perms{options.mode, options.group};
  Segment segment = [&] {
    try {
      return Segment::create(name, g.total, detail::SegmentKind::control, detail::kLayoutVersion,
                             perms);
    } catch (const SegmentError& e) {
      throw Error(
          e.code() == SegmentErrc::permission_denied ? Errc::permission_denied : Errc::bad_segment,
          e.what());
    }
  }();
  auto* h = new (segment.base() + kBusHeaderOffset) BusHeader{};
  h->limits = limits;
  h->slot_size = g.slot_size;
  h->entry_size_channel = g.entry_size_channel;
  h->entry_size_pattern = g.entry_size_pattern;
  h->segment_mode = options.mode;
  h->segment_gid = options.group ? static_cast<std::int32_t>(*options.group) : -1;
  h->clients_offset = g.clients_offset;
  h->channels_offset = g.channels_offset;
  h->patterns_offset = g.patterns_offset;
  h->nodes_offset = g.nodes_offset;
  h->channel_slots = g.channel_slots;
  h->pattern_slots = g.pattern_slots;
  h->node_count = g.node_count;
  h->route_versions_offset = g.route_versions_offset;
  h->route_buckets = g.route_buckets;
  h->created_ns = stamp.created_ns;
  auto* nodes = reinterpret_cast<Node*>(segment.base() + g.nodes_offset);
  for (std::uint32_t i = 0; i < g.node_count; ++i) nodes[i].client = kFreeNode;
  // Who coordinates is in the header before anyone can open it: shm-stat never shows a bus
  // without its coordinator.
  h->coordinator_start_ticks.store(stamp.start_ticks);
  h->coordinator_started_ns.store(stamp.started_ns);
  h->heartbeat_ns.store(detail::monotonic_ns());
  h->coordinator_pid.store(getpid(), std::memory_order_release);
  segment.publish();
  return segment;
}

}  // namespace shmcast::daemon
