// Hostile shared memory: a seeded loop writes random bytes into a bus's control segment and its
// rings while the coordinator, a publisher and subscribers run, each in its own process. Nothing
// may crash or hang; the coordinator repairs what it can and says so in its log, and subscribers
// whose rings were overwritten resynchronise and keep receiving.
//
// The seed is printed and can be replayed: SHMCAST_HOSTILE_SEED=<n> hostile_test; a longer run
// for hunting: SHMCAST_HOSTILE_ROUNDS=<n> (control-segment rounds, 66 by default).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "coordinator.hpp"
#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "integration/fault_support.hpp"
#include "pool.hpp"
#include "publish.hpp"
#include "registry.hpp"

namespace shmcast {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::Child;
using test::Daemon;
using test::Link;

constexpr int kSubscribers = 2;
constexpr std::uint64_t kDefaultSeed = 20261126;
constexpr int kRingRounds = 30;
constexpr int kAdoptions = 2;
constexpr int kControlRounds = 66;  // SHMCAST_HOSTILE_ROUNDS=<n> runs n instead
// Long enough for the coordinator to compare the whole of this test's small registry (one
// slice of its table audit) and to pass over every slot.
constexpr auto kRepairTime = 150ms;

// What the children and the test share, through an anonymous shared mapping made before the
// children fork: progress counters, so the test can tell a stalled child from a busy one.
struct Board {
  std::atomic<bool> stop;
  std::atomic<int> ready;
  std::atomic<std::uint64_t> published;           // sequence number of the publisher's last message
  std::atomic<std::uint64_t> seen[kSubscribers];  // highest sequence number each one received
  std::atomic<std::uint64_t> received[kSubscribers];
  std::atomic<std::uint64_t> refused[kSubscribers + 1];  // typed errors each child caught
};

class SharedBoard {
 public:
  SharedBoard() {
    void* p =
        ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    board_ = new (p) Board{};
  }
  ~SharedBoard() { ::munmap(board_, sizeof(Board)); }
  SharedBoard(const SharedBoard&) = delete;
  SharedBoard& operator=(const SharedBoard&) = delete;
  Board& operator*() const { return *board_; }
  Board* operator->() const { return board_; }

 private:
  Board* board_;
};

std::uint64_t seed_from_env() {
  const char* env = std::getenv("SHMCAST_HOSTILE_SEED");
  return env != nullptr && *env != '\0' ? std::strtoull(env, nullptr, 0) : kDefaultSeed;
}

int control_rounds() {
  const char* env = std::getenv("SHMCAST_HOSTILE_ROUNDS");
  return env != nullptr && *env != '\0' ? std::atoi(env) : kControlRounds;
}

ConnectOptions client_options() {
  ConnectOptions options;
  options.request_timeout = 1s;  // requests lost to overwritten mailboxes fail soon
  return options;
}

// In a child: its stderr, sanitizer reports included, goes to `path`.
void log_to(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    ::dup2(fd, 2);
    ::close(fd);
  }
}

int publish_until_stopped(const std::string& name, Board& board, const std::string& log) {
  log_to(log);
  Bus bus = Bus::connect(name, client_options());
  board.ready.fetch_add(1);
  for (std::uint64_t seq = 1; !board.stop.load(); ++seq) {
    const std::string payload = fmt::format("seq:{}", seq);
    (void)bus.publish("news", payload);
    (void)bus.publish(fmt::format("ch:{}", seq % 7), payload);
    board.published.store(seq);
    std::this_thread::sleep_for(200us);
  }
  return 0;
}

int receive_until_stopped(const std::string& name, Board& board, int k, const std::string& log) {
  log_to(log);
  Bus bus = Bus::connect(name, client_options());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"news"});
  sub.psubscribe({"ch:*"});
  board.ready.fetch_add(1);
  auto next_request = Clock::now();
  for (std::uint64_t n = 0; !board.stop.load();) {
    if (auto m = sub.receive(50ms)) {
      std::uint64_t seq = 0;
      const std::string_view payload = m->payload;
      if (m->kind == Kind::message && m->channel == "news" && payload.starts_with("seq:") &&
          std::from_chars(payload.data() + 4, payload.data() + payload.size(), seq).ec ==
              std::errc{}) {
        if (seq > board.seen[k].load()) board.seen[k].store(seq);
        board.received[k].fetch_add(1);
      }
    }
    // Requests too, so the coordinator serves mailboxes while they are overwritten.
    if (Clock::now() < next_request) continue;
    next_request = Clock::now() + 100ms;
    const std::string extra = fmt::format("extra:{}:{}", k, n++);
    try {
      sub.subscribe({extra});
      sub.unsubscribe({extra});
    } catch (const Error&) {
      board.refused[k].fetch_add(1);
    }
  }
  return 0;
}

