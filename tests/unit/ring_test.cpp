#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ring_support.hpp"

namespace shmcast {
namespace {

using detail::kCacheLine;
using detail::ReadStatus;
using detail::RingConsumer;
using detail::RingProducer;
using detail::StallPolicy;
using detail::WriteStatus;
using test::as_bytes;
using test::as_string;
using test::HeapRing;

constexpr std::uint32_t kWriter = 7;

// Reads one record; "" and status in out-params.
ReadStatus read_one(RingConsumer& c, std::string& out) {
  return c.try_read([&](std::span<const std::byte> b) { out = as_string(b); });
}

std::string pattern_payload(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed * 17 + 5) & 0xff);
  return s;
}

StallPolicy fast_policy() {
  StallPolicy p;
  p.unwritten_grace = std::chrono::milliseconds(2);
  p.unwritten_limit = std::chrono::milliseconds(30);
  p.dead_writer_grace = std::chrono::milliseconds(1);
  p.stall_limit = std::chrono::milliseconds(20);
  return p;
}

// Reads until a record arrives or `limit` passes; a stalled ring is retried.
ReadStatus read_within(RingConsumer& c, std::string& out, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const ReadStatus s = read_one(c, out);
    if (s == ReadStatus::record || std::chrono::steady_clock::now() > end) return s;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

TEST(RingBasics, NewRingIsEmpty) {
  HeapRing r(1024);
  RingConsumer c(r.memory(), r.bytes());
  std::string out;
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  EXPECT_EQ(c.read_count(), 0U);
  EXPECT_EQ(c.dropped(), 0U);
}

TEST(RingBasics, RoundTripKeepsBytesAndOrder) {
  HeapRing r(4096);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  const std::string a("hello"), b(std::string("bin\0ary", 7)), d("third");
  ASSERT_EQ(p.try_write(as_bytes(a), kWriter), WriteStatus::ok);
  ASSERT_EQ(p.try_write(as_bytes(b), kWriter), WriteStatus::ok);
  ASSERT_EQ(p.try_write(as_bytes(d), kWriter), WriteStatus::ok);
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, a);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, b);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, d);
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  EXPECT_EQ(c.read_count(), 3U);
  EXPECT_EQ(r.layout().read.load(), 3U);
}

TEST(RingBasics, ZeroLengthRecord) {
  HeapRing r(256);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  ASSERT_EQ(p.try_write(std::span<const std::byte>(), kWriter), WriteStatus::ok);
  std::string out = "x";
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "");
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
}

TEST(RingBasics, GatherWriteConcatenatesParts) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  const std::string x("abc"), y(""), z("defgh");
  const std::span<const std::byte> parts[] = {as_bytes(x), as_bytes(y), as_bytes(z)};
  ASSERT_EQ(p.try_write(parts, kWriter), WriteStatus::ok);
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "abcdefgh");
}

TEST(RingBasics, FullRingRefusesAndCountsDrops) {
  HeapRing r(256);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  const std::string rec(56, 'r');  // 8 + 56 = 64 bytes, one cache line: exactly 4 fit in 256
  for (int i = 0; i < 4; ++i) ASSERT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::ok) << i;
  EXPECT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::full);
  EXPECT_EQ(p.try_write(std::span<const std::byte>(), kWriter), WriteStatus::full);
  EXPECT_EQ(p.dropped(), 2U);
  EXPECT_EQ(p.used(), 256U);
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::ok);
  EXPECT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::full);
  EXPECT_EQ(c.dropped(), 3U);
  int n = 0;
  while (read_one(c, out) == ReadStatus::record) {
    EXPECT_EQ(out, rec);
    ++n;
  }
  EXPECT_EQ(n, 4);
}

