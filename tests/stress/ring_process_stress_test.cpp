// Ring under load from producer processes, and producers killed at exact points mid-write.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "stress/stress_support.hpp"

namespace shmcast {
namespace {

using detail::ReadStatus;
using detail::RingConsumer;
using detail::RingProducer;
using detail::RingWritePoint;
using detail::WriteStatus;
using test::bytes_of;
using test::drain;
using test::kProducers;
using test::stress_check;
using test::StressRecord;
using test::Tally;

std::uint64_t g_writing_seq;  // the record a producer process is writing

// Producer processes: each writes its records, retrying when the ring is full.
[[noreturn]] void produce_and_exit(const test::SharedRing& ring, std::uint32_t p,
                                   std::uint64_t count) {
  RingProducer producer(ring.memory(), ring.bytes());
  const auto writer = static_cast<std::uint32_t>(getpid());
  for (std::uint64_t s = 0; s < count; ++s) {
    const StressRecord r{p, 0, s, stress_check(p, s)};
    g_writing_seq = s;
    while (producer.try_write(bytes_of(r), writer) == WriteStatus::full) detail::cpu_relax();
  }
  _exit(0);
}

void reap(const std::vector<pid_t>& pids, bool expect_clean) {
  for (const pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (expect_clean) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
  }
}

// Producer processes hand records one at a time to a consumer that sleeps whenever its ring is
// empty: it must be woken for every one, never left asleep until its cap.
TEST(RingStressProcesses, SleepingConsumerIsWokenForEveryRecord) {
  constexpr std::uint64_t kEach = 3000;
  constexpr std::uint32_t kHanders = 3;
  test::SharedRing ring(std::size_t{1} << 16);
  void* shared = mmap(nullptr, sizeof(test::Handshake), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* handshake = new (shared) test::Handshake();
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::vector<pid_t> pids;
  for (std::uint32_t p = 1; p <= kHanders; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      test::handshake_produce(ring.memory(), ring.bytes(), p, kEach, *handshake);
      _exit(0);
    }
    pids.push_back(pid);
  }
  Tally tally;
  test::handshake_consume(consumer, tally, kHanders * kEach, *handshake, std::chrono::seconds(240));
  reap(pids, true);
  EXPECT_EQ(handshake->stalls.load(), 0U) << "records the consumer slept through";
  EXPECT_EQ(tally.bad, 0U);
  for (std::uint32_t p = 1; p <= kHanders; ++p) EXPECT_EQ(tally.received[p], kEach) << p;
  munmap(shared, sizeof(test::Handshake));
}

TEST(RingStressProcesses, FourProducerProcessesMillionEach) {
  constexpr std::uint64_t kEach = 1'000'000;
  test::SharedRing ring(std::size_t{1} << 20);
  RingConsumer consumer(ring.memory(), ring.bytes());
  std::vector<pid_t> pids;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) produce_and_exit(ring, p, kEach);
    pids.push_back(pid);
  }
  Tally tally;
  drain(consumer, tally, kProducers * kEach, std::chrono::seconds(240));
  reap(pids, true);
  EXPECT_EQ(tally.bad, 0U);
  for (int p = 1; p <= kProducers; ++p) EXPECT_EQ(tally.received[p], kEach) << "producer " << p;
  EXPECT_EQ(consumer.skipped() + consumer.corrupt(), 0U);
}

RingWritePoint g_kill_point;
std::uint64_t g_kill_seq;

void kill_at_point(RingWritePoint point) {
  if (point == g_kill_point && g_writing_seq == g_kill_seq) raise(SIGKILL);
}

class RingWriterKilled : public ::testing::TestWithParam<RingWritePoint> {};

// Sees the victim die as a coordinator would: it counts deaths for the consumer's StallPolicy.
struct VictimWatch {
  pid_t pid = 0;
  int status = 0;
  bool dead = false;
  static std::uint64_t deaths(void* self) {
    auto* w = static_cast<VictimWatch*>(self);
    if (!w->dead && waitpid(w->pid, &w->status, WNOHANG) == w->pid) w->dead = true;
    return w->dead ? 1 : 0;
  }
};

// One producer is SIGKILLed at an exact point inside its 2000th record while another keeps
// writing: the consumer gets past the dead record and receives every survivor record in order.
TEST_P(RingWriterKilled, ConsumerContinues) {
  constexpr std::uint64_t kSurvivor = 200'000;
  constexpr int kVictimWrites = 2000;
  test::SharedRing ring(std::size_t{1} << 16);

  const pid_t victim = fork();
  ASSERT_GE(victim, 0);
  if (victim == 0) {
    g_kill_point = GetParam();
    g_kill_seq = kVictimWrites - 1;
    detail::ring_write_hook = kill_at_point;
    produce_and_exit(ring, 2, kSurvivor);  // killed long before the end
  }
  const pid_t survivor = fork();
  ASSERT_GE(survivor, 0);
  if (survivor == 0) produce_and_exit(ring, 1, kSurvivor);

  VictimWatch watch{victim};
  detail::StallPolicy policy;
  policy.unwritten_limit = std::chrono::hours(1);  // only the death may free a dead claim
  policy.death_count = &VictimWatch::deaths;
  policy.context = &watch;
  RingConsumer consumer(ring.memory(), ring.bytes(), policy);
  Tally tally;
  tally.gaps_allowed = true;  // the victim's records stop at its death
  const auto start = std::chrono::steady_clock::now();
  drain(consumer, tally, kSurvivor + kVictimWrites - 1, std::chrono::seconds(60));
  const auto took = std::chrono::steady_clock::now() - start;
  if (!watch.dead) {
    ASSERT_EQ(waitpid(victim, &watch.status, 0), victim);
    watch.dead = true;
  }
  EXPECT_TRUE(WIFSIGNALED(watch.status) && WTERMSIG(watch.status) == SIGKILL);
  reap({survivor}, true);

  EXPECT_EQ(tally.bad, 0U);
  EXPECT_EQ(tally.received[1], kSurvivor) << "every survivor record, in order";
  EXPECT_EQ(tally.received[2], static_cast<std::uint64_t>(kVictimWrites - 1))
      << "every victim record committed before its death";
  const bool leaves_a_record = GetParam() != RingWritePoint::before_claim;
  // The dead record may come after every survivor record: read on until the ring is empty.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (consumer.try_read(tally) != ReadStatus::empty &&
         std::chrono::steady_clock::now() < deadline) {
    consumer.wait(std::chrono::milliseconds(10), 10);
  }
  EXPECT_EQ(consumer.skipped(), leaves_a_record ? 1U : 0U);
  EXPECT_EQ(consumer.corrupt(), 0U);
  EXPECT_LT(took, std::chrono::seconds(30));
}

INSTANTIATE_TEST_SUITE_P(AtEachPoint, RingWriterKilled,
                         ::testing::Values(RingWritePoint::before_claim,
                                           RingWritePoint::after_claim,
                                           RingWritePoint::after_header, RingWritePoint::mid_copy,
                                           RingWritePoint::before_commit),
                         [](const auto& info) {
                           switch (info.param) {
                             case RingWritePoint::before_claim: return std::string("BeforeClaim");
                             case RingWritePoint::after_claim: return std::string("AfterClaim");
                             case RingWritePoint::after_header: return std::string("AfterHeader");
                             case RingWritePoint::mid_copy: return std::string("MidCopy");
                             case RingWritePoint::before_commit: return std::string("BeforeCommit");
                             case RingWritePoint::after_commit: return std::string("AfterCommit");
                           }
                           return std::string("Unknown");
                         });

}  // namespace
}  // namespace shmcast
