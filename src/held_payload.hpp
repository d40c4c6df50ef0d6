// What a Payload keeps: a hold on a pool's chunk, or a copy.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "client.hpp"
#include "pool.hpp"

namespace shmcast::detail {

struct HeldPayload {
  HeldPayload() = default;
  HeldPayload(const HeldPayload&) = delete;
  HeldPayload& operator=(const HeldPayload&) = delete;
  /// Frees the hold and drops its reference.
  ~HeldPayload();

  std::shared_ptr<const PoolView> pool;  // null for a copy
  std::shared_ptr<BusState> bus;         // keeps the slot, and so the hold, the connection's
  Hold* hold = nullptr;
  LoanRef ref{};
  std::span<const std::byte> bytes;
  std::string copy;
};

}  // namespace shmcast::detail
