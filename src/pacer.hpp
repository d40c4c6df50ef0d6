// Wait::adaptive's forecast of a steady stream: when messages come at a regular pace, the next
// one is due at a known time, and a subscriber can be awake for it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>

namespace shmcast::detail {

/// Pacing applies to gaps from kShortestPace (shorter ones are the spinning path's, see
/// kPayingWait) to kLongestPace.
inline constexpr std::chrono::nanoseconds kShortestPace = std::chrono::microseconds(100);
inline constexpr std::chrono::nanoseconds kLongestPace = std::chrono::seconds(1);

/// The longest a paced wait spins for one message, and the largest share of the gap it may
/// spin: the price of being awake when a message is due, in CPU, must stay below what a
/// futex wake-up costs both sides (several microseconds each on a VM).
inline constexpr std::chrono::nanoseconds kPacedSpinBudget = std::chrono::microseconds(40);
inline constexpr int kPacedSpinShare = 16;  // at most 1/16 of the gap

/// How much earlier than the timer's expected lateness a paced wait asks to be woken, and the
/// most it will allow for that lateness.
inline constexpr std::chrono::nanoseconds kPaceMargin = std::chrono::microseconds(2);
inline constexpr std::chrono::nanoseconds kLongestLead = std::chrono::microseconds(30);

/// Learns the pace of the records that end a subscriber's waits, and how late a timed wake-up
/// of this thread comes; plans when to wake and how long to spin for the next record. Times are
/// steady-clock nanoseconds. Pure arithmetic, no clock of its own: the caller says what
/// happened and when.
///
/// The pace is the line through the last kArrivals arrivals that leaves the narrowest band
/// around them (tried through each pair of them): its slope is the period, and the band's width
/// the jitter. A publisher on a timer is late by a varying amount, often in two modes (its own
/// core awake or not), so one record comes on time and the next some microseconds late; the
/// band covers both with one window.
class Pacer {
 public:
  struct Plan {
    std::int64_t wake_ns;        // sleep until then (a publisher may still wake the sleeper)
    std::int64_t spin_until_ns;  // then spin until then; past it, the pace is broken
  };

  /// A wait ended with a record that came at `arrival_ns`, or at an unknown time (nullopt: the
  /// pace is forgotten). A wait that ends without a record says nothing.
  void arrived(std::optional<std::int64_t> arrival_ns) noexcept;

  /// The plan for the next record, if the last kArrivals were steady (a band no wider than an
  /// eighth of the period), the period is between kShortestPace and kLongestPace, the spin it
  /// needs is within budget, and its window has not already passed at `now_ns`.
  [[nodiscard]] std::optional<Plan> plan(std::int64_t now_ns) const noexcept;

  /// A timed sleep that asked to end at `asked_ns` ended at `woke_ns` with nothing to read:
  /// learns how late this thread's timer wakes it.
  void woke(std::int64_t asked_ns, std::int64_t woke_ns) noexcept;

  /// How much earlier than a record is due the next paced wait asks to be woken.
  [[nodiscard]] std::int64_t lead_ns() const noexcept;

  static constexpr int kArrivals = 8;

 private:
  void fit() noexcept;

  std::array<std::int64_t, kArrivals> arrivals_{};  // a ring, the oldest at next_
  int count_ = 0;                                   // arrivals known, up to kArrivals
  int next_ = 0;
  // The fitted pace, if steady: the next record is due from due_ns_ to due_ns_ + jitter_ns_.
  bool steady_ = false;
  std::int64_t period_ns_ = 0;
  std::int64_t due_ns_ = 0;
  std::int64_t jitter_ns_ = 0;
  // Expected lateness of a timed wake-up; a VM's first guess, corrected by each one seen.
  std::int64_t late_ns_ = std::chrono::nanoseconds(std::chrono::microseconds(15)).count();
};

}  // namespace shmcast::detail
