// Loans: payloads written once into the publisher's pool and read in place by every subscriber.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {
namespace {

using namespace std::chrono_literals;

// A payload whose every byte depends on its position and on `seed`.
void fill(std::span<std::byte> bytes, std::uint32_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  }
}

bool matches(std::span<const std::byte> bytes, std::size_t size, std::uint32_t seed) {
  if (bytes.size() != size) return false;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != static_cast<std::byte>((i * 131 + seed) & 0xff)) return false;
  }
  return true;
}

std::uint64_t pool_bytes_in_use(const std::string& bus) {
  std::uint64_t used = 0;
  for (const PoolStat& p : inspect(bus).pools) used += p.bytes_in_use;
  return used;
}

// Polls `done` for up to 5 s.
template <class F>
bool eventually(F&& done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(Loan, EverySubscriberReadsTheSameBytesInPlace) {
  test::Daemon d;
  Bus bus = Bus::connect(d.bus());
  std::vector<Subscriber> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(bus.subscriber());
    subs.back().subscribe({"frames"});
    ASSERT_EQ(subs.back().receive(1s)->kind, Kind::subscribe);
  }
  // Larger than max_payload (64 KiB): only a loan can carry it.
  constexpr std::size_t kSize = (1U << 20) + 5;
  Loan loan = bus.loan(kSize);
  ASSERT_EQ(loan.size(), kSize);
  fill(loan.data(), 7);
  EXPECT_EQ(bus.publish("frames", std::move(loan)), 3U);
  EXPECT_FALSE(loan);  // NOLINT(bugprone-use-after-move): spent by publish

  const std::byte* first = nullptr;
  for (Subscriber& s : subs) {
    std::size_t seen = 0;
    s.listen(
        [&](const MessageView& m) {
          EXPECT_EQ(m.kind, Kind::message);
          EXPECT_EQ(m.channel, "frames");
          EXPECT_TRUE(matches(std::as_bytes(std::span(m.payload)), kSize, 7));
          // The same memory in every subscriber: no copy was made for any of them.
          const auto* at = reinterpret_cast<const std::byte*>(m.payload.data());
          if (first == nullptr) first = at;
          EXPECT_EQ(at, first);
          ++seen;
          return false;
        },
        1s);
    EXPECT_EQ(seen, 1U);
  }
  EXPECT_TRUE(eventually([&] { return pool_bytes_in_use(d.bus()) == 0; }));
  const auto pools = inspect(d.bus()).pools;
  ASSERT_EQ(pools.size(), 1U);
  EXPECT_EQ(pools[0].bytes, Limits{}.pool_bytes);
  EXPECT_TRUE(pools[0].owner_attached);
}

