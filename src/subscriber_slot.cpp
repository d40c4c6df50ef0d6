// Where a Subscriber holds its ring: in its Bus's own slot while no other Subscriber of the Bus
// holds it there, so that a process with one Bus and one Subscriber costs one client slot.
#include <unistd.h>

#include "client.hpp"

namespace shmcast::detail {

ClientLink* BusState::lend_slot() {
  const std::lock_guard lock(slot_mutex_);
  // A child forked since the Bus connected is a client of its own: its ring, and its death,
  // belong to a slot that names it.
  if (slot_lent_ || link->owner() != getpid()) return nullptr;
  if (release_owed_) {
    // Until a coordinator releases the ring the slot still holds, a Subscriber takes a slot of
    // its own.
    if (!coordinator_running(*view)) return nullptr;
    try {
      link->request(Op::release_ring, 0, {});
    } catch (const Error&) {
      return nullptr;
    }
    release_owed_ = false;
  }
  slot_lent_ = true;
  return link.get();
}

void BusState::return_slot(bool released) {
  const std::lock_guard lock(slot_mutex_);
  slot_lent_ = false;
  // Not released: the slot stays attached, so this process still counts as a client (the
  // coordinator must not remove the bus under it, and its death is still counted).
  release_owed_ = !released;
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
  bool released = false;
  // A child forked since holds a copy of this Subscriber: the slot and its ring are the parent's.
  if (link_->owner() == getpid()) {
    try {
      link_->request(Op::release_ring, 0, {});
      released = true;
    } catch (const Error&) {
      // No coordinator answered: the Bus asks again before it lends the slot again.
    }
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
