// What the multi-process benchmarks (shmcast-bench, shmcast-soak and the comparison programs)
// share: the clock and the send stamp every payload starts with, the region of memory the
// parent shares with its children, forking a role, and percentiles.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace bench_support {

inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

/// The send time a payload starts with (CLOCK_MONOTONIC ns).
inline std::uint64_t stamp_of(std::string_view payload) {
  std::uint64_t stamp = 0;
  std::memcpy(&stamp, payload.data(), sizeof stamp);
  return stamp;
}

/// Writes the send time into the first 8 bytes of `payload` (a std::string or a byte vector).
template <class Bytes>
void set_stamp(Bytes& payload, std::uint64_t stamp) {
  std::memcpy(payload.data(), &stamp, sizeof stamp);
}

/// A child tells its parent it is ready by writing one byte to the pipe, then closes it.
inline void signal_ready(int fd) {
  const char byte = 'r';
  if (write(fd, &byte, 1) != 1) throw std::runtime_error("cannot signal readiness to the parent");
  close(fd);
}

/// The sorted sample at index floor(q * (n - 1)); 0 if there is none.
inline std::uint64_t percentile(const std::vector<std::uint64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  return sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1))];
}

/// Runs `body` in a child process that exits with 0 only if it finished; an exception is
/// printed as "program[pid]: what" and exits with 1.
inline pid_t fork_child(std::string_view program, const std::function<void()>& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
  if (pid > 0) return pid;
  int status = 0;
  try {
    body();
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}[{}]: {}\n", program, getpid(), e.what());
    status = 1;
  }
  std::fflush(stderr);
  _exit(status);
}

/// One anonymous MAP_SHARED region that every forked child inherits:
///
///   +--------------------+  offset 0
///   | Control            |  the words the parent and the children poll
///   +--------------------+
///   | Result[n]          |  one per child
///   +--------------------+
///   | samples[n][cap]    |  uint64 ns
///   +--------------------+
template <class Control, class Result>
class SharedRegion {
 public:
  SharedRegion(std::size_t children, std::size_t sample_cap)
      : children_(children), cap_(sample_cap) {
    bytes_ = sizeof(Control) + children * sizeof(Result) + children * cap_ * sizeof(std::uint64_t);
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error(fmt::format("mmap: {}", std::strerror(errno)));
    base_ = static_cast<std::byte*>(p);
    new (base_) Control();
    for (std::size_t i = 0; i < children; ++i) new (&result(i)) Result();
  }
  ~SharedRegion() { munmap(base_, bytes_); }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  Control& control() { return *std::launder(reinterpret_cast<Control*>(base_)); }
  Result& result(std::size_t child) {
    return std::launder(reinterpret_cast<Result*>(base_ + sizeof(Control)))[child];
  }
  std::uint64_t* samples(std::size_t child) {
    auto* all =
        reinterpret_cast<std::uint64_t*>(base_ + sizeof(Control) + children_ * sizeof(Result));
    return all + child * cap_;
  }
  std::size_t cap() const { return cap_; }

 private:
  std::size_t children_;
  std::size_t cap_;
  std::size_t bytes_ = 0;
  std::byte* base_ = nullptr;
};

}  // namespace bench_support
