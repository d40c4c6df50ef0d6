// A live leaderboard: game servers publish score updates as "player score", and a leaderboard
// process keeps each player's best score and shows the top 5.
//
//   example-leaderboard --bus NAME     (a shmcastd must be serving NAME)
//
// The publisher is a thread of this process here (a Bus may be used from any number of threads);
// in a real game it would be the game servers, each its own process.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

namespace {

const std::string kChannel = "game:scores";

struct Update {
  std::string player;
  int score;
};

// The five best players, best first; ties go to the name that sorts first.
std::vector<std::pair<std::string, int>> top5(const std::map<std::string, int>& best) {
  std::vector<std::pair<std::string, int>> ranked(best.begin(), best.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (ranked.size() > 5) ranked.resize(5);
  return ranked;
}

}  // namespace

int main(int argc, char** argv) try {
  auto bus = shmcast::Bus::connect(example::bus_name(argc, argv));

  // The leaderboard subscribes before any update is published, so it sees all of them.
  auto board = bus.subscriber();
  board.subscribe({kChannel});

  // Thirty updates from eight players; scores go up and down between rounds.
  const std::vector<std::string> players{"ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal"};
  std::vector<Update> updates;
  for (int round = 0; round < 30; ++round) {
    updates.push_back({players[(round * 5) % players.size()], (round * 37) % 101});
  }
  std::thread game_server([&] {
    for (const auto& u : updates) bus.publish(kChannel, u.player + " " + std::to_string(u.score));
  });

  // The leaderboard: parse each update and keep the best score per player. It stops when it has
  // seen every update, or after 2 s without one.
  std::map<std::string, int> best;
  std::size_t seen = 0;
  while (seen < updates.size()) {
    auto frame = board.receive(std::chrono::seconds(2));
    if (!frame) break;
    if (frame->kind != shmcast::Kind::message) continue;
    std::istringstream in(frame->payload);
    std::string player;
    int score = 0;
    if (!(in >> player >> score)) continue;
    ++seen;
    best[player] = std::max(best[player], score);
  }
  game_server.join();

  // The answer the board must reach, computed directly from the updates.
  std::map<std::string, int> expected;
  for (const auto& u : updates) expected[u.player] = std::max(expected[u.player], u.score);

  std::cout << "leaderboard: " << seen << " updates on " << kChannel << ", top 5:\n";
  int rank = 0;
  for (const auto& [player, score] : top5(best)) {
    std::cout << "  " << ++rank << ". " << player << " " << score << "\n";
  }
  if (seen != updates.size() || top5(best) != top5(expected)) {
    std::cerr << "leaderboard: missed updates, the top 5 is wrong\n";
    return 1;
  }
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "leaderboard: " << e.what() << "\n";
  return 1;
}
