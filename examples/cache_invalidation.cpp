// Cache invalidation: several processes each keep a local cache of the same data. When a
// value changes, the writer broadcasts its key on one channel and every cache drops that key,
// so no process keeps serving the stale value.
//
//   example-cache_invalidation --bus NAME     (a shmcastd must be serving NAME)
//
// The example forks three cache processes, broadcasts two invalidations, and checks that every
// cache dropped exactly those two keys.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"
#include "subscriber_processes.hpp"

namespace {

const std::string kChannel = "cache:invalidate";
const std::vector<std::string> kStale{"product:3", "product:7"};
constexpr int kCaches = 3;

// One cache process: fills its map, subscribes, tells the parent through `ready_fd` that it
// listens, then drops each key it is told about. Returns its exit status.
int run_cache(const std::string& bus_name, int index, int ready_fd) {
  std::map<std::string, std::string> cache;
  for (int i = 1; i <= 10; ++i) {
    cache["product:" + std::to_string(i)] = "cached row " + std::to_string(i);
  }

  // Each process connects on its own: a connection is not shared across fork().
  auto bus = shmcast::Bus::connect(bus_name);
  auto sub = bus.subscriber();
  sub.subscribe({kChannel});
  (void)!write(ready_fd, "r", 1);
  close(ready_fd);

  std::vector<std::string> dropped;
  // Bounded: stop once both keys are gone, or after 5 s without an invalidation.
  while (dropped.size() < kStale.size()) {
    auto frame = sub.receive(std::chrono::seconds(5));
    if (!frame) break;
    if (frame->kind != shmcast::Kind::message) continue;
    if (cache.erase(frame->payload) == 1) dropped.push_back(frame->payload);
  }
  std::cout << "cache " << index << " (pid " << getpid() << "): dropped";
  for (const auto& key : dropped) std::cout << " " << key;
  std::cout << "; " << cache.size() << " keys left" << std::endl;
  return dropped == kStale && cache.size() == 8 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string bus_name = example::bus_name(argc, argv);

  // Publishes wait until every cache listens: a broadcast reaches only subscribers that exist
  // already.
  example::SubscriberProcesses caches(
      kCaches, "cache", [&](int i, int ready_fd) { return run_cache(bus_name, i, ready_fd); });

  bool ok = caches.listening();
  if (ok) {
    auto bus = shmcast::Bus::connect(bus_name);
    for (const auto& key : kStale) {
      const std::size_t reached = bus.publish(kChannel, key);
      std::cout << "writer: invalidated " << key << ", reached " << reached << " caches"
                << std::endl;
      ok = ok && reached == kCaches;
    }
  }

  if (!caches.succeeded() || !ok) {
    std::cerr << "cache_invalidation: a cache did not drop exactly the stale keys\n";
    return 1;
  }
  std::cout << "cache_invalidation: all " << kCaches << " caches dropped the stale keys\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "cache_invalidation: " << e.what() << "\n";
  return 1;
}
