// The roles every transport runs (see pubsub_harness.hpp), and the pieces of the harness they
// use: the slot's backlog check, the pacer, the lockstep wait.
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "bench_support.hpp"
#include "pubsub_harness.hpp"

namespace pubsub_bench {

using namespace std::chrono_literals;
using bench_support::now_ns;
using bench_support::set_stamp;
using bench_support::signal_ready;
using bench_support::stamp_of;

// ---- throughput and lockstep roles ----------------------------------------------------------

void run_subscriber(const Run& run, Slot& slot, std::size_t index, int ready_fd) {
  const Scenario& sc = run.sc;
  // One channel: every subscriber holds it (fanout). More: each holds its share of them.
  std::vector<std::string> names;
  for (std::size_t i = sc.channels == 1 ? 0 : index; i < sc.channels;
       i += static_cast<std::size_t>(sc.subscribers)) {
    names.push_back(channel_name(i, sc.channels));
  }
  auto sub = run.transport.subscribe(names);
  signal_ready(ready_fd);

  const bool lockstep = sc.kind == Kind::lockstep;
  const bool wake_publisher = lockstep && run.transport.has_server();
  const bool fill = run.opt.fill;
  const std::uint64_t every = lockstep || sc.rate > 0 ? 1 : kThroughputSampleEvery;
  const std::uint64_t expected =
      run.opt.count * static_cast<std::uint64_t>(std::max(0, sc.publishers));
  ChildResult& result = slot.result();
  std::uint64_t read = 0;
  bool done = false;
  const OnMessage on_message = [&](std::string_view payload) {
    const std::uint64_t stamp = stamp_of(payload);
    if (fill) {
      // Its last byte is read too (the value is not needed: only the compiler must load it), so
      // a large message costs its reader the cache lines at both ends.
      const char last = payload.back();
      asm volatile("" : : "r"(last));
    }
    result.read_total.store(++read, std::memory_order_relaxed);
    if (lockstep) {
      slot.control().consumed.store(static_cast<std::uint32_t>(read), std::memory_order_release);
      if (wake_publisher) futex_wake(slot.control().consumed);
    }
    // Sent before the window opened, or read after it closed: not a delivery of the window.
    // Read after it closed, a message was queued while the clock ran but not delivered in it:
    // counting it would credit the backlog to the window.
    if (slot.in_window(stamp) && !slot.window_closed() && result.received++ % every == 0) {
      slot.sample(now_ns() - stamp);
    }
    done = expected != 0 && result.received == expected;
    return !done && !slot.stopped();
  };
  // An idle subscriber must not wake to look at `stop`: that would be the harness's cost, not
  // the transport's. The parent kills it once the window has closed.
  const auto timeout = sc.idle ? std::chrono::milliseconds(std::chrono::hours(24)) : kPollInterval;
  // Messages still queued when the run stops could not count any more, so they stay unread.
  while (!done && !slot.stopped()) sub->listen(on_message, sc.wait, timeout);
  result.dropped = sub->dropped();
}

void run_stopped_subscriber(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe({channel_name(0, 1)});
  signal_ready(ready_fd);
  while (!slot.stopped()) std::this_thread::sleep_for(kPollInterval);
  slot.result().dropped = sub->dropped();
}

// ---- ping-pong roles ------------------------------------------------------------------------

void run_echo(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe({"ping"});
  auto pub = run.transport.publisher();
  signal_ready(ready_fd);
  const Stopped stopped = slot.stop_check();
  // Answers from inside the callback, with the message still in place: no copy on the way back.
  const OnMessage answer = [&](std::string_view ping) {
    pub->queue("pong", ping);
    return pub->flush(stopped).has_value() && !slot.stopped();
  };
  while (!slot.stopped()) sub->listen(answer, run.sc.wait, kPollInterval);
  slot.result().dropped = sub->dropped();
}

void run_pinger(const Run& run, Slot& slot, int ready_fd) {
  auto sub = run.transport.subscribe({"pong"});
  auto pub = run.transport.publisher();
  std::string payload(run.opt.payload, '\0');
  signal_ready(ready_fd);
  slot.wait_for_go();
  const Stopped stopped = slot.stop_check();
  const bool counts = run.transport.counts_receivers();
  ChildResult& result = slot.result();
  while (!slot.stopped()) {
    const std::uint64_t start = now_ns();
    set_stamp(payload, start);
    pub->queue("ping", payload);
    const std::optional<std::uint64_t> delivered = pub->flush(stopped);
    if (!delivered) break;
    bool answered = false;
    const OnMessage is_answer = [&](std::string_view pong) {
      answered = stamp_of(pong) == start;
      return !answered && !slot.stopped();
    };
    while ((!counts || *delivered > 0) && !answered && !slot.stopped()) {
      sub->listen(is_answer, run.sc.wait, kPollInterval);
    }
    const std::uint64_t end = now_ns();
    if (!answered || !slot.in_window(start)) continue;
    // Both publishes of the round trip: the echo's answer arrived, so it delivered one.
    result.publishes += 2;
    result.deliveries += *delivered + (counts ? 1 : 0);
    ++result.received;
    slot.sample((end - start) / 2);
  }
  result.dropped = sub->dropped();
}

std::string channel_name(std::size_t i, std::size_t channels) {
  return channels == 1 ? std::string("bench") : fmt::format("ch:{}", i);
}

const std::string& one_channel(const std::vector<std::string>& channels) {
  if (channels.size() != 1) {
    throw std::runtime_error(
        fmt::format("this transport subscribes to one channel, not {}", channels.size()));
  }
  return channels.front();
}

Pacer::Pacer(std::uint64_t rate) {
  if (rate == 0) return;
  period_ns_ = std::max<std::uint64_t>(1, 1'000'000'000 / rate);
  next_ns_ = now_ns();
}

void Pacer::sleep_until_next() {
  next_ns_ += period_ns_;
  const timespec at{static_cast<time_t>(next_ns_ / 1'000'000'000),
                    static_cast<long>(next_ns_ % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == EINTR) {
  }
}

void Slot::wait_for_go() const {
  while (control_.go.load(std::memory_order_acquire) == 0) std::this_thread::sleep_for(100us);
}

std::uint64_t Slot::room(std::uint64_t limit) {
  for (;;) {
    if (stopped()) return 0;
    std::uint64_t sent = 0;
    for (std::size_t p = 0; p < publishers_; ++p) {
      sent += shared_.result(first_publisher_ + p).sent_total.load(std::memory_order_relaxed);
    }
    std::uint64_t slowest = std::numeric_limits<std::uint64_t>::max();
    for (std::size_t s = 0; s < subscribers_; ++s) {
      slowest = std::min(slowest, shared_.result(s).read_total.load(std::memory_order_relaxed));
    }
    const std::uint64_t backlog = sent > slowest ? sent - slowest : 0;
    if (backlog < limit) return std::max<std::uint64_t>(1, (limit - backlog) / publishers_);
    std::this_thread::sleep_for(20us);
  }
}

void await_consumed(Slot& slot, std::uint32_t sent, bool sleep) {
  std::atomic<std::uint32_t>& consumed = slot.control().consumed;
  if (!sleep) {
    while (consumed.load(std::memory_order_acquire) != sent && !slot.stopped()) cpu_relax();
    return;
  }
  for (;;) {
    const std::uint32_t seen = consumed.load(std::memory_order_acquire);
    if (seen == sent || slot.stopped()) return;
    futex_wait(consumed, seen);
  }
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen) {
  const timespec timeout{0, std::chrono::nanoseconds(kPollInterval).count()};
  (void)syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, &timeout,
                nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  (void)syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr,
                0);
}

void Transport::run_publisher(const Run& run, Slot& slot, std::size_t index, int ready_fd) {
  auto pub = publisher();
  signal_ready(ready_fd);
  publish_loop(run, slot, *pub, index);
}
}  // namespace pubsub_bench
