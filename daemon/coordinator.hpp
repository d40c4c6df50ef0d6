// The coordinator of a bus: owns the control segment, serves the clients' requests (the registry
// through its one writer), and reaps clients whose process died.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "audit.hpp"
#include "death_watch.hpp"
#include "loan_reaper.hpp"
#include "registry.hpp"
#include "registry_writer.hpp"
#include "shmcast/limits.hpp"

namespace shmcast::daemon {

/// The coordinator sleeps until a client rings the doorbell, a client's process ends, or
/// kAuditStep has passed since its last timed pass, which audits the shared memory (see
/// Coordinator::kAuditSlice), frees claims whose process died before attaching, and writes the
/// heartbeat.
inline constexpr std::chrono::milliseconds kAuditStep{100};

struct CoordinatorOptions {
  std::string bus;
  Limits limits;
  mode_t mode = 0600;          ///< mode of the bus's segments
  std::optional<gid_t> group;  ///< group of the bus's segments
  /// Between timed passes; tests lengthen it to show what does not wait for one.
  std::chrono::milliseconds audit_step = kAuditStep;
};

/// Why a client leaves the bus: every reason but its own detach counts as a death.
enum class Removal {
  detached,
  died,
  died_attaching,   ///< after claiming a slot, before its attach was served
  died_unattended,  ///< while no coordinator ran
};

class Coordinator {
 public:
  /// A timed pass compares the next kAuditSlice bytes of the registry tables with the
  /// coordinator's record: a full round of the default registry (13 MB) in about 1.3 s, for
  /// about 0.2 % of a core (the comparison is bound by memory bandwidth: the cost follows the
  /// bytes compared per second).
  static constexpr std::size_t kAuditSlice = std::size_t{1} << 20;

  /// Creates the bus, or adopts it if a previous coordinator died and left it. Throws
  /// shmcast::Error: invalid_bus_name, coordinator_running (a live coordinator owns it),
  /// version_mismatch / bad_segment (a stale segment of another shmcast), system.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  /// Serves requests and watches clients until `stop` becomes true; whoever sets it calls
  /// wake() next, or run() sees it at its next timed pass only.
  void run(const std::atomic<bool>& stop);
  /// Ends the wait of run() for a pass. Async-signal-safe: a signal handler may call it.
  void wake() noexcept;

  /// Stops serving: removes the bus's segments if no live client remains, else leaves the bus
  /// for the next coordinator to adopt. Returns true if it removed them.
  bool shutdown();

  [[nodiscard]] bool adopted() const noexcept { return adopted_; }
  [[nodiscard]] const detail::ControlView& view() const noexcept { return *view_; }
  /// One pass of the loop: check the shared header and client slots against the coordinator's
  /// own record (and the next slice of the registry tables), repairing and logging what
  /// differs; serve pending requests; reap dead clients. For tests.
  void serve_once();

 private:
  // The coordinator's own record of a client slot. Clients (and anything else that can write
  // the segment) may overwrite the slot; this record is what the coordinator acts on, and what
  // it writes back when the slot disagrees.
  struct Client {
    int pidfd = -1;  // >= 0 while the client is attached
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    std::uint32_t generation = 0;
    bool has_ring = false;
  };

  // Bytes at the start of the segment that never change once it is created: the segment header
  // and the bus header up to the coordinator's identity.
  static constexpr std::size_t kFixedHeaderBytes =
      detail::kBusHeaderOffset + offsetof(detail::BusHeader, coordinator_pid);
  static constexpr std::uint32_t state_of(detail::SlotState s) {
    return static_cast<std::uint32_t>(s);
  }

  void create_or_adopt();
  void adopt();
  void handle(std::uint32_t slot);
  detail::Status attach(std::uint32_t slot);
  // False, logged, if the slot's ring is missing under its generation.
  bool ring_found(std::uint32_t slot, pid_t pid, std::string_view request);
  detail::Status add_ring(std::uint32_t slot);
  // Returns the slot's new generation, which names its next ring.
  std::uint32_t release_ring(std::uint32_t slot);
  // Unlinks the slot's subscriptions and moves it to its next generation, so that publishers
  // look for a new ring; inside a registry write. Returns how many subscriptions it held.
  std::uint32_t clear_slot(std::uint32_t slot);
  void remove_client(std::uint32_t slot, Removal why);
  // Has death_watch_ ring the doorbell when the attached client of `slot` dies.
  void watch_death(std::uint32_t slot);
  void reap_dead();
  // The attached clients in slot order, for the loan reaper's timed pass; none while no pool is
  // an orphan.
  std::vector<LiveClient> live_clients() const;
  void audit_route_versions();
  void audit_header();
  void audit_slot(std::uint32_t slot);
  void audit_tables();
  // Logs a repair or quarantine within the RepairLog budget of `kind`.
  void log_repair(std::string_view kind, std::string line);

  CoordinatorOptions options_;
  std::string lock_path_;
  int lock_fd_ = -1;
  std::unique_ptr<detail::ControlView> view_;
  std::unique_ptr<RegistryWriter> writer_;
  std::vector<Client> clients_;
  DeathWatch death_watch_;
  LoanReaper loans_;
  // The segment header and the fixed part of the bus header, as created or adopted.
  std::vector<std::byte> fixed_header_;
  std::uint64_t start_ticks_ = 0;
  std::uint64_t started_ns_ = 0;
  std::uint64_t created_ns_ = 0;
  std::chrono::steady_clock::time_point next_timed_pass_{};
  std::size_t audit_cursor_ = 0;  // where in the tables the next slice starts
  RepairLog repair_log_;
  bool adopted_ = false;
};

/// Writes one line of the coordinator's log, naming the bus.
void log_line(const std::string& bus, std::string_view message);

}  // namespace shmcast::daemon
