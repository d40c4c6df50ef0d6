// shmcast-soak: publishers and subscribers as processes that come and go for --seconds, with
// random SIGKILLs of both, on a private shmcastd; then checks that the books balance for every
// subscriber alive at the end: received + dropped == published to it while it was subscribed.
//
// The books are exact. Every publisher process has a slot in one anonymous MAP_SHARED region
// with its per-channel count of completed publishes and a word that is odd while it is inside
// publish(). A subscriber that joins records those counts once its subscriptions are in force:
// a message numbered at or above a count started after that, so it is owed; the one message a
// publisher had in flight is owed only if it comes later than the count (it is read, never
// dropped: the subscriber reads flat out until every such publish has finished and checks it
// dropped nothing meanwhile). Publishers are killed between two publishes (stopped, looked at,
// then SIGKILLed), so every message is either published or not; kills inside publish() are the
// crash tests' subject. At the end the publishers stop, and each subscriber owes the counts
// they reached minus the ones it recorded, once per subscription that matches the channel.
// Every other message is a loan: once every process is gone, no payload pool may be left.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "private_coordinator.hpp"
#include "shmcast/shmcast.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kChannels = 4;  // soak.0 .. soak.3
constexpr std::size_t kMaxPublishers = 512;
constexpr std::size_t kMaxSubscribers = 2048;
constexpr std::uint64_t kBurst = 20;  // messages per publisher per millisecond
const char* const kPattern = "soak.[01]";

std::string channel_name(std::uint32_t c) {
  return fmt::format("soak.{}", c);
}

bool pattern_matches(std::uint32_t c) {
  return c <= 1;
}

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Stamp {
  std::uint32_t publisher;
  std::uint32_t channel;
  std::uint64_t seq;
  std::uint64_t check;
};

std::uint64_t stamp_check(const Stamp& s) {
  return mix(mix(s.publisher) ^ mix(s.channel + 77) ^ mix(s.seq));
}

struct PublisherSlot {
  std::atomic<std::uint64_t> op{0};  // odd while inside publish()
  std::atomic<std::uint32_t> channel{0};
  std::array<std::atomic<std::uint64_t>, kChannels> done{};  // completed publishes per channel
  std::atomic<std::uint64_t> deliveries{0};                  // sum of what publish() returned
};

enum SubscriberState : std::uint32_t { kIdle, kRunning, kReported, kFailed };

struct SubscriberSlot {
  std::atomic<std::uint32_t> state{kIdle};
  std::atomic<std::uint32_t> leave{0};  // the parent asks it to leave cleanly
  std::uint64_t owed = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
  std::uint64_t gaps = 0;  // the counts its gap frames announced
  std::uint64_t out_of_order = 0;
  std::uint64_t corrupt = 0;
  std::uint64_t dropped_while_joining = 0;
};

struct Board {
  std::atomic<std::uint32_t> stop_publishers{0};
  std::atomic<std::uint32_t> final{0};  // publishers are gone: counts are final
  std::array<PublisherSlot, kMaxPublishers> publishers;
  std::array<SubscriberSlot, kMaxSubscribers> subscribers;
};

// ---- the roles -------------------------------------------------------------------------------

// Every other message goes as a loan (falling back to a copy while the pool is full), so the
// books cover loaned payloads, their references and their pools as well.
std::size_t publish_stamp(shmcast::Bus& bus, const std::string& channel, const Stamp& s,
                          bool loaned) {
  if (loaned) {
    try {
      shmcast::Loan loan = bus.loan(sizeof s);
      std::memcpy(loan.data().data(), &s, sizeof s);
      return bus.publish(channel, std::move(loan));
    } catch (const shmcast::Error& e) {
      if (e.code() != shmcast::Errc::pool_full) throw;
    }
  }
  return bus.publish(channel, std::string_view(reinterpret_cast<const char*>(&s), sizeof s));
}

void run_publisher(const std::string& bus_name, Board& board, std::uint32_t id,
                   std::uint64_t seed) {
  PublisherSlot& me = board.publishers[id];
  auto bus = shmcast::Bus::connect(bus_name);
  std::mt19937_64 random(seed);
  const auto start = Clock::now();
  for (std::uint64_t n = 0; board.stop_publishers.load() == 0; ++n) {
    if (n % kBurst == 0) std::this_thread::sleep_until(start + 1ms * (n / kBurst));
    const auto c = static_cast<std::uint32_t>(random() % kChannels);
    Stamp s{id, c, me.done[c].load(), 0};
    s.check = stamp_check(s);
    me.channel.store(c);
    me.op.fetch_add(1);  // odd: inside publish
    const std::size_t delivered = publish_stamp(bus, channel_name(c), s, n % 2 == 1);
    me.done[c].fetch_add(1);
    me.deliveries.fetch_add(delivered);
    me.op.fetch_add(1);
  }
}

