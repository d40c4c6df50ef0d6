// Large frames without copies: a publisher draws 4 MiB frames straight into loaned shared memory
// (Bus::loan) and two subscriber processes check every byte of each frame where it lies, in the
// publisher's pool, mapped read-only. No ring is large enough for such a frame; only its
// descriptor travels through the rings.
//
//   example-large_frames --bus NAME     (a shmcastd must be serving NAME)
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <span>
#include <string>
#include <thread>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"
#include "subscriber_processes.hpp"

namespace {

const std::string kChannel = "camera";
constexpr std::size_t kFrameBytes = std::size_t{4} << 20;
constexpr std::uint64_t kFrames = 50;
constexpr std::chrono::milliseconds kFramePeriod{20};
constexpr int kSubscribers = 2;

// Word k of frame n is (n << 32 | k): word 0 carries the frame number, and a byte out of place
// anywhere shows.
void draw(std::span<std::byte> frame, std::uint64_t number) {
  for (std::size_t k = 0; k < frame.size() / 8; ++k) {
    const std::uint64_t word = number << 32 | k;
    std::memcpy(frame.data() + 8 * k, &word, 8);
  }
}

bool intact(std::string_view frame, std::uint64_t number) {
  if (frame.size() != kFrameBytes) return false;
  for (std::size_t k = 0; k < frame.size() / 8; ++k) {
    std::uint64_t word = 0;
    std::memcpy(&word, frame.data() + 8 * k, 8);
    if (word != (number << 32 | k)) return false;
  }
  return true;
}

// One subscriber process: checks frames until it has them all or 5 s pass without one.
int run_subscriber(const std::string& bus_name, int index, int ready_fd) {
  auto bus = shmcast::Bus::connect(bus_name);
  auto sub = bus.subscriber();
  sub.subscribe({kChannel});
  (void)!write(ready_fd, "r", 1);
  close(ready_fd);

  std::uint64_t good = 0;
  // listen() hands each frame in place, in the publisher's pool (receive() would copy it).
  sub.listen(
      [&](const shmcast::MessageView& m) {
        if (m.kind != shmcast::Kind::message) return true;
        if (intact(m.payload, good)) ++good;
        return good < kFrames;
      },
      std::chrono::seconds(5));
  std::cout << "subscriber " << index << ": " << good << " of " << kFrames << " frames, every byte"
            << " as drawn, in order" << std::endl;
  return good == kFrames ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string bus_name = example::bus_name(argc, argv);

  example::SubscriberProcesses subscribers(kSubscribers, "subscriber", [&](int i, int ready_fd) {
    return run_subscriber(bus_name, i, ready_fd);
  });

  std::size_t deliveries = 0;
  if (subscribers.listening()) {
    auto bus = shmcast::Bus::connect(bus_name);
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t n = 0; n < kFrames; ++n) {
      // A camera's pace, 50 frames a second. A subscriber that fell more than
      // --max-unread-loan-bytes behind (32 MiB, 8 such frames, by default) would miss frames,
      // as one whose ring is full misses messages; the pool (--pool-bytes, 64 MiB) holds 16,
      // and a loan waits up to 5 s for one to come back.
      std::this_thread::sleep_until(start + n * kFramePeriod);
      shmcast::Loan frame = bus.loan(kFrameBytes, std::chrono::seconds(5));
      draw(frame.data(), n);
      deliveries += bus.publish(kChannel, std::move(frame));
    }
  }
  std::cout << "publisher: " << kFrames << " frames of " << kFrameBytes << " bytes, " << deliveries
            << " deliveries" << std::endl;

  if (!subscribers.succeeded() || deliveries != kSubscribers * kFrames) {
    std::cerr << "large_frames: a subscriber missed a frame or found one damaged\n";
    return 1;
  }
  std::cout << "large_frames: both subscribers checked all " << kFrames << " frames\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "large_frames: " << e.what() << "\n";
  return 1;
}