TEST(Loan, ReceiveCopiesAndPatternsSeeLoansToo) {
  test::Daemon d;
  Bus bus = Bus::connect(d.bus());
  Subscriber s = bus.subscriber();
  s.psubscribe({"cam.*"});
  ASSERT_EQ(s.receive(1s)->kind, Kind::psubscribe);
  Loan loan = bus.loan(100'000);
  fill(loan.data(), 3);
  loan.shrink(90'000);
  EXPECT_EQ(bus.publish("cam.1", std::move(loan)), 1U);
  const auto m = s.receive(1s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, Kind::pmessage);
  EXPECT_EQ(m->pattern, "cam.*");
  EXPECT_EQ(m->channel, "cam.1");
  EXPECT_TRUE(matches(std::as_bytes(std::span(m->payload)), 90'000, 3));
  EXPECT_TRUE(eventually([&] { return pool_bytes_in_use(d.bus()) == 0; }));
}

TEST(Loan, UnpublishedOrUndeliveredLoansComeBack) {
  test::Daemon d(test::unique_bus(), {"--pool-bytes", "1048576"});
  Bus bus = Bus::connect(d.bus());
  {
    Loan whole = bus.loan(1U << 20);
    test::expect_error(Errc::pool_full, "--pool-bytes", [&] { (void)bus.loan(1); });
    EXPECT_EQ(pool_bytes_in_use(d.bus()), 1U << 20);
  }
  // Dropped unpublished: the whole pool is free again. Published to nobody: the same.
  Loan again = bus.loan(1U << 20);
  EXPECT_EQ(bus.publish("nobody", std::move(again)), 0U);
  Loan third = bus.loan(1U << 20);
  EXPECT_EQ(third.size(), 1U << 20);
  test::expect_error(Errc::payload_too_large, "--pool-bytes", [&] { (void)bus.loan(2U << 20); });
}

TEST(Loan, AFullPoolWaitsOnlyIfAskedTo) {
  test::Daemon d(test::unique_bus(), {"--pool-bytes", "65536"});
  Bus bus = Bus::connect(d.bus());
  Loan held = bus.loan(65536);
  std::thread giver([&] {
    std::this_thread::sleep_for(50ms);
    held = Loan();
  });
  const auto start = std::chrono::steady_clock::now();
  Loan got = bus.loan(4096, 2s);
  const auto waited = std::chrono::steady_clock::now() - start;
  giver.join();
  EXPECT_EQ(got.size(), 4096U);
  EXPECT_GE(waited, 40ms);
}

TEST(Loan, AKeptPayloadStaysValidAndHoldsItsChunk) {
  test::Daemon d(test::unique_bus(), {"--pool-bytes", "65536", "--max-holds", "2"});
  Bus bus = Bus::connect(d.bus());
  Subscriber s = bus.subscriber();
  s.subscribe({"c"});
  ASSERT_EQ(s.receive(1s)->kind, Kind::subscribe);
  for (std::uint32_t seed = 1; seed <= 3; ++seed) {
    Loan loan = bus.loan(16384);
    fill(loan.data(), seed);
    ASSERT_EQ(bus.publish("c", std::move(loan)), 1U);
  }
  bus.publish("c", "copied");
  std::vector<Payload> kept;
  bool refused = false;
  s.listen(
      [&](const MessageView& m) {
        try {
          kept.push_back(s.keep(m));
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), Errc::too_many_holds);
          EXPECT_NE(std::string(e.what()).find("--max-holds"), std::string::npos);
          refused = true;
        }
        return true;
      },
      200ms);
  EXPECT_TRUE(refused);  // the third loaned payload: two holds only
  ASSERT_EQ(kept.size(), 3U);
  EXPECT_TRUE(kept[0].loaned());
  EXPECT_TRUE(kept[1].loaned());
  EXPECT_FALSE(kept[2].loaned());
  EXPECT_EQ(kept[2].view(), "copied");
  const auto held_stats = inspect(d.bus());
  ASSERT_EQ(held_stats.pools.size(), 1U);
  EXPECT_EQ(held_stats.pools[0].chunks_in_use, 2U);
  std::uint32_t holds = 0;
  for (const ClientStat& c : held_stats.clients) holds += c.holds;
  EXPECT_EQ(holds, 2U);

  // The publisher fills its pool around the two held chunks: they never change.
  for (std::uint32_t seed = 10; seed < 40; ++seed) {
    Loan loan = bus.loan(16384, 1s);
    fill(loan.data(), seed);
    bus.publish("c", std::move(loan));
    s.listen([](const MessageView&) { return false; }, 100ms);
  }
  EXPECT_TRUE(matches(kept[0].data(), 16384, 1));
  EXPECT_TRUE(matches(kept[1].data(), 16384, 2));
  // Released from another thread.
  std::thread([&] { kept.clear(); }).join();
  EXPECT_TRUE(eventually([&] { return pool_bytes_in_use(d.bus()) == 0; }));
}

TEST(Loan, PayloadsOutliveTheirSubscriberAndPublisher) {
  test::Daemon d;
  Payload kept;
  {
    Bus publisher = Bus::connect(d.bus());
    Bus reader = Bus::connect(d.bus());
    Subscriber s = reader.subscriber();
    s.subscribe({"c"});
    ASSERT_EQ(s.receive(1s)->kind, Kind::subscribe);
    Loan loan = publisher.loan(5000);
    fill(loan.data(), 9);
    ASSERT_EQ(publisher.publish("c", std::move(loan)), 1U);
    s.listen(
        [&](const MessageView& m) {
          kept = s.keep(m);
          return false;
        },
        1s);
  }
  ASSERT_TRUE(kept.loaned());
  EXPECT_TRUE(matches(kept.data(), 5000, 9));
  // The publisher left: its pool stays while the payload is kept, and goes after.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(inspect(d.bus()).pools.size(), 1U);
  EXPECT_TRUE(matches(kept.data(), 5000, 9));
  kept.reset();
  EXPECT_TRUE(eventually([&] { return inspect(d.bus()).pools.empty(); }));
}

TEST(Loan, ALoanIsPublishedOnlyByItsBus) {
  test::Daemon d;
  Bus a = Bus::connect(d.bus());
  Bus b = Bus::connect(d.bus());
  Loan loan = a.loan(10);
  EXPECT_THROW(b.publish("c", std::move(loan)), std::invalid_argument);
  EXPECT_TRUE(loan);  // NOLINT(bugprone-use-after-move): refused, still the caller's
  EXPECT_EQ(a.publish("c", std::move(loan)), 0U);
  EXPECT_THROW(a.publish("c", std::move(loan)), std::invalid_argument);
}

TEST(Loan, ABusWithoutPoolsRefusesLoans) {
  test::Daemon d(test::unique_bus(), {"--pool-bytes", "0"});
  Bus bus = Bus::connect(d.bus());
  test::expect_error(Errc::payload_too_large, "--pool-bytes", [&] { (void)bus.loan(1); });
}

// A reader maps the pool of each publisher it reads from; once a publisher left and the
// coordinator removed its pool, the reader lets go of the mapping too, or every departed
// publisher's pool memory would stay for as long as the reader lives.
TEST(Loan, AReaderLetsGoOfThePoolOfAPublisherThatLeft) {
  test::Daemon d;
  Bus reader = Bus::connect(d.bus());
  Subscriber s = reader.subscriber();
  s.subscribe({"c"});
  ASSERT_EQ(s.receive(1s)->kind, Kind::subscribe);
  {
    Bus publisher = Bus::connect(d.bus());
    Loan loan = publisher.loan(100);
    fill(loan.data(), 1);
    ASSERT_EQ(publisher.publish("c", std::move(loan)), 1U);
  }
  const auto m = s.receive(1s);
  ASSERT_TRUE(m);
  EXPECT_TRUE(matches(std::as_bytes(std::span(m->payload)), 100, 1));
  ASSERT_TRUE(eventually([&] { return inspect(d.bus()).pools.empty(); }));
  const std::string pool = "shmcast." + d.bus() + ".pool.";
  EXPECT_NE(test::read_file("/proc/self/maps").find(pool), std::string::npos);
  // Idle waits let go of removed pools, at most once a second.
  const auto start = std::chrono::steady_clock::now();
  while (test::read_file("/proc/self/maps").find(pool) != std::string::npos &&
         std::chrono::steady_clock::now() - start < 3s) {
    EXPECT_FALSE(s.receive(100ms));
  }
  EXPECT_EQ(test::read_file("/proc/self/maps").find(pool), std::string::npos);
}

// A subscriber that stops reading pins only its share of a pool: past --max-unread-loan-bytes
// of unread loaned messages it is skipped, with a drop and a gap as for a full ring, and the
// publisher and the subscribers that read keep going.
TEST(Loan, AStoppedSubscriberPinsOnlyItsShareOfThePool) {
  test::Daemon d(test::unique_bus(),
                 {"--pool-bytes", "1048576", "--max-unread-loan-bytes", "262144"});
  Bus bus = Bus::connect(d.bus());
  Subscriber stalled = bus.subscriber();
  Subscriber reader = bus.subscriber();
  stalled.subscribe({"frames"});
  reader.subscribe({"frames"});
  ASSERT_EQ(stalled.receive(1s)->kind, Kind::subscribe);
  ASSERT_EQ(reader.receive(1s)->kind, Kind::subscribe);
  constexpr int kFrames = 200;
  std::size_t delivered = 0;
  for (int i = 0; i < kFrames; ++i) {
    Loan loan = bus.loan(65536);  // never pool_full: the stalled subscriber pins 4 chunks at most
    fill(loan.data(), static_cast<std::uint32_t>(i));
    delivered += bus.publish("frames", std::move(loan));
    const auto m = reader.receive(1s);
    ASSERT_TRUE(m);
    ASSERT_TRUE(
        matches(std::as_bytes(std::span(m->payload)), 65536, static_cast<std::uint32_t>(i)));
  }
  EXPECT_EQ(delivered, kFrames + 4U);
  EXPECT_EQ(stalled.dropped(), kFrames - 4U);
  for (std::uint32_t i = 0; i < 4; ++i) {
    const auto m = stalled.receive(1s);
    ASSERT_TRUE(m);
    EXPECT_TRUE(matches(std::as_bytes(std::span(m->payload)), 65536, i));
  }
  const auto gap = stalled.receive(1s);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->kind, Kind::gap);
  EXPECT_EQ(gap->count, kFrames - 4);
  // Read, its share is free again: the next loans reach it.
  Loan loan = bus.loan(65536);
  fill(loan.data(), 77);
  EXPECT_EQ(bus.publish("frames", std::move(loan)), 2U);
  EXPECT_TRUE(matches(std::as_bytes(std::span(stalled.receive(1s)->payload)), 65536, 77));
}

}  // namespace
}  // namespace shmcast
