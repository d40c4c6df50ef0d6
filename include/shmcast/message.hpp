// One frame of a subscriber's stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shmcast/export.hpp"

namespace shmcast {

/// What a frame is. `message` and `pmessage` carry a publish; the four confirmation kinds
/// answer subscribe / psubscribe / unsubscribe / punsubscribe calls, one per name, in the
/// stream's order, exactly as Redis sends them.
enum class Kind : std::uint8_t {
  message,
  pmessage,
  subscribe,
  psubscribe,
  unsubscribe,
  punsubscribe,
  gap,  ///< `count` messages were dropped here because the ring was full (Redis would disconnect)
};

/// The Redis name of a kind ("message", "pmessage", "subscribe", ...; "gap" for gap).
[[nodiscard]] SHMCAST_EXPORT const char* kind_name(Kind kind) noexcept;

/// A frame. For message: channel and payload. For pmessage: pattern, channel and payload.
/// For confirmations: channel holds the channel or pattern named, `count` the client's
/// channels + patterns after that step, and `has_name` is false only for an unsubscribe of
/// nothing (Redis's nil). Payloads are binary-safe.
struct Message {
  Kind kind = Kind::message;
  std::string pattern;
  std::string channel;
  std::string payload;
  std::int64_t count = 0;
  bool has_name = true;
};

/// The same frame without copies: the views point into the subscriber's ring and are valid
/// only during the callback that receives them (Subscriber::listen).
struct MessageView {
  Kind kind = Kind::message;
  std::string_view pattern;
  std::string_view channel;
  std::string_view payload;
  std::int64_t count = 0;
  bool has_name = true;
};

}  // namespace shmcast
