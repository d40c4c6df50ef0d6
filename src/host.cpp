// The buses of this host, found by their names under /dev/shm, and the removal of dead ones.
#include "shmcast/host.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "registry.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast {

namespace {

using namespace detail;

constexpr std::string_view kShmDirectory = "/dev/shm/";
constexpr std::string_view kPrefix = "shmcast.";
constexpr std::string_view kRingInfix = ".ring.";

std::string shm_path(std::string_view name) {
  return std::string(kShmDirectory) + std::string(name);
}

bool valid_bus_name(std::string_view name) {
  try {
    check_bus_name(name);
    return true;
  } catch (const Error&) {
    return false;
  }
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// What an object of a bus is, by its name.
enum class ObjectKind { control, lock, ring };

struct BusName {
  std::string bus;
  ObjectKind kind;
};

// The bus an object under /dev/shm belongs to: shmcast.<bus>.ctl, shmcast.<bus>.lock or
// shmcast.<bus>.ring.<slot>.<generation>. Bus names may hold dots, so the kind is read from
// the end of the name.
std::optional<BusName> bus_of(std::string_view name) {
  if (!name.starts_with(kPrefix)) return std::nullopt;
  std::string_view rest = name.substr(kPrefix.size());
  BusName found;
  if (rest.ends_with(".ctl")) {
    found = {std::string(rest.substr(0, rest.size() - 4)), ObjectKind::control};
  } else if (rest.ends_with(".lock")) {
    found = {std::string(rest.substr(0, rest.size() - 5)), ObjectKind::lock};
  } else {
    const std::size_t dot = rest.rfind('.');
    const std::size_t infix = dot == std::string_view::npos ? dot : rest.rfind(kRingInfix, dot);
    if (infix == std::string_view::npos || infix + kRingInfix.size() > dot ||
        !all_digits(rest.substr(infix + kRingInfix.size(), dot - infix - kRingInfix.size())) ||
        !all_digits(rest.substr(dot + 1))) {
      return std::nullopt;
    }
    found = {std::string(rest.substr(0, infix)), ObjectKind::ring};
  }
  if (!valid_bus_name(found.bus)) return std::nullopt;
  return found;
}

struct Objects {
  bool has_control = false;
  std::vector<std::pair<std::string, ObjectKind>> names;
  std::uint64_t bytes = 0;
};

// The objects under /dev/shm of every bus (of `only` if given), by bus.
std::map<std::string, Objects> scan(std::string_view only) {
  std::map<std::string, Objects> buses;
  std::error_code ec;
  std::filesystem::directory_iterator it(kShmDirectory, ec);
  if (ec) {
    throw Error(Errc::system, fmt::format("cannot list {}: {}", kShmDirectory, ec.message()));
  }
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    auto found = bus_of(name);
    if (!found || (!only.empty() && found->bus != only)) continue;
    Objects& objects = buses[found->bus];
    objects.has_control = objects.has_control || found->kind == ObjectKind::control;
    struct stat st {};
    if (::lstat(shm_path(name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      objects.bytes += static_cast<std::uint64_t>(st.st_size);
    }
    objects.names.emplace_back(name, found->kind);
  }
  std::erase_if(buses, [](const auto& bus) { return !bus.second.has_control; });
  for (auto& [bus, objects] : buses) std::sort(objects.names.begin(), objects.names.end());
  return buses;
}

// True if a process holds the bus's coordinator lock: a coordinator running, or starting
// before its segment is published. A lock file this user may not open counts as held.
bool lock_held(const std::string& bus) {
  const int fd =
      ::open(shm_path(lock_name(bus)).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  const bool held = ::fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
  ::close(fd);
  return held;
}

bool pid_runs(std::int32_t pid) {
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

void count_clients(const ControlView& view, HostBus& out) {
  for (std::uint32_t i = 0; i < view.limits().max_clients; ++i) {
    const ClientSlot& s = view.slot(i);
    const std::uint32_t state = s.state.load(std::memory_order_acquire);
    const std::int32_t pid = s.pid.load(std::memory_order_acquire);
    if (state == static_cast<std::uint32_t>(SlotState::free)) {
      // A pid in a free slot is a claim in progress; its start time is not written yet.
      if (pid_runs(pid)) ++out.clients_alive;
    } else if (state == static_cast<std::uint32_t>(SlotState::detached)) {
      ++out.clients_dead;
    } else if (process_alive(pid, s.start_ticks.load(std::memory_order_acquire)) ||
               (state != static_cast<std::uint32_t>(SlotState::claimed) &&
                state != static_cast<std::uint32_t>(SlotState::live) && pid_runs(pid))) {
      ++out.clients_alive;
    } else {
      ++out.clients_dead;
    }
  }
}

// The bus as its control segment shows it. `check_lock`: a held lock means a coordinator
// (false while the caller holds the lock itself). Nullopt if its control segment is gone.
std::optional<HostBus> look_at(const std::string& bus, const Objects& objects, bool check_lock) {
  HostBus b;
  b.bus = bus;
  b.bytes = objects.bytes;
  for (const auto& [name, kind] : objects.names) b.objects.push_back(name);
  const bool locked = check_lock && lock_held(bus);
  try {
    const ControlView view(Segment::open(control_name(bus), SegmentKind::control, kLayoutVersion));
    const BusHeader& h = view.header();
    b.coordinator_pid = h.coordinator_pid.load(std::memory_order_acquire);
    b.coordinator_alive =
        process_alive(b.coordinator_pid, h.coordinator_start_ticks.load(std::memory_order_acquire));
    count_clients(view, b);
    if (b.coordinator_alive || locked) {
      b.health = BusHealth::live;
    } else {
      b.health = b.clients_alive > 0 ? BusHealth::orphaned : BusHealth::dead;
    }
  } catch (const SegmentError& e) {
    b.problem = e.what();
    switch (e.code()) {
      case SegmentErrc::missing: return std::nullopt;
      // Created and never published: a coordinator starting now, or one that died doing so.
      case SegmentErrc::not_ready:
        b.coordinator_alive = locked;
        b.health = locked ? BusHealth::live : BusHealth::dead;
        break;
      case SegmentErrc::permission_denied: b.health = BusHealth::unreadable; break;
      case SegmentErrc::bad_version:
        b.coordinator_alive = locked;
        b.health = BusHealth::other_version;
        break;
      default: b.health = BusHealth::foreign;
    }
  } catch (const std::runtime_error& e) {  // limits or tables that make no sense
    b.problem = e.what();
    b.health = BusHealth::foreign;
  }
  return b;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Removes the bus `bus` if it is dead, holding its coordinator lock meanwhile.
class Removal {
 public:
  explicit Removal(std::string bus) : lock_path_(shm_path(lock_name(bus))) {
    result_.bus = std::move(bus);
  }
  ~Removal() {
    if (fd_ >= 0) ::close(fd_);
  }
  Removal(const Removal&) = delete;
  Removal& operator=(const Removal&) = delete;

  BusRemoval run() {
    if (!lock()) return std::move(result_);
    // With the lock held no coordinator can start: look again, for a client that came since.
    const auto buses = scan(result_.bus);
    const auto found = buses.find(result_.bus);
    const auto bus =
        found == buses.end() ? std::nullopt : look_at(result_.bus, found->second, false);
    if (!bus || bus->health != BusHealth::dead) {
      if (bus) {
        keep(fmt::format("the bus is {} now", health_name(bus->health)));
      }
      if (created_) ::unlink(lock_path_.c_str());
      return std::move(result_);
    }
    // Rings first and the lock file last, so a removal cut short leaves a bus still found.
    for (const auto& [name, kind] : found->second.names) {
      if (kind == ObjectKind::ring && ring_is_ours(name)) remove(name);
    }
    // A ring that could not be removed keeps the control segment, so the bus stays listed
    // rather than its rings staying behind unseen.
    const auto left = scan(result_.bus);
    if (const auto again = left.find(result_.bus); again != left.end()) {
      for (const auto& [name, kind] : again->second.names) {
        if (kind != ObjectKind::ring) continue;
        keep(fmt::format("{} remains, so the control segment is kept", name));
        if (created_) ::unlink(lock_path_.c_str());
        return std::move(result_);
      }
    }
    result_.removed = remove(control_name(result_.bus));
    if (result_.removed || created_) remove(lock_name(result_.bus));
    return std::move(result_);
  }

 private:
  void keep(std::string why) { result_.kept.push_back(std::move(why)); }

  // Takes the bus's lock as shmcastd does; false, with the reason kept, if it cannot.
  bool lock() {
    fd_ = ::open(lock_path_.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0 && errno == ENOENT) {
      fd_ = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      created_ = fd_ >= 0;
    }
    struct stat held {};
    if (fd_ < 0 || ::fstat(fd_, &held) != 0) {
      keep(fmt::format("cannot open {} to lock the bus: {}", lock_path_, errno_text()));
      return false;
    }
    if (!S_ISREG(held.st_mode)) {
      keep(fmt::format("{} is not a regular file, so not a shmcast lock", lock_path_));
      return false;
    }
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd_, F_OFD_SETLK, &fl) != 0) {
      keep("a coordinator holds its lock: it is starting or running");
      return false;
    }
    // A coordinator that stopped a moment ago unlinked the file: a lock on it locks nothing.
    struct stat named {};
    if (::lstat(lock_path_.c_str(), &named) != 0 || named.st_ino != held.st_ino ||
        named.st_dev != held.st_dev) {
      keep(fmt::format("{} changed while it was being locked: a coordinator started or stopped",
                       lock_path_));
      return false;
    }
    return true;
  }

  // A ring of this bus, or what a subscriber that died while creating it left; anything else
  // under the name is kept.
  bool ring_is_ours(const std::string& name) {
    try {
      (void)Segment::open(name, SegmentKind::ring, kLayoutVersion);
      return true;
    } catch (const SegmentError& e) {
      if (e.code() == SegmentErrc::not_ready) return true;
      if (e.code() != SegmentErrc::missing) keep(e.what());
      return false;
    }
  }

  bool remove(const std::string& name) {
    const std::string path = shm_path(name);
    struct stat st {};
    const bool sized = ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
    if (::unlink(path.c_str()) != 0) {
      if (errno != ENOENT) keep(fmt::format("cannot remove {}: {}", path, errno_text()));
      return false;
    }
    if (sized) result_.bytes += static_cast<std::uint64_t>(st.st_size);
    result_.objects.push_back(name);
    return true;
  }

  std::string lock_path_;
  BusRemoval result_;
  int fd_ = -1;
  bool created_ = false;  // the lock file did not exist: no coordinator ever locked it
};

}  // namespace

const char* health_name(BusHealth health) noexcept {
  switch (health) {
    case BusHealth::live: return "live";
    case BusHealth::orphaned: return "orphaned";
    case BusHealth::dead: return "dead";
    case BusHealth::unreadable: return "unreadable";
    case BusHealth::other_version: return "other-version";
    case BusHealth::foreign: return "foreign";
  }
  return "unknown";
}

std::vector<HostBus> host_buses(std::string_view bus) {
  if (!bus.empty()) check_bus_name(bus);
  std::vector<HostBus> out;
  for (const auto& [name, objects] : scan(bus)) {
    if (auto found = look_at(name, objects, true)) out.push_back(std::move(*found));
  }
  return out;
}

std::vector<BusRemoval> remove_dead_buses(std::string_view bus) {
  std::vector<BusRemoval> out;
  for (const HostBus& b : host_buses(bus)) {
    switch (b.health) {
      case BusHealth::live:
      case BusHealth::orphaned: break;
      case BusHealth::dead: out.push_back(Removal(b.bus).run()); break;
      case BusHealth::unreadable:
      case BusHealth::other_version:
      case BusHealth::foreign: {
        BusRemoval kept;
        kept.bus = b.bus;
        kept.kept.push_back(b.problem);
        out.push_back(std::move(kept));
        break;
      }
    }
  }
  return out;
}

}  // namespace shmcast
