// EchoFilter's members: the ordered list of the bridge's own messages expected back.
#include "echo_filter.hpp"

#include <algorithm>
#include <functional>

namespace shmcast::bridge {

EchoFilter::EchoFilter(std::size_t capacity, std::chrono::milliseconds expiry)
    : capacity_(capacity), expiry_(expiry) {}

std::uint64_t EchoFilter::hash(std::string_view channel, std::string_view payload) {
  const std::uint64_t c = std::hash<std::string_view>{}(channel);
  const std::uint64_t p = std::hash<std::string_view>{}(payload);
  return c ^ (p + 0x9e3779b97f4a7c15ULL + (c << 6) + (c >> 2)) ^
         (static_cast<std::uint64_t>(payload.size()) << 40);
}

std::uint64_t EchoFilter::expect(std::string_view channel, std::string_view payload,
                                 Clock::time_point now, int stream) {
  const std::uint64_t h = hash(channel, payload);
  const std::lock_guard lock(mutex_);
  const std::uint64_t sequence = next_sequence_++;
  if (!active_) return sequence;
  if (entries_.size() == capacity_) {
    entries_.pop_front();
    ++forgotten_;
  }
  entries_.push_back({h, sequence, now, stream});
  return sequence;
}

void EchoFilter::forget(std::uint64_t sequence) {
  const std::lock_guard lock(mutex_);
  // Entries are in sequence order.
  const auto it = std::lower_bound(entries_.begin(), entries_.end(), sequence,
                                   [](const Entry& e, std::uint64_t s) { return e.sequence < s; });
  if (it != entries_.end() && it->sequence == sequence) entries_.erase(it);
}

bool EchoFilter::consume(std::string_view channel, std::string_view payload, Clock::time_point now,
                         int stream) {
  const std::uint64_t h = hash(channel, payload);
  const std::lock_guard lock(mutex_);
  while (!entries_.empty() && now - entries_.front().published > expiry_) {
    entries_.pop_front();
    ++forgotten_;
  }
  // Own messages come back in order within their stream, so only a prefix of that stream's
  // entries that may have been lost can be passed over to reach the match.
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const Entry& entry = entries_[i];
    if (entry.stream != stream) continue;
    if (entry.hash == h) {
      const auto match = entries_.begin() + static_cast<std::ptrdiff_t>(i);
      const auto kept = std::remove_if(entries_.begin(), match,
                                       [&](const Entry& e) { return e.stream == stream; });
      entries_.erase(kept, match + 1);
      return true;
    }
    if (entry.sequence >= lost_before_) break;
  }
  return false;
}

void EchoFilter::mark_lost() {
  const std::lock_guard lock(mutex_);
  lost_before_ = next_sequence_;
}

void EchoFilter::reset(bool active) {
  const std::lock_guard lock(mutex_);
  entries_.clear();
  active_ = active;
}

std::size_t EchoFilter::size() const {
  const std::lock_guard lock(mutex_);
  return entries_.size();
}

std::uint64_t EchoFilter::forgotten() const {
  const std::lock_guard lock(mutex_);
  return forgotten_;
}

}  // namespace shmcast::bridge