class SubscriberBooks {
 public:
  SubscriberBooks(Board& board, std::array<bool, kChannels> channels, bool pattern)
      : board_(board), channels_(channels), pattern_(pattern) {}

  // Records where each publisher stands; returns the publishes in flight (slot, op).
  std::vector<std::pair<std::uint32_t, std::uint64_t>> record_start() {
    std::vector<std::pair<std::uint32_t, std::uint64_t>> in_flight;
    for (std::uint32_t p = 0; p < kMaxPublishers; ++p) {
      const PublisherSlot& slot = board_.publishers[p];
      for (;;) {
        const std::uint64_t op = slot.op.load();
        std::array<std::uint64_t, kChannels> done{};
        for (std::uint32_t c = 0; c < kChannels; ++c) done[c] = slot.done[c].load();
        const std::uint32_t channel = slot.channel.load();
        if (slot.op.load() != op) continue;
        first_[p] = done;
        if (op % 2 == 1) {
          ++first_[p][channel];  // the message in flight is not owed
          in_flight.emplace_back(p, op);
        }
        break;
      }
    }
    return in_flight;
  }

  void take(const shmcast::Message& m) {
    if (m.kind == shmcast::Kind::gap) {
      gaps_ += static_cast<std::uint64_t>(m.count);
      return;
    }
    if (m.kind != shmcast::Kind::message && m.kind != shmcast::Kind::pmessage) return;
    Stamp s{};
    if (m.payload.size() != sizeof s) {
      ++corrupt_;
      return;
    }
    std::memcpy(&s, m.payload.data(), sizeof s);
    if (s.publisher >= kMaxPublishers || s.channel >= kChannels || s.check != stamp_check(s) ||
        m.channel != channel_name(s.channel)) {
      ++corrupt_;
      return;
    }
    if (s.seq < first_[s.publisher][s.channel]) return;  // published before it joined
    const bool by_pattern = m.kind == shmcast::Kind::pmessage;
    const std::uint64_t key =
        (std::uint64_t{s.publisher} << 8) | (s.channel << 1) | (by_pattern ? 1 : 0);
    auto [it, fresh] = next_.try_emplace(key, 0);
    if (!fresh && s.seq < it->second) ++out_of_order_;
    it->second = s.seq + 1;
    ++received_;
  }

  [[nodiscard]] std::uint64_t owed() const {
    std::uint64_t owed = 0;
    for (std::uint32_t p = 0; p < kMaxPublishers; ++p) {
      for (std::uint32_t c = 0; c < kChannels; ++c) {
        const std::uint64_t done = board_.publishers[p].done[c].load();
        const std::uint64_t times = (channels_[c] ? 1 : 0) + (pattern_ && pattern_matches(c));
        if (done > first_[p][c]) owed += (done - first_[p][c]) * times;
      }
    }
    return owed;
  }

  void report(SubscriberSlot& slot, std::uint64_t dropped) const {
    slot.owed = owed();
    slot.received = received_;
    slot.dropped = dropped;
    slot.gaps = gaps_;
    slot.out_of_order = out_of_order_;
    slot.corrupt = corrupt_;
  }

  [[nodiscard]] std::uint64_t received() const { return received_; }

 private:
  Board& board_;
  std::array<bool, kChannels> channels_;
  bool pattern_;
  std::array<std::array<std::uint64_t, kChannels>, kMaxPublishers> first_{};
  std::unordered_map<std::uint64_t, std::uint64_t> next_;
  std::uint64_t received_ = 0;
  std::uint64_t gaps_ = 0;
  std::uint64_t out_of_order_ = 0;
  std::uint64_t corrupt_ = 0;
};