TEST(RingBasics, FullRingNeverOverwritesUnreadRecords) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  for (int i = 0; i < 100; ++i) {
    const std::string rec = pattern_payload(16, static_cast<unsigned>(i));
    (void)p.try_write(as_bytes(rec), kWriter);
  }
  std::string out;
  int seen = 0;
  while (read_one(c, out) == ReadStatus::record) {
    EXPECT_EQ(out, pattern_payload(16, static_cast<unsigned>(seen))) << seen;
    ++seen;
  }
  EXPECT_EQ(seen, 16);  // 1024 / 64: each 24-byte record takes a cache line
  EXPECT_EQ(c.dropped(), 84U);
}

TEST(RingBasics, MaxPayloadAndOneMore) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  ASSERT_EQ(p.max_payload(), 1024U / 2 - 8);
  ASSERT_EQ(c.max_payload(), p.max_payload());
  const std::string big = pattern_payload(p.max_payload(), 3);
  const std::string too_big = pattern_payload(p.max_payload() + 1, 3);
  EXPECT_EQ(p.try_write(as_bytes(too_big), kWriter), WriteStatus::too_big);
  EXPECT_EQ(p.dropped(), 0U) << "a refused oversized record is an error, not a drop";
  // A maximal record fits into an empty ring whatever the position of the tail.
  for (std::size_t offset = 0; offset < 1024; offset += kCacheLine) {
    ASSERT_EQ(p.try_write(as_bytes(big), kWriter), WriteStatus::ok) << offset;
    std::string out;
    ASSERT_EQ(read_one(c, out), ReadStatus::record);
    ASSERT_EQ(out, big);
    // Move the position on by one empty record (a cache line).
    ASSERT_EQ(p.try_write(std::span<const std::byte>(), kWriter), WriteStatus::ok);
    ASSERT_EQ(read_one(c, out), ReadStatus::record);
  }
}

TEST(RingBasics, ExactFitAtTheEndNeedsNoPadding) {
  HeapRing r(256);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  std::string out;
  const std::string first(120, 'a');  // 128 bytes
  ASSERT_EQ(p.try_write(as_bytes(first), kWriter), WriteStatus::ok);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  const std::string second(120, 'b');  // ends exactly at 256
  ASSERT_EQ(p.try_write(as_bytes(second), kWriter), WriteStatus::ok);
  EXPECT_EQ(r.layout().tail.load(), 256U);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, second);
  EXPECT_EQ(r.layout().head.load(), 256U);
}

// Every start offset, every record size around the end: records arrive whole and in order.
TEST(RingWrap, EveryOffsetEverySize) {
  constexpr std::size_t kCap = 512;
  for (std::size_t offset = 0; offset < kCap; offset += kCacheLine) {
    for (std::size_t size : {0UL, 1UL, 7UL, 8UL, 9UL, 55UL, 120UL, 200UL, 248UL}) {
      HeapRing r(kCap);
      RingProducer p(r.memory(), r.bytes());
      RingConsumer c(r.memory(), r.bytes());
      std::string out;
      // Move head and tail to `offset` with empty records (a cache line each).
      for (std::size_t i = 0; i < offset / kCacheLine; ++i) {
        ASSERT_EQ(p.try_write(std::span<const std::byte>(), kWriter), WriteStatus::ok);
        ASSERT_EQ(read_one(c, out), ReadStatus::record);
      }
      ASSERT_EQ(r.layout().head.load(), offset);
      for (unsigned k = 0; k < 3; ++k) {
        const std::string rec = pattern_payload(size, k + static_cast<unsigned>(offset));
        ASSERT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::ok) << offset << "/" << size;
        ASSERT_EQ(read_one(c, out), ReadStatus::record) << offset << "/" << size;
        ASSERT_EQ(out, rec) << "offset " << offset << " size " << size << " k " << k;
        ASSERT_TRUE(r.guard_intact())
            << "wrote past the end: offset " << offset << " size " << size;
      }
      EXPECT_EQ(read_one(c, out), ReadStatus::empty);
      EXPECT_EQ(r.layout().head.load(), r.layout().tail.load());
    }
  }
}

