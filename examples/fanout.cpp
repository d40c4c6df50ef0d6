// Fan-out: one publisher, several subscriber processes, every message delivered to each of
// them. Each subscriber counts what it got and reports through its exit status.
//
//   example-fanout --bus NAME     (a shmcastd must be serving NAME)
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

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

  int ready[2];
  if (pipe(ready) != 0) return 1;
  std::vector<pid_t> children;
  for (int i = 1; i <= kSubscribers; ++i) {
    const pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      close(ready[0]);
      int status = 1;
      try {
        status = run_subscriber(bus_name, i, ready[1]);
      } catch (const shmcast::Error& e) {
        std::cerr << "subscriber " << i << ": " << e.what() << std::endl;
      }
      _exit(status);
    }
    children.push_back(pid);
  }
  close(ready[1]);

  // Publish only once every subscriber listens; earlier messages would reach fewer of them.
  int listening = 0;
  for (char c; listening < kSubscribers && read(ready[0], &c, 1) == 1;) ++listening;
  close(ready[0]);

  // Each publish is written straight into every subscriber's ring; the return value says how
  // many rings took it.
  std::size_t deliveries = 0;
  if (listening == kSubscribers) {
    auto bus = shmcast::Bus::connect(bus_name);
    for (int i = 0; i < kMessages; ++i) {
      deliveries += bus.publish(kChannel, "tick " + std::to_string(i));
    }
  }
  std::cout << "publisher: " << kMessages << " messages, " << deliveries << " deliveries"
            << std::endl;

  bool ok = deliveries == std::size_t{kSubscribers} * kMessages;
  for (const pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!ok) {
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