// A fresh client that connects, subscribes and receives its own message: the coordinator
// serves and routes. Retries until `deadline`; returns what failed last, or "".
std::string probe(const std::string& name, int round) {
  std::string failure = "no attempt";
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    try {
      ConnectOptions options;
      options.request_timeout = 2s;
      Bus bus = Bus::connect(name, options);
      Subscriber sub = bus.subscriber();
      const std::string channel = fmt::format("probe:{}", round);
      sub.subscribe({channel});
      const std::size_t delivered = bus.publish(channel, "ping");
      // What shm-stat and PUBSUB read, over whatever the registry holds now.
      (void)inspect(name);
      const std::vector<std::string> numsub_of{channel, "news"};
      (void)bus.numsub(numsub_of);
      (void)bus.channels("*");
      while (auto m = sub.receive(1s)) {
        if (m->kind == Kind::message && m->payload == "ping") return "";
      }
      failure = fmt::format("its own message was not delivered (publish counted {})", delivered);
    } catch (const Error& e) {
      failure = e.what();
    }
    std::this_thread::sleep_for(20ms);
  }
  return failure;
}

// True while the coordinator process runs; a coordinator that died is reaped here.
bool running(pid_t pid, int& status) {
  return ::waitpid(pid, &status, WNOHANG) == 0;
}

bool sanitizer_report(const std::string& text) {
  return text.find("Sanitizer") != std::string::npos ||
         text.find("runtime error") != std::string::npos;
}

// Writes garbage into the shared memory of one bus through its own mappings.
class Vandal {
 public:
  Vandal(const std::string& bus, std::uint64_t seed)
      : bus_(bus),
        rng_(seed),
        view_(detail::Segment::open(detail::control_name(bus), detail::SegmentKind::control,
                                    detail::kLayoutVersion)) {}

  // Maps every ring of the bus now on /dev/shm.
  std::size_t map_rings() {
    rings_.clear();
    const std::string prefix = "shmcast." + bus_ + ".ring.";
    for (const auto& f : std::filesystem::directory_iterator("/dev/shm")) {
      const std::string file = f.path().filename().string();
      if (file.rfind(prefix, 0) != 0) continue;
      detail::Segment s =
          detail::Segment::open(file, detail::SegmentKind::ring, detail::kLayoutVersion);
      const std::size_t capacity = detail::ring_checked_capacity(
          s.base() + detail::kSegmentHeaderSize, s.size() - detail::kSegmentHeaderSize);
      if (capacity != 0) rings_.push_back({std::move(s), capacity});
    }
    return rings_.size();
  }

  // One overwrite of a ring: records, positions, flags and counters; with `header_too`, also
  // its recorded capacity and segment header.
  std::string ring(bool header_too) {
    Ring& r = rings_[pick(rings_.size())];
    std::byte* base = r.segment.base() + detail::kSegmentHeaderSize;
    auto& layout = *reinterpret_cast<detail::RingLayout*>(base);
    std::byte* data = base + sizeof(detail::RingLayout);
    const std::string name = r.segment.name();
    switch (pick(header_too ? 9 : 7)) {
      case 0: {
        const std::size_t at = pick(r.capacity);
        const std::size_t n = std::min<std::size_t>(1 + pick(256), r.capacity - at);
        spray(data + at, n);
        return fmt::format("{}: {} random bytes at data offset {}", name, n, at);
      }
      case 1: {
        const std::size_t at = layout.head.load() & (r.capacity - 1) & ~std::size_t{7};
        const std::uint64_t word = garbage64();
        std::memcpy(data + at, &word, sizeof word);
        return fmt::format("{}: record header at the head := {:#x}", name, word);
      }
      case 2: {
        const std::uint64_t tail =
            pick(2) == 0 ? layout.tail.load() + (pick(r.capacity) & ~7U) : garbage64();
        layout.tail.store(tail);
        return fmt::format("{}: tail := {:#x}", name, tail);
      }
      case 3: {
        const std::uint64_t v = garbage64();
        layout.head.store(v);
        return fmt::format("{}: head := {:#x}", name, v);
      }
      case 4: {
        const std::uint64_t v = garbage64();
        layout.head_cache.store(v);
        return fmt::format("{}: head cache := {:#x}", name, v);
      }
      case 5: {
        const std::uint32_t v = garbage32();
        layout.sleeping.store(v);
        return fmt::format("{}: sleeping := {:#x}", name, v);
      }
      case 6: {
        layout.dropped.store(garbage64());
        layout.read.store(garbage64());
        layout.corrupt.store(garbage64());
        return fmt::format("{}: counters := garbage", name);
      }
      case 7: {
        layout.capacity = garbage64();
        return fmt::format("{}: capacity := {:#x}", name, layout.capacity);
      }
      default: {
        const std::size_t at = pick(detail::kSegmentHeaderSize);
        spray(r.segment.base() + at, 1 + pick(detail::kSegmentHeaderSize - at));
        return fmt::format("{}: segment header bytes from {}", name, at);
      }
    }
  }

