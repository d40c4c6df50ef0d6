// Fan-out: one publisher, several subscriber processes, every message delivered to each of
// them. Each subscriber counts what it got and reports through its exit status.
//
//   example-fanout --bus NAME     (a shmcastd must be serving NAME)
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"
#include "subscriber_processes.hpp"

namespace {

const std::string kChannel = "ticks";
constexpr int kSubscribers = 4;
constexpr int kMessages = 1000;

// One subscriber process: counts messages until it has them all or 5 s pass without one.
int run_subscriber(const std::string& bus_name, int index, int ready_fd) {
  // Connect after fork(): each process needs a connection of its own.
  auto bus = shmcast::Bus::connect(bus_name);
  auto sub = bus.subscriber();
  sub.subscribe({kChannel});
  (void)!write(ready_fd, "r", 1);
  close(ready_fd);

  int count = 0;
  while (count < kMessages) {
    auto frame = sub.receive(std::chrono::seconds(5));
    if (!frame) break;
    if (frame->kind == shmcast::Kind::message) ++count;
  }
  std::cout << "subscriber " << index << " (pid " << getpid() << "): got " << count << " of "
            << kMessages << std::endl;
  return count == kMessages ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string bus_name = example::bus_name(argc, argv);

  example::SubscriberProcesses subscribers(kSubscribers, "subscriber", [&](int i, int ready_fd) {
    return run_subscriber(bus_name, i, ready_fd);
  });

  // Each publish is written straight into every subscriber's ring; the return value says how
  // many rings took it.
  std::size_t deliveries = 0;
  if (subscribers.listening()) {
    auto bus = shmcast::Bus::connect(bus_name);
    for (int i = 0; i < kMessages; ++i) {
      deliveries += bus.publish(kChannel, "tick " + std::to_string(i));
    }
  }
  std::cout << "publisher: " << kMessages << " messages, " << deliveries << " deliveries"
            << std::endl;

  if (!subscribers.succeeded() || deliveries != std::size_t{kSubscribers} * kMessages) {
    std::cerr << "fanout: a subscriber did not get every message\n";
    return 1;
  }
  std::cout << "fanout: all " << kSubscribers << " subscribers got all " << kMessages
            << " messages\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "fanout: " << e.what() << "\n";
  return 1;
}