// Subscribes to some channels (and maybe the pattern), then reads, slowly if `slow`, until
// the parent asks it to leave, or the publishers are gone and its books are complete.
void run_subscriber(const std::string& bus_name, Board& board, std::uint32_t index,
                    std::uint64_t seed) {
  SubscriberSlot& me = board.subscribers[index];
  std::mt19937_64 random(seed);
  std::array<bool, kChannels> channels{};
  std::vector<std::string> names;
  for (std::uint32_t c = 0; c < kChannels; ++c) {
    channels[c] = random() % 2 == 0;
    if (channels[c]) names.push_back(channel_name(c));
  }
  const bool pattern = names.empty() || random() % 2 == 0;
  const bool slow = random() % 3 == 0;

  auto bus = shmcast::Bus::connect(bus_name);
  auto sub = bus.subscriber();
  if (!names.empty()) sub.subscribe(names);
  if (pattern) sub.psubscribe({kPattern});
  SubscriberBooks books(board, channels, pattern);
  const auto in_flight = books.record_start();
  me.state.store(kRunning);
  // Flat out until every publish in flight when it joined has ended, with nothing dropped.
  for (const auto& [p, op] : in_flight) {
    while (board.publishers[p].op.load() == op) {
      while (auto m = sub.try_receive()) books.take(*m);
      std::this_thread::sleep_for(50us);
    }
  }
  me.dropped_while_joining = sub.dropped();

  auto quiet_since = Clock::now();
  for (;;) {
    if (me.leave.load() != 0) return;
    if (board.final.load() != 0) {
      const bool complete = books.received() + sub.dropped() >= books.owed();
      if (complete || Clock::now() - quiet_since > 3s) break;
    }
    auto m = sub.receive(20ms);
    if (!m) continue;
    quiet_since = Clock::now();
    books.take(*m);
    if (slow) {
      const auto until = Clock::now() + 100us;
      while (Clock::now() < until) {
      }
    }
  }
  while (auto m = sub.try_receive()) books.take(*m);
  books.report(me, sub.dropped());
  me.state.store(kReported);
}

// ---- the parent ------------------------------------------------------------------------------

struct Process {
  pid_t pid;
  std::uint32_t slot;
};

struct Counts {
  int publishers_started = 0;
  int publishers_killed = 0;
  int subscribers_started = 0;
  int subscribers_killed = 0;
  int subscribers_left = 0;
};

// Kills a publisher between two publishes: stops it, and kills it only if it is not inside
// publish(); otherwise lets it go on. True if it was killed.
bool kill_publisher_between_publishes(const Board& board, const Process& p) {
  if (kill(p.pid, SIGSTOP) != 0) return false;
  int status = 0;
  if (waitpid(p.pid, &status, WUNTRACED) != p.pid || !WIFSTOPPED(status)) return false;
  if (board.publishers[p.slot].op.load() % 2 == 0) {
    kill(p.pid, SIGKILL);
    waitpid(p.pid, nullptr, 0);
    return true;
  }
  kill(p.pid, SIGCONT);
  return false;
}

