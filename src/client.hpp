// What a Bus shares among its copies and with its Subscribers: the bus's state, and the client
// slot a Subscriber holds its ring in.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "client_link.hpp"
#include "pool.hpp"
#include "shmcast/bus.hpp"

namespace shmcast::detail {

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

  /// This connection's payload pool, made on first use. Throws Error as Bus::loan does.
  PoolOwner& pool();
  /// A pool this process reads from, mapped once for all its Subscribers of this bus; null if it
  /// cannot be opened.
  std::shared_ptr<const PoolView> pool_view(std::uint32_t slot, std::uint32_t pool_id);
  /// Lets go of the pools that were removed (at most once a second; a Subscriber calls it when
  /// its ring runs empty). False once no pool is mapped.
  bool forget_removed_pools();

 private:
  std::mutex slot_mutex_;  // Bus::subscriber() may run on several threads at once
  bool slot_lent_ = false;
  bool release_owed_ = false;  // the slot came back with a ring the coordinator did not release
  std::mutex pool_mutex_;
  std::unique_ptr<PoolOwner> pool_;
  std::mutex views_mutex_;
  std::unique_ptr<PoolMaps> views_;
  std::chrono::steady_clock::time_point views_swept_{};
  void sweep_views();  // with views_mutex_ held
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

}  // namespace shmcast::detail
