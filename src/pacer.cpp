#include "pacer.hpp"

#include <algorithm>

namespace shmcast::detail {

namespace {

constexpr std::int64_t ns(std::chrono::nanoseconds d) noexcept {
  return d.count();
}

}  // namespace

void Pacer::arrived(std::optional<std::int64_t> arrival_ns) noexcept {
  if (!arrival_ns) {
    last_ns_ = 0;
    gap_count_ = 0;
    return;
  }
  if (last_ns_ != 0) {
    gaps_[static_cast<std::size_t>(gap_next_)] = *arrival_ns - last_ns_;
    gap_next_ = (gap_next_ + 1) % kGaps;
    gap_count_ = std::min(gap_count_ + 1, kGaps);
  }
  last_ns_ = *arrival_ns;
}

std::optional<Pacer::Plan> Pacer::plan(std::int64_t now_ns) const noexcept {
  if (gap_count_ < kGaps) return std::nullopt;
  std::int64_t sum = 0;
  for (const std::int64_t gap : gaps_) sum += gap;
  const std::int64_t mean = sum / kGaps;
  if (mean < ns(kShortestPace) || mean > ns(kLongestPace)) return std::nullopt;
  std::int64_t spread = 0;
  for (const std::int64_t gap : gaps_)
    spread = std::max(spread, gap > mean ? gap - mean : mean - gap);
  if (spread * 8 > mean) return std::nullopt;
  // The window spans the spread either side of the due time, the margin after it, and the lead
  // before it; the lead gives way first when the budget is short.
  const std::int64_t budget = std::min(ns(kPacedSpinBudget), mean / kPacedSpinShare);
  const std::int64_t fixed = 2 * spread + ns(kPaceMargin);
  if (fixed + ns(kPaceMargin) > budget) return std::nullopt;
  const std::int64_t lead = std::min(lead_ns(), budget - fixed);
  const std::int64_t due = last_ns_ + mean;
  const Plan plan{due - spread - lead, due + spread + ns(kPaceMargin)};
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
