// The bridge's pacing, shared by its one-server and cluster loops: how often it looks for a
// stop, the reconnection back-off, and the PING that watches a subscribed connection.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "echo_filter.hpp"
#include "redis_link.hpp"

namespace shmcast::bridge {

using namespace std::chrono_literals;

inline constexpr auto kPollInterval = 100ms;  // how soon a stop request is seen
inline constexpr auto kFirstBackoff = 100ms;
// How often a subscribed connection, which otherwise only reads, asks whether the server is
// still there: a peer that vanished without closing the connection sends nothing at all.
inline constexpr auto kPingInterval = 3s;
// A connection that fails sooner than this after it was made does not reset the back-off: a
// server that accepts and then drops at once (maxclients, protected mode) is not hammered.
inline constexpr auto kStableAfter = 3s;
inline constexpr std::size_t kBatch = 1024;  // publishes pipelined before their replies are read

// Exponential back-off between connection attempts: 100 ms, doubling up to the cap.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds cap) : cap_(std::max(cap, kFirstBackoff)) {}
  std::chrono::milliseconds next() {
    const auto delay = delay_;
    delay_ = std::min(delay_ * 2, cap_);
    return delay;
  }
  void reset() { delay_ = kFirstBackoff; }

 private:
  std::chrono::milliseconds cap_;
  std::chrono::milliseconds delay_ = kFirstBackoff;
};

// When a subscribed connection sends PING, and when its silence means it is dead even if the
// kernel has not said so yet. PING is valid while subscribed (RESP2 answers it with the array
// "pong", "").
class Pinger {
 public:
  [[nodiscard]] bool due(Clock::time_point now) const { return !awaiting_ && now >= next_; }
  [[nodiscard]] bool overdue(Clock::time_point now) const {
    return awaiting_ && now - sent_ > kCommandTimeout;
  }
  void sent(Clock::time_point now) {
    awaiting_ = true;
    sent_ = now;
  }
  void answered(Clock::time_point now) {
    awaiting_ = false;
    next_ = now + kPingInterval;
  }

 private:
  bool awaiting_ = false;
  Clock::time_point sent_;
  Clock::time_point next_ = Clock::now() + kPingInterval;
};

inline void sleep_unless(std::chrono::milliseconds duration, const std::function<bool()>& stop) {
  const auto deadline = Clock::now() + duration;
  while (!stop() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::min<Clock::duration>(deadline - Clock::now(), kPollInterval));
  }
}

inline std::string seconds(std::chrono::milliseconds ms) {
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000);
}

}  // namespace shmcast::bridge
