// The client side of a bus, shared by Bus, Subscriber and the inspector: opening the control
// segment, claiming a client slot, and the request mailbox to the coordinator.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "control.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast::detail {

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

/// What a Bus shares among its copies.
class BusState {
 public:
  BusState(std::string name, ConnectOptions options);

  /// Lends the Bus's slot to a Subscriber to hold its ring in, so that a process with one Bus
  /// and one Subscriber takes one slot; null if another Subscriber holds it.
  ClientLink* lend_slot();
  /// Takes the lent slot back. `released`: its ring was released; otherwise the coordinator
  /// did not answer, the slot still holds the ring and its subscriptions, and stays the Bus's:
  /// the release is asked for again before the slot is lent again.
  void return_slot(bool released);

  std::string name;
  ConnectOptions options;
  std::shared_ptr<ControlView> view;
  Limits limits;
  std::unique_ptr<ClientLink> link;  // the publisher's own slot, so its death is counted
  std::uint64_t id;                  // unique in this process, keys per-thread caches

 private:
  std::mutex slot_mutex_;  // Bus::subscriber() may run on several threads at once
  bool slot_lent_ = false;
  bool release_owed_ = false;  // the slot came back with a ring the coordinator did not release
};

/// The client slot a Subscriber holds its ring in: its Bus's slot while no other Subscriber of
/// the Bus holds it, else a slot of its own. Only the Subscriber uses the slot's mailbox while it
/// holds it (the Bus makes no request between its attach and its detach).
class SubscriberSlot {
 public:
  /// Throws as ClientLink does when a slot of its own is needed and none is free.
  explicit SubscriberSlot(const std::shared_ptr<BusState>& bus);
  /// A slot of its own is detached (the coordinator removes the ring); the Bus's slot is asked
  /// to release the ring and subscriptions, and stays the Bus's.
  ~SubscriberSlot();
  SubscriberSlot(const SubscriberSlot&) = delete;
  SubscriberSlot& operator=(const SubscriberSlot&) = delete;

  [[nodiscard]] ClientLink& link() const noexcept { return *link_; }
  /// Tells the coordinator the slot has a ring of `ring_bytes`, created under its generation.
  void attach_ring(std::uint64_t ring_bytes);

 private:
  BusState& bus_;
  std::unique_ptr<ClientLink> own_;
  ClientLink* link_ = nullptr;
};

/// This process's pid without a system call per use (refreshed in a forked child): the writer
/// id of the ring records it writes.
[[nodiscard]] std::uint32_t current_pid() noexcept;

/// Routes this thread resolved from the registry, on any bus: what tests count to see which
/// changes make a publisher resolve again.
[[nodiscard]] std::uint64_t resolved_routes() noexcept;

}  // namespace shmcast::detail