// A batch reads back as the same records written one by one, in order, across every offset of
// the ring (so at and around the end, where a batch goes record by record with padding), and
// as many records are counted as written or dropped as were given.
TEST(RingBatch, ReadsBackAsSingleWritesAtEveryOffset) {
  for (std::size_t offset = 0; offset < 1024; offset += kCacheLine) {
    HeapRing r(1024);
    RingProducer p(r.memory(), r.bytes());
    RingConsumer c(r.memory(), r.bytes());
    std::string out;
    for (std::size_t at = 0; at < offset; at += kCacheLine) {  // an empty record: a line
      ASSERT_EQ(p.try_write(std::span<const std::byte>(), kWriter), WriteStatus::ok);
      ASSERT_EQ(read_one(c, out), ReadStatus::record);
    }
    std::vector<std::string> payloads;
    std::vector<std::array<std::span<const std::byte>, 2>> parts;
    std::vector<std::span<const std::span<const std::byte>>> records;
    for (unsigned i = 0; i < 5; ++i) payloads.push_back(pattern_payload(20 + 9 * i, i));
    for (const std::string& s : payloads) {
      const auto bytes = as_bytes(s);
      parts.push_back({bytes.first(3), bytes.subspan(3)});
    }
    for (const auto& a : parts) records.emplace_back(a);
    ASSERT_EQ(p.try_write_batch(records, kWriter), 5U) << "offset " << offset;
    for (const std::string& expected : payloads) {
      ASSERT_EQ(read_one(c, out), ReadStatus::record) << "offset " << offset;
      EXPECT_EQ(out, expected) << "offset " << offset;
    }
    EXPECT_EQ(read_one(c, out), ReadStatus::empty);
    EXPECT_EQ(c.dropped(), 0U);
  }
}

// A write, one record or a batch, claims up to the end of a cache line, so the next write starts
// on a new line; a batch's records lie 8-byte aligned one after the other, and the reader's head
// comes to the line's end with the last of them.
TEST(RingLines, EachWriteEndsOnALineAndABatchIsPackedWithin) {
  HeapRing r(4096);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  std::string out;
  ASSERT_EQ(p.try_write(as_bytes(std::string(5, 'a')), kWriter), WriteStatus::ok);  // 13 bytes
  EXPECT_EQ(r.layout().tail.load(), kCacheLine);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "aaaaa");
  EXPECT_EQ(r.layout().head.load(), kCacheLine) << "the rest of the line goes with the record";
  ASSERT_EQ(p.try_write(as_bytes(std::string(120, 'b')), kWriter), WriteStatus::ok);  // 128
  EXPECT_EQ(r.layout().tail.load(), 3 * kCacheLine) << "a write that ends on a line needs none";

  // Three records of 8 + 20 bytes (32 each, aligned): 96 bytes, then the rest of the line.
  const std::vector<std::string> payloads = {std::string(20, 'x'), std::string(20, 'y'),
                                             std::string(20, 'z')};
  std::vector<std::span<const std::byte>> one(payloads.size());
  std::vector<std::span<const std::span<const std::byte>>> records;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    one[i] = as_bytes(payloads[i]);
    records.emplace_back(&one[i], 1);
  }
  ASSERT_EQ(p.try_write_batch(records, kWriter), 3U);
  EXPECT_EQ(r.layout().tail.load(), 5 * kCacheLine);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, std::string(120, 'b'));
  for (const std::string& expected : payloads) {
    ASSERT_EQ(read_one(c, out), ReadStatus::record);
    EXPECT_EQ(out, expected);
  }
  EXPECT_EQ(r.layout().head.load(), 5 * kCacheLine);
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  for (std::size_t i = 0; i < 5 * kCacheLine; ++i) {
    ASSERT_EQ(r.data()[i], std::byte{0}) << "consumed bytes are zeroed, padding included: " << i;
  }
}

