// The coordinator of a bus: owns the control segment, serves the clients' requests, writes the
// registry (its only writer), and reaps clients whose process died.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control.hpp"
#include "shmcast/limits.hpp"

namespace shmcast::daemon {

struct CoordinatorOptions {
  std::string bus;
  Limits limits;
  mode_t mode = 0600;          ///< mode of the bus's segments
  std::optional<gid_t> group;  ///< group of the bus's segments
};

class Coordinator {
 public:
  /// Creates the bus, or adopts it if a previous coordinator died and left it. Throws
  /// shmcast::Error: invalid_bus_name, coordinator_running (a live coordinator owns it),
  /// version_mismatch / bad_segment (a stale segment of another shmcast), system.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  /// Serves requests and watches clients until `stop` becomes true.
  void run(const std::atomic<bool>& stop);

  /// Stops serving: removes the bus's segments if no live client remains, else leaves the bus
  /// for the next coordinator to adopt. Returns true if it removed them.
  bool shutdown();

  [[nodiscard]] bool adopted() const noexcept { return adopted_; }
  [[nodiscard]] const detail::ControlView& view() const noexcept { return *view_; }
  /// One pass of the loop: serve pending requests, reap dead clients. For tests.
  void serve_once();

 private:
  struct Watch {
    int pidfd = -1;
  };

  void create_or_adopt();
  void adopt();
  void handle(std::uint32_t slot);
  detail::Status attach(std::uint32_t slot);
  detail::Status subscribe(std::uint32_t slot, bool pattern, std::uint32_t sid,
                           std::string_view name);
  detail::Status unsubscribe(std::uint32_t slot, bool pattern, std::uint32_t sid,
                             std::string_view name);
  void remove_client(std::uint32_t slot, const char* why);
  void reap_dead();
  void begin_write();
  void end_write();
  std::int64_t insert_entry(bool pattern, std::string_view name);
  void erase_entry(bool pattern, std::uint32_t index);
  void unlink_node(std::uint32_t node);
  void rebuild_free_nodes();

  CoordinatorOptions options_;
  std::string lock_path_;
  int lock_fd_ = -1;
  std::unique_ptr<detail::ControlView> view_;
  std::vector<Watch> watches_;
  std::vector<std::uint32_t> free_nodes_;
  // Each client's subscription nodes, so removing a client costs its own subscriptions, not a
  // scan of the node table inside the seqlock. Rebuilt from the segment on adoption.
  std::vector<std::vector<std::uint32_t>> client_nodes_;
  bool adopted_ = false;
};

/// The effective limits must fit together (a message must fit half a ring); throws
/// shmcast::Error naming the settings otherwise.
void check_limits(const Limits& limits);

}  // namespace shmcast::daemon
