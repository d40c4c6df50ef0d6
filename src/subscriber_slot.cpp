// Where a Subscriber holds its ring: in its Bus's own slot while no other Subscriber of the Bus
// holds it there, so that a process with one Bus and one Subscriber costs one client slot.
#include <unistd.h>

#include "client.hpp"

namespace shmcast::detail {

ClientLink* BusState::lend_slot() {
  const std::lock_guard lock(slot_mutex_);
  // A child forked since the Bus connected is a client of its own: its ring, and its death,
  // belong to a slot that names it.
  if (slot_lent_ || !link || link->owner() != getpid()) return nullptr;
  slot_lent_ = true;
  return link.get();
}

void BusState::return_slot(bool released) {
  const std::lock_guard lock(slot_mutex_);
  slot_lent_ = false;
  if (released) return;
  // Only the coordinator can remove the ring and subscriptions the slot still holds: detached,
  // the slot is reaped with them when the coordinator is back. The Bus goes on without a slot
  // (a later Subscriber takes one of its own), as a client whose coordinator is gone.
  link->abandon();
  link.reset();
}

SubscriberSlot::SubscriberSlot(const std::shared_ptr<BusState>& bus)
    : bus_(*bus), link_(bus->lend_slot()) {
  if (link_ == nullptr) {
    own_ = std::make_unique<ClientLink>(bus->view, bus->name, bus->options);
    link_ = own_.get();
    return;
  }
  // Waits for a coordinator, and is refused, as a slot of its own would be.
  try {
    wait_for_coordinator(*bus->view, bus->name, bus->options.request_timeout);
  } catch (...) {
    bus_.return_slot(true);
    throw;
  }
}

SubscriberSlot::~SubscriberSlot() {
  if (own_) return;  // its ClientLink detaches, and the coordinator removes the ring with it
  bool released = true;
  try {
    link_->request(Op::release_ring, 0, {});
  } catch (const Error&) {
    released = false;
  }
  bus_.return_slot(released);
}

void SubscriberSlot::attach_ring(std::uint64_t ring_bytes) {
  if (own_) {
    ClientSlot& slot = own_->state();
    slot.ring_bytes.store(ring_bytes, std::memory_order_relaxed);
    slot.has_ring.store(1, std::memory_order_release);
    own_->request(Op::attach, 0, {});
    return;
  }
  // The Bus's slot is attached already: only the coordinator writes its ring fields now.
  link_->request(Op::add_ring, 0, {});
}

}  // namespace shmcast::detail