TEST(RingBatch, ABatchThatDoesNotFitWritesWhatFitsAndCountsTheRest) {
  HeapRing r(256);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  const std::string payload(56, 'b');  // 64-byte records: four fill the ring
  const std::array<std::span<const std::byte>, 1> part{as_bytes(payload)};
  const std::vector<std::span<const std::span<const std::byte>>> records(6, part);
  EXPECT_EQ(p.try_write_batch(records, kWriter), 4U);
  EXPECT_EQ(p.dropped(), 2U);
  std::string out;
  for (int i = 0; i < 4; ++i) ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
}

TEST(RingWrap, ConsumedBytesAreZeroed) {
  HeapRing r(512);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  std::string out;
  for (unsigned i = 0; i < 40; ++i) {
    const std::string rec = pattern_payload(3 + i * 7 % 150, i);
    ASSERT_EQ(p.try_write(as_bytes(rec), kWriter), WriteStatus::ok);
    ASSERT_EQ(read_one(c, out), ReadStatus::record);
    ASSERT_EQ(out, rec);
  }
  for (std::size_t i = 0; i < 512; ++i) ASSERT_EQ(r.data()[i], std::byte{0}) << i;
}

TEST(RingLayoutCheck, RefusesInvalidCapacities) {
  EXPECT_THROW(HeapRing(100), std::invalid_argument);
  EXPECT_THROW(HeapRing(128), std::invalid_argument);
  HeapRing r(1024);
  EXPECT_THROW(RingProducer(r.memory(), r.bytes() - 1), std::invalid_argument);
  r.layout().capacity = 1000;
  EXPECT_THROW(RingConsumer(r.memory(), r.bytes()), std::invalid_argument);
  EXPECT_EQ(detail::ring_checked_capacity(r.memory(), r.bytes()), 0U);
}

TEST(RingWait, TimesOutWhenEmpty) {
  HeapRing r(1024);
  RingConsumer c(r.memory(), r.bytes());
  EXPECT_FALSE(c.wait(std::chrono::milliseconds(5), 10));
  EXPECT_EQ(r.layout().sleeping.load(), 0U);
}

TEST(RingWait, ProducerWakesASleepingConsumer) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  bool woke = false;
  std::thread consumer([&] { woke = c.wait(std::chrono::seconds(30), 10); });
  // The consumer announces that it sleeps before it waits on the futex.
  while (r.layout().sleeping.load() == 0) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(p.try_write(as_bytes(std::string("wake")), kWriter), WriteStatus::ok);
  consumer.join();
  EXPECT_TRUE(woke);
  // Without the wake the consumer would sleep out its whole 30 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_EQ(r.layout().sleeping.load(), 0U) << "the producer clears the flag it woke";
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "wake");
}

// Of the producers that commit while the consumer sleeps, only the first makes the wake-up; a
// write with Wake::later wakes nobody until wake().
TEST(RingWait, OnlyTheFirstCommitAfterTheAnnouncementWakes) {
  HeapRing r(1024);
  RingProducer first(r.memory(), r.bytes());
  RingProducer second(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  ASSERT_TRUE(c.announce_sleep());
  EXPECT_EQ(r.layout().sleeping.load(), detail::kConsumerAsleep);
  ASSERT_EQ(first.try_write(as_bytes(std::string("a")), kWriter, detail::Wake::later),
            WriteStatus::ok);
  EXPECT_EQ(r.layout().sleeping.load(), detail::kConsumerAsleep) << "woken before wake()";
  EXPECT_TRUE(first.wake());
  EXPECT_EQ(r.layout().sleeping.load(), detail::kConsumerNotified);
  ASSERT_EQ(second.try_write(as_bytes(std::string("b")), kWriter), WriteStatus::ok);
  EXPECT_FALSE(second.wake()) << "a second wake-up for one sleep";
  EXPECT_FALSE(first.wake());
  c.end_sleep();
  EXPECT_EQ(r.layout().sleeping.load(), detail::kConsumerAwake);
  EXPECT_FALSE(c.announce_sleep()) << "records are ready: no sleep";
  EXPECT_EQ(r.layout().sleeping.load(), detail::kConsumerAwake);
}

TEST(RingWait, AwakeConsumerIsNotFlagged) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  ASSERT_EQ(p.try_write(as_bytes(std::string("x")), kWriter), WriteStatus::ok);
  EXPECT_TRUE(c.wait(std::chrono::seconds(1), 10));
  EXPECT_EQ(r.layout().sleeping.load(), 0U);
}

