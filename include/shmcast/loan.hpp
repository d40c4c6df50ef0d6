// Zero-copy payloads: a Loan is written once into shared memory and published to every
// subscriber without a copy; a Payload is a loaned message a subscriber keeps past its callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "shmcast/export.hpp"

namespace shmcast {

namespace detail {
class BusState;
struct HeldPayload;
}  // namespace detail
class Bus;
class Subscriber;

/// Writable shared memory for one message, from its connection's payload pool (Bus::loan).
/// Fill data(), then hand it to Bus::publish(channel, std::move(loan)): every subscriber then
/// reads these very bytes, mapped read-only in its process. A loan destroyed unpublished gives
/// its memory back. Move-only; use it from one thread at a time.
class SHMCAST_EXPORT Loan {
 public:
  Loan() = default;
  /// The bytes to fill: as many as were asked for (the chunk under them may be larger).
  [[nodiscard]] std::span<std::byte> data() const noexcept { return {data_, size_}; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Publishes only the first `bytes` (at most size()).
  void shrink(std::size_t bytes) noexcept;
  /// False once published, moved from, or default-made.
  explicit operator bool() const noexcept { return bus_ != nullptr; }

  Loan(Loan&& other) noexcept;
  Loan& operator=(Loan&& other) noexcept;
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan();

 private:
  friend class Bus;
  void give_back() noexcept;

  std::shared_ptr<detail::BusState> bus_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint32_t chunk_ = 0;
  std::uint32_t blocks_ = 0;
  std::uint32_t serial_ = 0;
};

/// A message payload kept past the listen() callback that delivered it (Subscriber::keep).
/// For a loaned message it is the publisher's shared memory, read-only, without a copy, and
/// takes one of its connection's max_holds; for any other message, a copy. Valid until reset()
/// or destruction, which any thread may do (one at a time), also after its Subscriber is gone.
class SHMCAST_EXPORT Payload {
 public:
  Payload() noexcept;
  [[nodiscard]] std::span<const std::byte> data() const noexcept;
  [[nodiscard]] std::string_view view() const noexcept;
  /// True if the bytes are the publisher's pool (a loaned message), false for a copy.
  [[nodiscard]] bool loaned() const noexcept;
  /// Lets the bytes go (the pool's chunk returns to its publisher once every holder did).
  void reset() noexcept;

  Payload(Payload&&) noexcept;
  Payload& operator=(Payload&&) noexcept;
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;
  ~Payload();

 private:
  friend class Subscriber;
  explicit Payload(std::unique_ptr<detail::HeldPayload> held) noexcept;
  std::unique_ptr<detail::HeldPayload> held_;
};

}  // namespace shmcast
