#include "pacer.hpp"

#include <algorithm>
#include <limits>

namespace shmcast::detail {

namespace {

constexpr std::int64_t ns(std::chrono::nanoseconds d) noexcept {
  return d.count();
}

}  // namespace

void Pacer::arrived(std::optional<std::int64_t> arrival_ns) noexcept {
  const std::int64_t last =
      arrivals_[static_cast<std::size_t>((next_ + kArrivals - 1) % kArrivals)];
  if (!arrival_ns || (count_ > 0 && *arrival_ns <= last)) {
    // Unknown, or out of order (a stamp is shared memory anyone may write): start again.
    count_ = 0;
    next_ = 0;
    steady_ = false;
    if (!arrival_ns) return;
  }
  arrivals_[static_cast<std::size_t>(next_)] = *arrival_ns;
  next_ = (next_ + 1) % kArrivals;
  count_ = std::min(count_ + 1, kArrivals);
  fit();
}

void Pacer::fit() noexcept {
  steady_ = false;
  if (count_ < kArrivals) return;
  const auto at = [this](int i) {  // i-th oldest arrival, relative to the oldest
    return arrivals_[static_cast<std::size_t>((next_ + i) % kArrivals)] -
           arrivals_[static_cast<std::size_t>(next_)];
  };
  const std::int64_t mean = at(kArrivals - 1) / (kArrivals - 1);
  if (mean < ns(kShortestPace) / 2 || mean > 2 * ns(kLongestPace)) return;
  // The narrowest band is parallel to a line through two of the points.
  std::int64_t best_width = std::numeric_limits<std::int64_t>::max();
  for (int i = 0; i < kArrivals; ++i) {
    for (int j = i + 1; j < kArrivals; ++j) {
      const std::int64_t slope = (at(j) - at(i)) / (j - i);
      std::int64_t low = std::numeric_limits<std::int64_t>::max();
      std::int64_t high = std::numeric_limits<std::int64_t>::min();
      for (int m = 0; m < kArrivals; ++m) {
        const std::int64_t residual = at(m) - m * slope;
        low = std::min(low, residual);
        high = std::max(high, residual);
      }
      if (high - low < best_width) {
        best_width = high - low;
        period_ns_ = slope;
        due_ns_ = arrivals_[static_cast<std::size_t>(next_)] + kArrivals * slope + low;
        jitter_ns_ = high - low;
      }
    }
  }
  steady_ = period_ns_ >= ns(kShortestPace) && period_ns_ <= ns(kLongestPace) &&
            jitter_ns_ * 8 <= period_ns_;
}

std::optional<Pacer::Plan> Pacer::plan(std::int64_t now_ns) const noexcept {
  if (!steady_) return std::nullopt;
  // The window spans the band, the margin after it and the lead before it; the lead gives way
  // first when the budget is short.
  const std::int64_t budget = std::min(ns(kPacedSpinBudget), period_ns_ / kPacedSpinShare);
  const std::int64_t fixed = jitter_ns_ + ns(kPaceMargin);
  if (fixed + ns(kPaceMargin) > budget) return std::nullopt;
  const std::int64_t lead = std::min(lead_ns(), budget - fixed);
  const Plan plan{due_ns_ - lead, due_ns_ + jitter_ns_ + ns(kPaceMargin)};
  if (now_ns >= plan.spin_until_ns) return std::nullopt;
  return plan;
}

void Pacer::woke(std::int64_t asked_ns, std::int64_t woke_ns) noexcept {
  const std::int64_t late = std::clamp<std::int64_t>(woke_ns - asked_ns, 0, ns(kLongestLead));
  // Up fast, down slowly: a wake-up later than the lead costs a whole futex hand-off, one
  // earlier only a little spinning.
  if (late > late_ns_) {
    late_ns_ += (late - late_ns_ + 1) / 2;
  } else {
    late_ns_ -= (late_ns_ - late) / 8;
  }
}

std::int64_t Pacer::lead_ns() const noexcept {
  return std::clamp(late_ns_ + ns(kPaceMargin), ns(kPaceMargin), ns(kLongestLead));
}

}  // namespace shmcast::detail