// A writer that stopped after claiming, before its header: the claimed span is zero.
TEST(RingStall, UnwrittenClaimIsSkippedAfterTheLimit) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  r.layout().tail.fetch_add(48);  // a claim whose writer never wrote
  ASSERT_EQ(p.try_write(as_bytes(std::string("after")), kWriter), WriteStatus::ok);
  std::string out;
  EXPECT_EQ(read_one(c, out), ReadStatus::stalled);
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(5)), ReadStatus::record);
  EXPECT_EQ(out, "after");
  EXPECT_EQ(c.skipped(), 1U);
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
}

struct Deaths {
  std::atomic<std::uint64_t> count{0};
  static std::uint64_t read(void* self) { return static_cast<Deaths*>(self)->count.load(); }
};

TEST(RingStall, UnwrittenClaimWaitsForALiveWriterButNotAfterADeath) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  Deaths deaths;
  StallPolicy policy = fast_policy();
  policy.unwritten_limit = std::chrono::hours(1);
  policy.death_count = &Deaths::read;
  policy.context = &deaths;
  RingConsumer c(r.memory(), r.bytes(), policy);
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::empty);  // claims from now on are newer than any death
  r.layout().tail.fetch_add(48);
  ASSERT_EQ(p.try_write(as_bytes(std::string("after")), kWriter), WriteStatus::ok);
  EXPECT_EQ(read_within(c, out, std::chrono::milliseconds(30)), ReadStatus::stalled)
      << "a writer descheduled after its claim keeps its record while nobody died";
  deaths.count = 1;
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(5)), ReadStatus::record);
  EXPECT_EQ(out, "after");
  EXPECT_EQ(c.skipped(), 1U);
}

// A consumer made on an empty ring knows every claim in it is newer than the deaths counted
// then, though it never read the ring empty: a claim that stalls waits for its live writer.
TEST(RingStall, UnwrittenClaimInARingEmptyAtTheStartWaitsForALiveWriter) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  Deaths deaths;
  deaths.count = 3;
  StallPolicy policy = fast_policy();
  policy.unwritten_limit = std::chrono::hours(1);
  policy.death_count = &Deaths::read;
  policy.context = &deaths;
  RingConsumer c(r.memory(), r.bytes(), policy);
  r.layout().tail.fetch_add(48);  // a live writer descheduled after its claim
  ASSERT_EQ(p.try_write(as_bytes(std::string("after")), kWriter), WriteStatus::ok);
  std::string out;
  EXPECT_EQ(read_within(c, out, std::chrono::milliseconds(30)), ReadStatus::stalled)
      << "skipped as if its writer had died";
  EXPECT_EQ(c.skipped(), 0U);
  deaths.count = 4;
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(5)), ReadStatus::record);
  EXPECT_EQ(out, "after");
  EXPECT_EQ(c.skipped(), 1U);
}

// A consumer that starts on a stalled claim cannot tell it from one older than every death.
TEST(RingStall, UnwrittenClaimFoundAtStartIsSkippedAfterTheGrace) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  Deaths deaths;
  StallPolicy policy = fast_policy();
  policy.unwritten_limit = std::chrono::hours(1);
  policy.death_count = &Deaths::read;
  policy.context = &deaths;
  r.layout().tail.fetch_add(48);
  ASSERT_EQ(p.try_write(as_bytes(std::string("after")), kWriter), WriteStatus::ok);
  RingConsumer c(r.memory(), r.bytes(), policy);
  std::string out;
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(5)), ReadStatus::record);
  EXPECT_EQ(out, "after");
  EXPECT_EQ(c.skipped(), 1U);
}