  // Kinds of overwrite of the control segment, each with the line the coordinator logs for it.
  enum Kind {
    kFixedHeader,
    kVersion,
    kRouteVersion,
    kCounters,
    kIdentity,
    kEntry,
    kNode,
    kLiveSlot,
    kFreeSlot,
    kMailbox,
    kSpray,
    kRing,
    kKinds
  };

  /// Is a client slot still held by `pid` (the coordinator clears the pid last when it frees
  /// one)?
  bool slot_held_by(pid_t pid) const {
    for (std::uint32_t i = 0; i < view_.limits().max_clients; ++i) {
      if (view_.slot(i).pid.load() == pid) return true;
    }
    return false;
  }

  /// A random number below n, from the seeded generator.
  std::size_t pick(std::size_t n) { return n == 0 ? 0 : rng_() % n; }

  static const char* expected_line(int kind) {
    switch (kind) {
      case kFixedHeader: return "repaired bus header: the segment header, limits or table";
      case kVersion: return "repaired routing version";
      case kRouteVersion: return "route versions overwritten in shared memory";
      case kCounters: return "repaired registry counters";
      case kIdentity: return "repaired bus header: the coordinator's pid and start time";
      case kEntry: return "table entries overwritten in shared memory";
      case kNode: return "subscription nodes overwritten in shared memory";
      case kLiveSlot: return "repaired client slot";
      case kFreeSlot: return "quarantined client slot";
      case kMailbox: return "is no operation; refused";
      default: return nullptr;
    }
  }

  std::string control(int kind) {
    detail::BusHeader& h = view_.header();
    switch (kind) {
      case kFixedHeader: {
        const std::size_t end =
            detail::kBusHeaderOffset + offsetof(detail::BusHeader, coordinator_pid);
        const std::size_t at = pick(end);
        const std::size_t n = 1 + pick(std::min<std::size_t>(16, end - at));
        spray(view_.segment().base() + at, n);
        return fmt::format("control: {} random bytes of the fixed header at {}", n, at);
      }
      case kVersion: {
        const std::uint64_t v = h.routing_version.load() | 1U;
        h.routing_version.store(v);
        return fmt::format("control: routing version := {} (odd: a write that never ends)", v);
      }
      case kRouteVersion: {
        const auto bucket = static_cast<std::uint32_t>(pick(view_.geometry().route_buckets));
        auto& version = view_.route_version(bucket);
        // Often back to a value a publisher may have recorded.
        const std::uint64_t was = version.load();
        std::uint64_t v = pick(2) == 0 && was > 0 ? was - 1 - pick(was) : garbage64();
        if (v == was) ++v;
        version.store(v);
        return fmt::format("control: route version {} := {} (was {})", bucket, v, was);
      }
      case kCounters:
        h.channel_count.store(garbage32());
        h.pattern_count.store(garbage32());
        h.node_used.store(garbage32());
        h.deaths.store(garbage64());
        return "control: channel, pattern, subscription and death counters := garbage";
      case kIdentity: {
        const std::uint32_t pid = garbage32();
        h.coordinator_pid.store(static_cast<std::int32_t>(pid));
        h.coordinator_start_ticks.store(garbage64());
        return fmt::format("control: coordinator pid := {}", static_cast<std::int32_t>(pid));
      }
      case kEntry: return entry();
      case kNode: return node();
      case kLiveSlot: return live_slot();
      case kFreeSlot: return free_slot();
      case kMailbox: return mailbox();
      case kSpray: {
        const std::size_t at = pick(view_.geometry().total);
        const std::size_t n = std::min<std::size_t>(1 + pick(512), view_.geometry().total - at);
        spray(view_.segment().base() + at, n);
        return fmt::format("control: {} random bytes at {}", n, at);
      }
      default: return ring(true);
    }
  }

  // Left for the next coordinator to find on adoption: an entry whose name is longer than the
  // limit, and the list of "news" closed into a loop. Returns false if "news" is not there.
  bool plant_for_adoption(std::string& what) {
    const std::int64_t news = detail::find_entry(view_, detail::Table::channels, "news");
    if (news < 0) return false;
    const detail::Entry& e = view_.entry(detail::Table::channels, static_cast<std::uint32_t>(news));
    if (e.first == detail::kNoNode || e.first > view_.geometry().node_count) return false;
    std::uint32_t last = e.first;
    for (std::uint32_t steps = 0; steps < view_.geometry().node_count; ++steps) {
      const std::uint32_t next = view_.node(last - 1).next;
      if (next == detail::kNoNode || next > view_.geometry().node_count) break;
      last = next;
    }
    view_.node(last - 1).next = e.first;
    for (std::uint32_t i = 0; i < view_.geometry().channel_slots; ++i) {
      detail::Entry& bad = view_.entry(detail::Table::channels, i);
      if (bad.used != 0) continue;
      bad.used = 1;
      bad.name_len = view_.limits().max_channel + 1 + garbage32() % 1000;
      bad.first = garbage32();
      what = fmt::format(
          "'news' list looped back from node {}; channel entry {} given a name "
          "of {} bytes",
          last - 1, i, bad.name_len);
      return true;
    }
    return false;
  }

