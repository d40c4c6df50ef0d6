// Per-user real-time notifications: every user has a channel of their own,
// `user:<id>:notifications`, and a session of that user subscribes to it alone. A backend
// publishes to the one user a notification is for; nobody else sees it.
//
//   example-notifications --bus NAME     (a shmcastd must be serving NAME)
//
// Here three user sessions live in one process to keep the example short; in an application each
// would be its own process (a web socket handler, a desktop client, ...).
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

namespace {

std::string channel_of(int user) {
  return "user:" + std::to_string(user) + ":notifications";
}

}  // namespace

int main(int argc, char** argv) try {
  auto bus = shmcast::Bus::connect(example::bus_name(argc, argv));

  // One subscriber per signed-in user. subscribe() returns once the subscription is in force,
  // so nothing published after this point can be missed.
  const std::vector<int> users{1, 2, 3};
  std::map<int, shmcast::Subscriber> sessions;
  for (int user : users) {
    sessions.emplace(user, bus.subscriber()).first->second.subscribe({channel_of(user)});
  }

  // The backend: user 1 gets one notification, user 2 gets two, user 3 gets three. publish()
  // returns how many subscribers received the message: 1 here, the user's own session.
  std::map<int, std::vector<std::string>> sent;
  for (int user : users) {
    for (int n = 1; n <= user; ++n) {
      const std::string text =
          "notification " + std::to_string(n) + " for user " + std::to_string(user);
      if (bus.publish(channel_of(user), text) != 1) {
        std::cerr << "notifications: no session received '" << text << "'\n";
        return 1;
      }
      sent[user].push_back(text);
    }
  }

  // Each session reads its stream. The first frame is the confirmation of its subscribe (as in
  // Redis); the rest are messages. A short timeout ends the read once the stream is empty.
  bool ok = true;
  for (auto& [user, session] : sessions) {
    std::vector<std::string> got;
    while (auto frame = session.receive(std::chrono::milliseconds(200))) {
      if (frame->kind == shmcast::Kind::message) got.push_back(frame->payload);
    }
    std::cout << "user " << user << " received " << got.size() << " notification(s) on "
              << channel_of(user) << "\n";
    for (const auto& text : got) std::cout << "  " << text << "\n";
    // Exactly the user's own notifications, in the order they were published.
    if (got != sent[user]) {
      std::cerr << "notifications: user " << user << " did not get exactly their own\n";
      ok = false;
    }
  }
  if (!ok) return 1;
  std::cout << "notifications: every user got exactly their own notifications\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "notifications: " << e.what() << "\n";
  return 1;
}