TEST(RingStall, UnwrittenClaimAtTheTailIsSkipped) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  r.layout().tail.fetch_add(64);
  std::string out;
  EXPECT_EQ(read_within(c, out, std::chrono::milliseconds(50)), ReadStatus::empty);
  EXPECT_EQ(r.layout().head.load(), 64U);
  ASSERT_EQ(p.try_write(as_bytes(std::string("next")), kWriter), WriteStatus::ok);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "next");
}

pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  return pid;
}

// A record left with a negative length by a writer that died is skipped.
TEST(RingStall, DeadWritersRecordIsSkipped) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  StallPolicy policy = fast_policy();
  policy.stall_limit = std::chrono::hours(1);  // only liveness can free it
  RingConsumer c(r.memory(), r.bytes(), policy);
  const auto dead = static_cast<std::uint32_t>(dead_pid());
  // Hand-made in-progress record of 64 bytes from the dead writer.
  r.layout().tail.store(64);
  reinterpret_cast<std::atomic<std::uint64_t>*>(r.data())->store((std::uint64_t{dead} << 32) |
                                                                 static_cast<std::uint32_t>(-64));
  std::memset(r.data() + 8, 0x5a, 20);
  ASSERT_EQ(p.try_write(as_bytes(std::string("live")), kWriter), WriteStatus::ok);
  std::string out;
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(5)), ReadStatus::record);
  EXPECT_EQ(out, "live");
  EXPECT_EQ(c.skipped(), 1U);
  for (std::size_t i = 0; i < 64; ++i)
    ASSERT_EQ(r.data()[i], std::byte{0}) << "skipped bytes are zeroed";
}

TEST(RingStall, LiveWriterIsWaitedForUpToTheStallLimit) {
  HeapRing r(1024);
  StallPolicy policy = fast_policy();
  policy.stall_limit = std::chrono::milliseconds(30);
  RingConsumer c(r.memory(), r.bytes(), policy);
  const auto me = static_cast<std::uint32_t>(getpid());
  r.layout().tail.store(64);
  reinterpret_cast<std::atomic<std::uint64_t>*>(r.data())->store((std::uint64_t{me} << 32) |
                                                                 static_cast<std::uint32_t>(-64));
  std::string out;
  EXPECT_EQ(read_one(c, out), ReadStatus::stalled);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(read_one(c, out), ReadStatus::stalled) << "a live writer gets more than the dead grace";
  EXPECT_EQ(c.skipped(), 0U);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  EXPECT_EQ(c.skipped(), 1U);
}

// A reader merging frames of its own into the stream by position stops at a given one: the
// record there stays unread however the head got there (after a padding record, after a
// skipped record).
TEST(RingStop, RecordAtTheStopIsLeftUnread) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes());
  ASSERT_EQ(p.try_write(as_bytes(std::string(400, 'a')), kWriter), WriteStatus::ok);
  ASSERT_EQ(p.try_write(as_bytes(std::string(400, 'b')), kWriter), WriteStatus::ok);
  std::string out;
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  const std::uint64_t stop = c.claimed();
  // Does not fit before the end: a padding record at `stop`, then this one at the ring's start.
  ASSERT_EQ(p.try_write(as_bytes(std::string(300, 'c')), kWriter), WriteStatus::ok);
  const auto read_before = [&](std::uint64_t at) {
    return c.try_read([&](std::span<const std::byte> b) { out = as_string(b); }, at);
  };
  ASSERT_EQ(read_before(stop), ReadStatus::record);
  EXPECT_EQ(out, std::string(400, 'b'));
  EXPECT_EQ(read_before(stop), ReadStatus::empty);
  EXPECT_EQ(c.position(), stop);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, std::string(300, 'c'));
}

