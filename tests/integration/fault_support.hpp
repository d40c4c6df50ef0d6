// What the fault-injection tests share: memory that forked children write and the test reads,
// numbered messages that prove order and integrity, and views of a bus from outside (its files
// under /dev/shm, `shm-stat --json`).
#pragma once

#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/json_reader.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {

/// One T in anonymous shared memory, made before forking: children write it, the test reads it.
template <class T>
class SharedMemory {
 public:
  SharedMemory() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    value_ = new (p) T();
  }
  ~SharedMemory() { ::munmap(value_, sizeof(T)); }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }

 private:
  T* value_ = nullptr;
};

/// CLOCK_MONOTONIC in ns: one clock for every process of a test.
inline std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

/// The head of a numbered message: who sent it, its number, when, and a check over all three
/// and over the filler bytes that follow (their count varies, so records vary in size).
struct Numbered {
  std::uint32_t publisher;
  std::uint32_t filler;
  std::uint64_t seq;
  std::uint64_t sent_ns;
  std::uint64_t check;
};

inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline std::uint64_t numbered_check(const Numbered& n) {
  return mix64(mix64(n.publisher) ^ mix64(n.seq ^ 0x5555) ^ mix64(n.sent_ns) ^ n.filler);
}

inline char numbered_filler(std::uint64_t seq, std::size_t i) {
  return static_cast<char>((seq * 31 + i) & 0xff);
}

inline std::string numbered(std::uint32_t publisher, std::uint64_t seq, std::uint64_t sent_ns) {
  Numbered n{publisher, static_cast<std::uint32_t>(seq % 37), seq, sent_ns, 0};
  n.check = numbered_check(n);
  std::string out(sizeof n + n.filler, '\0');
  std::memcpy(out.data(), &n, sizeof n);
  for (std::size_t i = 0; i < n.filler; ++i) out[sizeof n + i] = numbered_filler(seq, i);
  return out;
}

/// The head of `payload` if it is an intact numbered message; nullopt if any byte is wrong.
inline std::optional<Numbered> parse_numbered(std::string_view payload) {
  Numbered n{};
  if (payload.size() < sizeof n) return std::nullopt;
  std::memcpy(&n, payload.data(), sizeof n);
  if (payload.size() != sizeof n + n.filler || n.check != numbered_check(n)) return std::nullopt;
  for (std::size_t i = 0; i < n.filler; ++i) {
    if (payload[sizeof n + i] != numbered_filler(n.seq, i)) return std::nullopt;
  }
  return n;
}

/// Names under /dev/shm that start with `prefix`.
inline std::set<std::string> shm_names(const std::string& prefix) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.insert(name);
  }
  return names;
}

/// The ring segments of `bus`: `shmcast.<bus>.ring.*`.
inline std::set<std::string> ring_files(const std::string& bus) {
  return shm_names("shmcast." + bus + ".ring.");
}

/// `shm-stat --bus BUS --json` parsed; throws if it fails or its output is not JSON.
inline Json shm_stat_json(const std::string& bus) {
  const Result r = run({bin_dir() + "/shm-stat", "--bus", bus, "--json"});
  if (r.status != 0) throw std::runtime_error("shm-stat failed: " + r.err);
  return JsonParser::parse(r.out);
}

/// Milliseconds, for messages and figures.
inline double ms_of(std::uint64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

/// The median and the maximum of `values` (0 if empty).
inline std::pair<double, double> median_max(std::vector<double> values) {
  if (values.empty()) return {0, 0};
  std::sort(values.begin(), values.end());
  return {values[values.size() / 2], values.back()};
}

}  // namespace shmcast::test