 private:
  struct Ring {
    detail::Segment segment;
    std::size_t capacity;
  };

  void spray(std::byte* at, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) at[i] = static_cast<std::byte>(rng_());
  }

  // Values that hit the edges as often as the middle: 0, small indices, the largest ones.
  std::uint32_t garbage32() {
    switch (pick(6)) {
      case 0: return 0;
      case 1: return static_cast<std::uint32_t>(pick(4));
      case 2: return static_cast<std::uint32_t>(pick(view_.geometry().node_count + 2));
      case 3: return 0xffff'ffffU;
      case 4: return 0x8000'0000U | static_cast<std::uint32_t>(rng_());
      default: return static_cast<std::uint32_t>(rng_());
    }
  }
  std::uint64_t garbage64() {
    return pick(2) == 0 ? garbage32() : (std::uint64_t{garbage32()} << 32) | garbage32();
  }

  std::vector<std::uint32_t> used_entries(detail::Table table) {
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < view_.entry_slots(table); ++i) {
      if (view_.entry(table, i).used != 0) out.push_back(i);
    }
    return out;
  }

  std::vector<std::uint32_t> slots_in(detail::SlotState state) {
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < view_.limits().max_clients; ++i) {
      if (view_.slot(i).state.load() == static_cast<std::uint32_t>(state)) out.push_back(i);
    }
    return out;
  }

  std::string entry() {
    detail::Table table = pick(2) == 0 ? detail::Table::patterns : detail::Table::channels;
    auto used = used_entries(table);
    if (used.empty()) {
      table = table == detail::Table::channels ? detail::Table::patterns : detail::Table::channels;
      used = used_entries(table);
    }
    const std::uint32_t i =
        used.empty() ? static_cast<std::uint32_t>(pick(16)) : used[pick(used.size())];
    detail::Entry& e = view_.entry(table, i);
    const std::uint32_t v = garbage32();
    const char* field = "name";
    switch (pick(6)) {
      case 0:
        e.used = v == 0 ? 2 : v;
        field = "used";
        break;
      case 1:
        e.name_len = v;
        field = "name_len";
        break;
      case 2:
        e.first = v;
        field = "first";
        break;
      case 3:
        e.count = v;
        field = "count";
        break;
      case 4:
        e.hash = v;
        field = "hash";
        break;
      default: spray(reinterpret_cast<std::byte*>(view_.entry_name(table, i)), 1 + pick(8));
    }
    return fmt::format("control: {} entry {}: {} := {:#x}",
                       table == detail::Table::patterns ? "pattern" : "channel", i, field, v);
  }

  std::string node() {
    std::vector<std::uint32_t> used;
    for (std::uint32_t i = 0; i < view_.geometry().node_count; ++i) {
      if (view_.node(i).client != detail::kFreeNode) used.push_back(i);
    }
    const std::uint32_t i = used.empty()
                                ? static_cast<std::uint32_t>(pick(view_.geometry().node_count))
                                : used[pick(used.size())];
    detail::Node& n = view_.node(i);
    const std::uint32_t v = garbage32() | 1U;  // odd: the field always changes
    const char* field = "client";
    switch (pick(4)) {
      case 0: n.client ^= v; break;
      case 1:
        n.sid ^= v;
        field = "sid";
        break;
      case 2:
        n.next ^= v;
        field = "next";
        break;
      default: n.entry ^= v; field = "entry";
    }
    return fmt::format("control: node {}: {} ^= {:#x}", i, field, v);
  }

  std::string live_slot() {
    const auto live = slots_in(detail::SlotState::live);
    if (live.empty()) return "control: no live slot";
    const std::uint32_t i = live[pick(live.size())];
    detail::ClientSlot& s = view_.slot(i);
    const std::uint32_t v = garbage32() | 4U;  // not a state a client could have set
    switch (pick(5)) {
      case 0: s.state.store(v); return fmt::format("control: live slot {}: state := {}", i, v);
      case 1:
        s.pid.fetch_xor(static_cast<std::int32_t>(v));
        return fmt::format("control: live slot {}: pid ^= {}", i, v);
      case 2:
        s.generation.fetch_add(v);
        return fmt::format("control: live slot {}: generation += {}", i, v);
      case 3:
        s.has_ring.fetch_xor(1);
        return fmt::format("control: live slot {}: ring flag flipped", i);
      default:
        s.subscriptions.fetch_add(v);
        return fmt::format("control: live slot {}: subscriptions += {}", i, v);
    }
  }

  std::string free_slot() {
    const auto free = slots_in(detail::SlotState::free);
    if (free.empty()) return "control: no free slot";
    const std::uint32_t i = free[pick(free.size())];
    const std::uint32_t state =
        pick(2) == 0 ? static_cast<std::uint32_t>(detail::SlotState::live) : garbage32() | 4U;
    view_.slot(i).state.store(state);
    return fmt::format("control: free slot {}: state := {}", i, state);
  }

  std::string mailbox() {
    const auto live = slots_in(detail::SlotState::live);
    if (live.empty()) return "control: no live slot";
    const std::uint32_t i = live[pick(live.size())];
    detail::ClientSlot& s = view_.slot(i);
    const std::uint32_t op = 7 + garbage32() % 1000;
    s.op.store(op);
    s.name_len.store(garbage32());
    s.sid.store(garbage32());
    s.req_seq.fetch_add(1);
    view_.header().doorbell.fetch_add(1);
    detail::futex_wake(&view_.header().doorbell, 1);
    return fmt::format("control: slot {}: request of operation {}", i, op);
  }

  std::string bus_;
  std::mt19937_64 rng_;
  detail::ControlView view_;
  std::vector<Ring> rings_;
};