TEST(RingStop, SkippingADeadWritersRecordStopsAtTheStop) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  const auto dead = static_cast<std::uint32_t>(dead_pid());
  r.layout().tail.store(64);
  reinterpret_cast<std::atomic<std::uint64_t>*>(r.data())->store((std::uint64_t{dead} << 32) |
                                                                 static_cast<std::uint32_t>(-64));
  ASSERT_EQ(p.try_write(as_bytes(std::string("after")), kWriter), WriteStatus::ok);
  std::string out;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (c.skipped() == 0 && std::chrono::steady_clock::now() < end) {
    ASSERT_NE(c.try_read([&](std::span<const std::byte> b) { out = as_string(b); }, 64),
              ReadStatus::record);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_EQ(c.skipped(), 1U);
  EXPECT_EQ(c.position(), 64U);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "after");
}

TEST(RingCorruption, BadLengthIsReportedAndTheRingRecovers) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  ASSERT_EQ(p.try_write(as_bytes(std::string("victim")), kWriter), WriteStatus::ok);
  // A length running past the end of the ring.
  reinterpret_cast<std::atomic<std::uint64_t>*>(r.data())->store(100000);
  std::string out;
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  EXPECT_EQ(c.corrupt(), 1U);
  ASSERT_EQ(p.try_write(as_bytes(std::string("fine")), kWriter), WriteStatus::ok);
  ASSERT_EQ(read_one(c, out), ReadStatus::record);
  EXPECT_EQ(out, "fine");
}

TEST(RingCorruption, CorruptTailAndHeadDoNotEscapeTheRing) {
  HeapRing r(1024);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  r.layout().tail.store(0xdead'beef'0000'0000ULL);
  std::string out;
  EXPECT_EQ(read_one(c, out), ReadStatus::empty);
  EXPECT_EQ(c.corrupt(), 1U);
  r.layout().head.store(~0ULL);
  r.layout().head_cache.store(~0ULL);
  EXPECT_EQ(p.try_write(as_bytes(std::string("x")), kWriter), WriteStatus::full);
  r.layout().head.store(r.layout().tail.load());
  ASSERT_EQ(p.try_write(as_bytes(std::string("y")), kWriter), WriteStatus::ok);
  ASSERT_EQ(read_within(c, out, std::chrono::seconds(2)), ReadStatus::record);
  EXPECT_EQ(out, "y");
}

// Random bytes over a live ring, again and again: the reader neither crashes nor hangs (ASan
// checks every access, the ring lives in heap memory), and the ring works afterwards.
TEST(RingCorruption, RandomScribblesNeitherCrashNorHang) {
  std::mt19937_64 rng(12345);
  HeapRing r(2048);
  RingProducer p(r.memory(), r.bytes());
  RingConsumer c(r.memory(), r.bytes(), fast_policy());
  std::string out;
  for (int round = 0; round < 300; ++round) {
    for (int i = 0; i < 10; ++i) {
      (void)p.try_write(as_bytes(pattern_payload(rng() % 200, static_cast<unsigned>(i))), kWriter);
    }
    const int scribbles = 1 + static_cast<int>(rng() % 8);
    for (int s = 0; s < scribbles; ++s) {
      const std::size_t at = rng() % 2048;
      const std::size_t n = 1 + rng() % 16;
      for (std::size_t k = 0; k < n && at + k < 2048; ++k)
        r.data()[at + k] = static_cast<std::byte>(rng());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (read_one(c, out) != ReadStatus::empty) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "reader hung in round " << round;
    }
  }
  EXPECT_GT(c.corrupt() + c.skipped(), 0U);
  // Drain whatever is left, then the ring is usable again.
  r.layout().head.store(r.layout().tail.load());
  RingConsumer fresh(r.memory(), r.bytes(), fast_policy());
  std::memset(r.data(), 0, 2048);
  ASSERT_EQ(p.try_write(as_bytes(std::string("still works")), kWriter), WriteStatus::ok);
  ASSERT_EQ(read_one(fresh, out), ReadStatus::record);
  EXPECT_EQ(out, "still works");
}

}  // namespace
}  // namespace shmcast
