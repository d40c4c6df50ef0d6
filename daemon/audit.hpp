// The budget of the coordinator's repair lines; the audit itself, the comparison of the shared
// segment with the coordinator's record, is Coordinator's (audit.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace shmcast::daemon {

/// The budget of the coordinator's repair and quarantine lines: per kind of line, kBurst at
/// once and then one every kInterval, so a process that keeps overwriting the segment cannot
/// flood the log. The next line of a kind that is let through says how many were left out.
class RepairLog {
 public:
  static constexpr std::uint32_t kBurst = 10;
  static constexpr std::chrono::seconds kInterval{10};

  /// `line` (with the count of lines of its kind left out before it, if any) if the budget of
  /// `kind` allows a line at `now`; nullopt if it is spent, and the line is counted instead.
  std::optional<std::string> admit(std::string_view kind, std::string line,
                                   std::chrono::steady_clock::time_point now);

 private:
  struct Budget {
    std::uint32_t lines = kBurst;
    std::chrono::steady_clock::time_point refilled;
    std::uint64_t left_out = 0;
  };
  std::unordered_map<std::string, Budget> budgets_;
};

}  // namespace shmcast::daemon