TEST(Hostile, RandomBytesInSharedMemoryNeitherCrashNorHangAndAreRepaired) {
  const std::uint64_t seed = seed_from_env();
  std::printf("hostile seed %llu (replay with SHMCAST_HOSTILE_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  SCOPED_TRACE(fmt::format("seed {} (replay with SHMCAST_HOSTILE_SEED={})", seed, seed));
  const std::string name = test::unique_bus("hostile");
  const std::string daemon_log = "/tmp/shmcastd-" + name + ".log";
  const std::vector<std::string> settings{"--max-clients",
                                          "24",
                                          "--max-channels",
                                          "64",
                                          "--max-patterns",
                                          "16",
                                          "--max-total-subscriptions",
                                          "256",
                                          "--max-subscriptions",
                                          "32",
                                          "--max-channel",
                                          "64",
                                          "--max-pattern",
                                          "64",
                                          "--ring-bytes",
                                          "65536",
                                          "--max-payload",
                                          "4096"};
  auto daemon = std::make_unique<Daemon>(name, settings);
  std::string logs;  // of every coordinator this test ran

  SharedBoard board;
  std::vector<std::string> child_logs;
  std::vector<std::unique_ptr<Child>> children;
  for (int k = 0; k <= kSubscribers; ++k) {
    child_logs.push_back(fmt::format("/tmp/shmcast-{}-child-{}.log", name, k));
    const std::string log = child_logs.back();
    Board& b = *board;
    children.push_back(std::make_unique<Child>([&name, &b, k, log](Link&) {
      return k == kSubscribers ? publish_until_stopped(name, b, log)
                               : receive_until_stopped(name, b, k, log);
    }));
  }
  const auto ready_by = Clock::now() + 20s;
  while (board->ready.load() < kSubscribers + 1 && Clock::now() < ready_by) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(board->ready.load(), kSubscribers + 1) << "the children did not start";

  Vandal vandal(name, seed);
  ASSERT_EQ(vandal.map_rings(), static_cast<std::size_t>(kSubscribers));
  int status = 0;
  const auto all_received_after = [&](std::uint64_t published) {
    const auto deadline = Clock::now() + 8s;
    for (;;) {
      bool all = true;
      for (int k = 0; k < kSubscribers; ++k) all = all && board->seen[k].load() > published;
      if (all) return true;
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
  };
  const auto started = Clock::now();

  // 1. Rings only: every subscriber resynchronises and receives what is published afterwards.
  for (int round = 0; round < kRingRounds; ++round) {
    std::string what = vandal.ring(false);
    for (std::size_t more = vandal.pick(3); more > 0; --more) what += "; " + vandal.ring(false);
    const std::uint64_t published = board->published.load();
    ASSERT_TRUE(all_received_after(published))
        << "ring round " << round << " (" << what << "): a subscriber stopped receiving: seen "
        << board->seen[0].load() << ", " << board->seen[1].load() << " of " << published;
    ASSERT_TRUE(running(daemon->pid(), status)) << "ring round " << round << " (" << what << ")";
  }

  // 2. A corrupt registry left for the next coordinator: it adopts the bus, drops what fails
  //    its checks, keeps every valid subscription, and the subscribers keep receiving.
  for (int round = 0; round < kAdoptions; ++round) {
    daemon->kill_now();
    logs += test::read_file(daemon_log);
    daemon.reset();  // before its successor starts: it removes the log file they share
    std::string what;
    ASSERT_TRUE(vandal.plant_for_adoption(what));
    const std::uint64_t published = board->published.load();
    daemon = std::make_unique<Daemon>(name, settings);
    const std::string log = test::read_file(daemon_log);
    EXPECT_NE(log.find("adopted bus"), std::string::npos) << log;
    EXPECT_NE(log.find("quarantined channel entry"), std::string::npos) << what << "\n" << log;
    EXPECT_NE(log.find("repaired channel 'news': its list ran into"), std::string::npos)
        << what << "\n"
        << log;
    ASSERT_TRUE(all_received_after(published))
        << "after adoption " << round << " (" << what << "): seen " << board->seen[0].load() << ", "
        << board->seen[1].load() << " of " << published;
  }

  // 3. Anything in the control segment and rings: after each round the coordinator runs and
  //    serves a new client end to end.
  const int rounds = control_rounds();
  for (int round = 0; round < rounds; ++round) {
    // The last probe's client is answered before the coordinator removes it: a registry write
    // then, which rewrites the routing version, must not hide this round's writes.
    const auto until = Clock::now() + 1s;
    while (vandal.slot_held_by(::getpid()) && Clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    const int kind = round % Vandal::kKinds;
    std::string what = vandal.control(kind);
    for (std::size_t more = vandal.pick(3); more > 0; --more) {
      what += "; " + vandal.control(static_cast<int>(vandal.pick(Vandal::kKinds)));
    }
    std::this_thread::sleep_for(kRepairTime);
    ASSERT_TRUE(running(daemon->pid(), status))
        << "control round " << round << " (" << what << "): the coordinator died, status " << status
        << "\n"
        << test::read_file(daemon_log);
    const std::string failure = probe(name, round);
    ASSERT_EQ(failure, "") << "control round " << round << " (" << what
                           << "): the coordinator does not serve";
  }
  std::printf(
      "hostile: %d ring rounds, %d adoptions, %d control rounds in %lld ms\n", kRingRounds,
      kAdoptions, rounds,
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()));

  // No child crashed or hangs: each leaves within its deadline, with status 0 and a clean log.
  board->stop.store(true);
  for (int k = 0; k <= kSubscribers; ++k) {
    Child& c = *children[static_cast<std::size_t>(k)];
    const bool ended = c.wait(15s);
    EXPECT_TRUE(ended) << "child " << k << " hangs";
    if (!ended) c.kill(SIGKILL);
    EXPECT_TRUE(c.exited_cleanly()) << "child " << k << " wait status " << c.status();
    const std::string out = test::read_file(child_logs[static_cast<std::size_t>(k)]);
    EXPECT_FALSE(sanitizer_report(out)) << "child " << k << ":\n" << out;
    ::unlink(child_logs[static_cast<std::size_t>(k)].c_str());
  }
  EXPECT_GT(board->received[0].load() + board->received[1].load(), 0U);
  std::printf("hostile: %llu and %llu messages received; requests refused: %llu, %llu, %llu\n",
              static_cast<unsigned long long>(board->received[0].load()),
              static_cast<unsigned long long>(board->received[1].load()),
              static_cast<unsigned long long>(board->refused[0].load()),
              static_cast<unsigned long long>(board->refused[1].load()),
              static_cast<unsigned long long>(board->refused[2].load()));

  // The coordinator ran throughout, stops cleanly, and logged what it repaired.
  ASSERT_TRUE(running(daemon->pid(), status)) << "status " << status;
  const int stopped = daemon->terminate();
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << "wait status " << stopped;
  logs += test::read_file(daemon_log);
  EXPECT_FALSE(sanitizer_report(logs)) << logs;
  for (int kind = 0; kind < Vandal::kKinds; ++kind) {
    const char* line = Vandal::expected_line(kind);
    if (line == nullptr) continue;
    EXPECT_NE(logs.find(line), std::string::npos) << "no '" << line << "' in the log:\n" << logs;
  }
  daemon.reset();

  // What a coordinator cannot know of (a ring made under an overwritten name) is removed here.
  const std::string prefix = "shmcast." + name + ".";
  for (const auto& f : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string file = f.path().filename().string();
    if (file.rfind(prefix, 0) == 0) std::filesystem::remove(f.path());
  }
}

// A process that keeps overwriting one field gets it repaired every time, but the log holds
// at most a burst of lines about it (RepairLog), not one line per repair.
TEST(Hostile, RepairsOfAFieldOverwrittenOverAndOverAreLoggedWithinABudget) {
  Daemon daemon;
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  auto& channels = view.header().channel_count;  // 0: the bus has no channel
  int overwrites = 0;
  // The counters are compared at each pass; with no client, only timed passes come.
  const auto until =
      Clock::now() + (shmcast::daemon::RepairLog::kBurst + 15) * shmcast::daemon::kAuditStep;
  while (Clock::now() < until) {
    if (channels.load() == 0) {  // repaired since the last overwrite
      channels.store(77);
      ++overwrites;
    }
    std::this_thread::sleep_for(1ms);
  }
  const auto deadline = Clock::now() + 5s;
  while (channels.load() != 0 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(channels.load(), 0U) << "the last overwrite was repaired too";
  ASSERT_GT(overwrites, static_cast<int>(shmcast::daemon::RepairLog::kBurst) + 5)
      << "the coordinator repaired too rarely for the test to mean anything";
  const std::string log = test::read_file("/tmp/shmcastd-" + daemon.bus() + ".log");
  std::size_t lines = 0;
  for (std::size_t at = 0; (at = log.find("repaired registry counters", at)) != std::string::npos;
       ++at) {
    ++lines;
  }
  EXPECT_EQ(lines, shmcast::daemon::RepairLog::kBurst) << overwrites << " overwrites; log:\n"
                                                       << log;
}

// A routing version held odd looks like a registry write that never ends; with the route version
// of the channel moved too, a publisher reads the registry again. With the coordinator stopped
// (alive, so not reaped, but unable to repair), it must not wait for it forever: it gives up
// after kRegistryPatience, once, and keeps the route it had.
TEST(Hostile, PublishGivesUpOnAVersionHeldOddAndTheCoordinatorRepairsIt) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"a"});
  ASSERT_EQ(bus.publish("a", "before"), 1U);
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  ASSERT_TRUE(test::pause_child(daemon.pid()));
  auto& version = view.header().routing_version;
  version.store(version.load() | 1U);
  auto& route_version = view.route_version_of(detail::name_hash("a"));
  route_version.fetch_add(1);
  const auto start = Clock::now();
  EXPECT_EQ(bus.publish("a", "while odd"), 1U) << "the route it had";
  const auto took = Clock::now() - start;
  // Once given up on, the version costs nothing more: the next publishes use the kept route.
  const auto again = Clock::now();
  EXPECT_EQ(bus.publish("a", "still odd"), 1U);
  EXPECT_EQ(bus.publish("a", "still odd"), 1U);
  const auto took_again = Clock::now() - again;
  ASSERT_EQ(::kill(daemon.pid(), SIGCONT), 0);
  EXPECT_GE(took, detail::kRegistryPatience);
  EXPECT_LT(took, detail::kRegistryPatience + 2s);
  EXPECT_LT(took_again, detail::kRegistryPatience) << "a second wait on the same version";
  const auto deadline = Clock::now() + 5s;
  while ((version.load() & 1U) != 0 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(version.load() & 1U, 0U) << "the coordinator put an even version back";
  const std::uint64_t resolved = detail::resolved_routes();
  EXPECT_EQ(bus.publish("a", "after"), 1U);
  EXPECT_EQ(detail::resolved_routes(), resolved + 1) << "the repair moved the route version on";
  std::vector<std::string> payloads;
  while (auto m = sub.receive(1s)) {
    if (m->kind == Kind::message) payloads.push_back(m->payload);
    if (payloads.size() == 5) break;
  }
  EXPECT_EQ(payloads,
            (std::vector<std::string>{"before", "while odd", "still odd", "still odd", "after"}));
  EXPECT_NE(
      test::read_file("/tmp/shmcastd-" + daemon.bus() + ".log").find("repaired routing version"),
      std::string::npos);
}

// A route resolved while the registry stayed in the middle of an update may miss a subscriber
// whose bucket then never moves again: it is resolved anew once the update ends, even though
// the bucket's version stays where it was.
TEST(Hostile, ARouteReadMidUpdateIsResolvedAgainOnceTheUpdateEnds) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber first = bus.subscriber();
  Subscriber second = bus.subscriber();
  first.subscribe({"a"});
  ASSERT_EQ(bus.publish("a", "warm"), 1U);
  second.subscribe({"a"});  // moves the bucket of "a" past the warm route's version
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  ASSERT_TRUE(test::pause_child(daemon.pid()));  // no audit repairs the version behind the test
  const struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{daemon.pid()};
  auto& version = view.header().routing_version;
  const std::uint64_t odd = version.load() | 1U;
  version.store(odd);
  EXPECT_EQ(bus.publish("a", "mid-update"), 1U) << "the route it had, kept";
  version.store(odd + 1);  // the update ends, and touched no bucket
  EXPECT_EQ(bus.publish("a", "after"), 2U) << "the subscriber the kept route lacked";
}

