// A subscriber that outlives its coordinator. shmcastd only keeps the registry: messages go
// from the publisher straight into the subscriber's ring, so while the coordinator is down or
// restarting, subscriptions stay in force and messages keep arriving; a new shmcastd on the
// same bus adopts it with every subscription intact.
//
//   example-survive_restart --bus NAME [--channel events] [--count 10] [--timeout 30]
//
// Try it: start it, then in another shell publish, restart shmcastd, and publish again:
//   shmcast --bus NAME publish events before
//   kill -TERM <shmcastd pid>; shmcastd --bus NAME &
//   shmcast --bus NAME publish events after
// It exits 0 once it has received --count messages, 1 if --timeout seconds pass first.
#include <chrono>
#include <iostream>
#include <string>
#include <string_view>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

namespace {

// The value after `--flag`, or `fallback`.
std::string option(int argc, char** argv, std::string_view flag, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == flag) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string channel = option(argc, argv, "--channel", "events");
  const int count = std::stoi(option(argc, argv, "--count", "10"));
  const auto timeout = std::chrono::seconds(std::stoi(option(argc, argv, "--timeout", "30")));

  // Connecting and subscribing need a coordinator; receiving does not.
  auto bus = shmcast::Bus::connect(example::bus_name(argc, argv));
  auto sub = bus.subscriber();
  sub.subscribe({channel});
  // Flushed at once: whoever drives this example waits for this line before it publishes.
  std::cout << "subscribed to " << channel << std::endl;

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int received = 0;
  while (received < count && std::chrono::steady_clock::now() < deadline) {
    auto frame = sub.receive(std::chrono::milliseconds(100));
    if (!frame || frame->kind != shmcast::Kind::message) continue;
    ++received;
    // Whether a coordinator runs at this moment makes no difference to delivery.
    std::cout << "received " << frame->payload << " (coordinator "
              << (bus.coordinator_alive() ? "running" : "down") << ")" << std::endl;
  }
  if (received < count) {
    std::cerr << "survive_restart: received " << received << " of " << count << " messages\n";
    return 1;
  }
  std::cout << "survive_restart: received all " << count << " messages\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "survive_restart: " << e.what() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "survive_restart: bad option: " << e.what() << "\n";
  return 2;
}
