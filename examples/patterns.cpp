// Hierarchical topics and patterns: channels named like `user:<id>:<topic>` and a subscriber
// that uses a glob pattern to receive one topic for every user at once.
//
//   example-patterns --bus NAME     (a shmcastd must be serving NAME)
//
// Patterns follow Redis's globs: `*` any bytes, `?` one byte, `[abc]` a class. Note that `*`
// also matches `:`, so `user:*:alerts` matches `user:a:b:alerts` too: a pattern is not a path.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

int main(int argc, char** argv) try {
  auto bus = shmcast::Bus::connect(example::bus_name(argc, argv));

  // An alert console: every user's alerts, whoever the user is.
  auto console = bus.subscriber();
  console.psubscribe({"user:*:alerts"});

  // Publishes to several topics; only the alerts match. publish() counts the deliveries, so
  // it returns 1 for a matching channel and 0 for the rest.
  struct Publish {
    std::string channel;
    std::string payload;
    std::size_t expected;
  };
  const std::vector<Publish> publishes{
      {"user:42:alerts", "disk almost full", 1},
      {"user:42:notifications", "you have mail", 0},
      {"user:7:alerts", "password changed", 1},
      {"system:alerts", "not a user topic", 0},
      {"user:admin:alerts", "login from a new device", 1},
  };
  bool ok = true;
  for (const auto& p : publishes) {
    const std::size_t n = bus.publish(p.channel, p.payload);
    std::cout << "publish " << p.channel << " \"" << p.payload << "\" -> " << n << "\n";
    ok = ok && n == p.expected;
  }

  // A pattern match arrives as a `pmessage`: it names the pattern that matched and the channel
  // the message was published on, so one handler can tell the users apart.
  std::vector<std::string> alerts;
  while (auto frame = console.receive(std::chrono::milliseconds(200))) {
    if (frame->kind == shmcast::Kind::psubscribe) {
      std::cout << "psubscribe " << frame->channel << " (subscriptions: " << frame->count << ")\n";
    } else if (frame->kind == shmcast::Kind::pmessage) {
      std::cout << "pmessage " << frame->pattern << " " << frame->channel << " " << frame->payload
                << "\n";
      alerts.push_back(frame->channel);
    }
  }

  const std::vector<std::string> expected{"user:42:alerts", "user:7:alerts", "user:admin:alerts"};
  if (!ok || alerts != expected) {
    std::cerr << "patterns: the console did not receive exactly the alerts\n";
    return 1;
  }
  std::cout << "patterns: user:*:alerts matched " << alerts.size() << " of " << publishes.size()
            << " channels\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "patterns: " << e.what() << "\n";
  return 1;
}