// PUBSUB and stats() read the registry as publishers do, but answer the caller: a version held
// odd must not give an answer read in the middle of an update. They read again until the
// request timeout, answer once the version is even again, and throw if it never is.
TEST(Hostile, RegistryReadsNeverAnswerFromAVersionHeldOdd) {
  Daemon daemon;
  Bus bus = Bus::connect(daemon.bus(), ConnectOptions{300ms});
  Bus patient = Bus::connect(daemon.bus(), ConnectOptions{5s});
  Subscriber sub = bus.subscriber();
  sub.subscribe({"a"});
  const std::vector<std::string> a{"a"};
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  ASSERT_TRUE(test::pause_child(daemon.pid()));
  // Continued on any way out, so the daemon's SIGTERM lands.
  const struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{daemon.pid()};
  auto& version = view.header().routing_version;
  const std::uint64_t even = version.load();
  version.store(even | 1U);
  const auto expect_stuck = [&](const char* what, const auto& read) {
    SCOPED_TRACE(what);
    EXPECT_LT(
        test::expect_error(Errc::coordinator_gone, "restart shmcastd --bus " + daemon.bus(), read),
        detail::kRegistryPatience + 2s);
  };
  expect_stuck("channels", [&] { (void)bus.channels(); });
  expect_stuck("numsub", [&] { (void)bus.numsub(a); });
  expect_stuck("stats", [&] { (void)bus.stats(); });
  expect_stuck("inspect", [&] { (void)inspect(daemon.bus()); });

  // Even again after the first read gave up: a patient client answers, and correctly.
  std::jthread restore([&] {
    std::this_thread::sleep_for(detail::kRegistryPatience + 300ms);
    version.store(even);
  });
  const auto start = Clock::now();
  EXPECT_EQ(patient.channels(), a);
  EXPECT_GE(Clock::now() - start, detail::kRegistryPatience);
  EXPECT_EQ(patient.numsub(a), (std::vector<std::pair<std::string, std::size_t>>{{"a", 1}}));
}

