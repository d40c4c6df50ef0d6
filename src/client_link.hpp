// The client link: how a process reaches a bus's coordinator. Opening the control segment,
// waiting for its coordinator, claiming a client slot, and the slot's request mailbox.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "registry.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast::detail {

/// A size the bus refuses: what it is the size of, named as the shmcastd setting that bounds it.
enum class Bounded { channel, pattern, payload };

/// The error for `bytes` of `what` over the bus's `limit`: channel_too_long, pattern_too_long or
/// payload_too_large, with the shmcastd setting that raises the limit.
[[nodiscard]] Error over_limit(Bounded what, std::size_t bytes, std::size_t limit);

/// The error for a client that would hold more than `limit` channels and patterns: checked by
/// the Subscriber before it asks, and by the coordinator, which answers with a status.
[[nodiscard]] Error too_many_subscriptions(std::size_t limit);

/// Opens the control segment of `bus`, mapping segment errors to shmcast::Error with a message
/// that says what to do.
[[nodiscard]] std::shared_ptr<ControlView> open_control(const std::string& bus);

/// Runs `read` inside read_registry, again and again until it saw a consistent registry; throws
/// Error(coordinator_gone) once `patience` has passed without one, rather than answer from a
/// registry caught in the middle of an update.
void read_registry_within(const ControlView& view, const std::string& bus,
                          std::chrono::milliseconds patience, const std::function<void()>& read);

/// Waits up to `timeout` for the coordinator recorded in the bus to run (one restarting, as in
/// `systemctl restart shmcastd`); throws Error(no_coordinator) if it does not.
void wait_for_coordinator(const ControlView& view, const std::string& bus,
                          std::chrono::milliseconds timeout);

/// open_control(), once the bus exists and its coordinator runs: waits up to `timeout` for
/// both, then throws the Error(no_coordinator) of whichever is missing.
[[nodiscard]] std::shared_ptr<ControlView> open_running(const std::string& bus,
                                                        std::chrono::milliseconds timeout);

/// One client slot of this process in the bus's client table.
class ClientLink {
 public:
  /// Claims a free slot (throws Error(too_many_clients) if none), once the coordinator runs
  /// (waited for up to the request timeout).
  ClientLink(std::shared_ptr<ControlView> view, std::string bus, ConnectOptions options);
  /// Detaches: tells the coordinator, or marks the slot for reaping if it does not answer.
  ~ClientLink();
  ClientLink(const ClientLink&) = delete;
  ClientLink& operator=(const ClientLink&) = delete;

  /// Sends a request through the slot's mailbox and waits for the answer. Throws
  /// Error(coordinator_gone) if the coordinator dies or does not answer in time, and the
  /// matching Error for a refusal.
  std::int64_t request(Op op, std::uint32_t sid, std::string_view name);

  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint32_t generation() const noexcept { return generation_; }
  [[nodiscard]] ClientSlot& state() const noexcept { return view_->slot(slot_); }
  [[nodiscard]] const std::shared_ptr<ControlView>& view() const noexcept { return view_; }
  [[nodiscard]] const std::string& bus() const noexcept { return bus_; }
  /// The process that claimed the slot (a child forked since is another client).
  [[nodiscard]] pid_t owner() const noexcept { return owner_; }

 private:
  std::shared_ptr<ControlView> view_;
  std::string bus_;
  ConnectOptions options_;
  pid_t owner_ = 0;
  std::uint32_t slot_ = 0;
  std::uint32_t generation_ = 0;
  bool attached_ = false;
};

}  // namespace shmcast::detail