int soak(double seconds) {
  const std::string bus = fmt::format("soak-{}", getpid());
  void* memory =
      mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw std::runtime_error("mmap failed");
  Board& board = *new (memory) Board();
  const pid_t coordinator = bench_support::start_private_coordinator(
      bus, {"--ring-bytes", "262144", "--max-payload", "1024", "--max-clients", "256",
            "--pool-bytes", "4194304"});

  std::mt19937_64 random(static_cast<std::uint64_t>(getpid()));
  std::vector<Process> publishers;
  std::vector<Process> subscribers;
  Counts counts;
  std::uint32_t next_publisher = 0;
  std::uint32_t next_subscriber = 0;
  const auto add_publisher = [&] {
    if (next_publisher >= kMaxPublishers) return;
    const std::uint32_t slot = next_publisher++;
    const std::uint64_t seed = random();
    publishers.push_back(
        {bench_support::fork_child("shmcast-soak",
                                   [&, slot, seed] { run_publisher(bus, board, slot, seed); }),
         slot});
    ++counts.publishers_started;
  };
  const auto add_subscriber = [&] {
    if (next_subscriber >= kMaxSubscribers) return;
    const std::uint32_t slot = next_subscriber++;
    const std::uint64_t seed = random();
    subscribers.push_back(
        {bench_support::fork_child("shmcast-soak",
                                   [&, slot, seed] { run_subscriber(bus, board, slot, seed); }),
         slot});
    ++counts.subscribers_started;
  };

  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    while (publishers.size() < 2) add_publisher();
    while (subscribers.size() < 4) add_subscriber();
    switch (random() % 8) {
      case 0:
        if (publishers.size() < 4) add_publisher();
        break;
      case 1:
        if (subscribers.size() < 8) add_subscriber();
        break;
      case 2: {  // SIGKILL a subscriber, wherever it is
        const std::size_t i = random() % subscribers.size();
        kill(subscribers[i].pid, SIGKILL);
        waitpid(subscribers[i].pid, nullptr, 0);
        board.subscribers[subscribers[i].slot].state.store(kFailed);
        subscribers.erase(subscribers.begin() + static_cast<std::ptrdiff_t>(i));
        ++counts.subscribers_killed;
        break;
      }
      case 3: {  // a subscriber leaves cleanly
        const std::size_t i = random() % subscribers.size();
        board.subscribers[subscribers[i].slot].leave.store(1);
        waitpid(subscribers[i].pid, nullptr, 0);
        subscribers.erase(subscribers.begin() + static_cast<std::ptrdiff_t>(i));
        ++counts.subscribers_left;
        break;
      }
      case 4: {  // SIGKILL a publisher between two publishes
        const std::size_t i = random() % publishers.size();
        if (kill_publisher_between_publishes(board, publishers[i])) {
          publishers.erase(publishers.begin() + static_cast<std::ptrdiff_t>(i));
          ++counts.publishers_killed;
        }
        break;
      }
      default: break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + random() % 80));
  }

  board.stop_publishers.store(1);
  for (const Process& p : publishers) waitpid(p.pid, nullptr, 0);
  board.final.store(1);
  bool ok = true;
  for (const Process& s : subscribers) {
    int status = 0;
    waitpid(s.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fmt::print(stderr, "shmcast-soak: subscriber {} failed (status {})\n", s.pid, status);
      ok = false;
    }
  }
  // Every client is gone: no chunk may still be referenced, so every pool goes.
  std::size_t pools_left = 0;
  const auto pools_deadline = Clock::now() + 3s;
  while ((pools_left = shmcast::inspect(bus).pools.size()) != 0 && Clock::now() < pools_deadline) {
    std::this_thread::sleep_for(10ms);
  }
  if (pools_left != 0) {
    fmt::print(stderr, "shmcast-soak: {} payload pools still referenced with no client left\n",
               pools_left);
    ok = false;
  }
  bench_support::stop_private_coordinator(coordinator);

  std::uint64_t published = 0;
  std::uint64_t delivered = 0;
  for (std::uint32_t p = 0; p < next_publisher; ++p) {
    for (const auto& d : board.publishers[p].done) published += d.load();
    delivered += board.publishers[p].deliveries.load();
  }
  std::uint64_t owed = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
  int balanced = 0;
  for (const Process& s : subscribers) {
    const SubscriberSlot& b = board.subscribers[s.slot];
    owed += b.owed;
    received += b.received;
    dropped += b.dropped;
    const bool books = b.state.load() == kReported && b.received + b.dropped == b.owed &&
                       b.gaps == b.dropped && b.out_of_order == 0 && b.corrupt == 0 &&
                       b.dropped_while_joining == 0;
    if (books) {
      ++balanced;
      continue;
    }
    ok = false;
    fmt::print(stderr,
               "shmcast-soak: subscriber {} does not balance: owed {}, received {}, dropped {}, "
               "gaps announced {}, out of order {}, corrupt {}, dropped while joining {}\n",
               s.pid, b.owed, b.received, b.dropped, b.gaps, b.out_of_order, b.corrupt,
               b.dropped_while_joining);
  }
  const std::string prefix = "shmcast." + bus + ".";
  int leftovers = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) ++leftovers;
  }
  if (leftovers != 0) {
    fmt::print(stderr, "shmcast-soak: {} segments of bus {} left in /dev/shm\n", leftovers, bus);
    ok = false;
  }
  if (subscribers.empty()) ok = false;
  munmap(memory, sizeof(Board));

  fmt::print(
      "soak {:.0f} s: publishers {} started, {} SIGKILLed; subscribers {} started, {} SIGKILLed, "
      "{} left\n",
      seconds, counts.publishers_started, counts.publishers_killed, counts.subscribers_started,
      counts.subscribers_killed, counts.subscribers_left);
  fmt::print("published {}  delivered {}  (publish() counts, all subscribers)\n", published,
             delivered);
  fmt::print(
      "subscribers alive at the end: {}; owed {}  received {}  dropped {}; books balance for {} "
      "of {}\n",
      subscribers.size(), owed, received, dropped, balanced, subscribers.size());
  fmt::print("{}\n", ok ? "books balance" : "BOOKS DO NOT BALANCE");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmcast-soak: publisher and subscriber processes that come and go, with random SIGKILLs, "
      "on a private shmcastd (the one next to this program); checks received + dropped == "
      "published for every subscriber alive at the end. Exit status 1 if any book does not "
      "balance."};
  double seconds = 60;
  app.add_option("--seconds", seconds, "How long to run")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  CLI11_PARSE(app, argc, argv);
  try {
    return soak(seconds);
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmcast-soak: {}\n", e.what());
    return 1;
  }
}