// Ring records that carry forged loan descriptors: each names no pool, a chunk outside the
// pool, a stale allocation, more bytes than its chunk, or a chunk whose block count was
// overwritten in the pool's shared header. The subscriber skips each, reads nothing outside a
// pool, and releases no reference it was not given.
TEST(Hostile, ForgedLoanDescriptorsAreSkippedAndReleaseNothing) {
  Daemon d(test::unique_bus("forged"));
  Bus bus = Bus::connect(d.bus());
  Subscriber sub = bus.subscriber();
  sub.subscribe({"c"});  // subscription id 1
  ASSERT_EQ(sub.receive(1s)->kind, Kind::subscribe);
  Loan loan = bus.loan(4096);
  std::memset(loan.data().data(), 'L', loan.size());
  ASSERT_EQ(bus.publish("c", std::move(loan)), 1U);
  Payload kept;
  sub.listen(
      [&](const MessageView& m) {
        kept = sub.keep(m);
        return false;
      },
      1s);
  ASSERT_TRUE(kept.loaned());

  const auto pools = detail::find_pools(d.bus(), std::nullopt);
  ASSERT_EQ(pools.size(), 1U);
  const detail::PoolView pool(d.bus(), pools[0].first, pools[0].second);
  detail::LoanRef real{pools[0].first, pools[0].second, 0, 0};
  const auto* meta = reinterpret_cast<detail::ChunkMeta*>(
      const_cast<std::byte*>(reinterpret_cast<const std::byte*>(&pool.header())) +
      sizeof(detail::PoolHeader));
  const std::uint64_t blocks = pool.header().block_count;
  for (std::uint32_t i = 0; i < blocks; ++i) {
    if (meta[i].refs.load() != 0) {
      real.chunk = i;
      real.serial = meta[i].serial.load();
      break;
    }
  }
  ASSERT_EQ(meta[real.chunk].refs.load(), 1U);  // the hold's
  auto& last = const_cast<detail::ChunkMeta&>(meta[blocks - 1]);
  last.blocks.store(1000);
  last.serial.store(77);

  const auto rings = test::ring_files(d.bus());
  ASSERT_EQ(rings.size(), 1U);
  detail::Segment ring =
      detail::Segment::open(*rings.begin(), detail::SegmentKind::ring, detail::kLayoutVersion);
  detail::RingProducer producer(ring.base() + detail::kSegmentHeaderSize,
                                ring.size() - detail::kSegmentHeaderSize);
  const auto forge = [&](detail::LoanRef ref, std::uint64_t length, std::size_t cut = 0) {
    detail::FrameHeader h{};
    h.kind = static_cast<std::uint8_t>(detail::FrameKind::message);
    h.flags = detail::kFrameLoaned;
    h.sid = 1;
    h.name_len = 1;
    const detail::LoanFrame frame{ref, length};
    std::string record(reinterpret_cast<const char*>(&h), sizeof h);
    record += 'c';
    record.append(reinterpret_cast<const char*>(&frame), sizeof frame - cut);
    ASSERT_EQ(producer.try_write(std::as_bytes(std::span(record)), 0), detail::WriteStatus::ok);
  };
  forge({999, 0, 0, 1}, 16);                                               // no such pool
  forge({real.pool_slot, real.pool_id, 1U << 30, real.serial}, 16);        // outside the pool
  forge({real.pool_slot, real.pool_id, real.chunk, real.serial + 1}, 16);  // stale
  forge(real, 4096 + 1);                                                   // past its chunk
  forge(real, 16, 8);                                                      // a short descriptor
  forge({real.pool_slot, real.pool_id, static_cast<std::uint32_t>(blocks - 1), 77},
        2 * detail::kPoolBlock);  // a block count that runs past the pool
  bus.publish("c", "after");

  std::vector<std::string> got;
  sub.listen(
      [&](const MessageView& m) {
        got.emplace_back(m.payload);
        return true;
      },
      300ms);
  EXPECT_EQ(got, std::vector<std::string>{"after"});
  // The hold still keeps its chunk: no forged record dropped its reference.
  EXPECT_EQ(meta[real.chunk].refs.load(), 1U);
  EXPECT_EQ(kept.view(), std::string(4096, 'L'));
  kept.reset();
  EXPECT_EQ(meta[real.chunk].refs.load(), 0U);
}

}  // namespace
}  // namespace shmcast
