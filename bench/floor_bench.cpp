// floor-bench: the ping-pong of pingpong-spin and pingpong-block without any transport, over one
// bare shared cache line (floor-spin) or two bare futex words (floor-block): the floor the
// hardware and the kernel set for handing a message from one process to another and back.
// It runs in the harness of shmcast-bench (pubsub_harness.hpp), so its report reads the same.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "pubsub_harness.hpp"

namespace {

using bench_support::now_ns;
using bench_support::signal_ready;
using pubsub_bench::Control;
using pubsub_bench::cpu_relax;
using pubsub_bench::futex_wait;
using pubsub_bench::futex_wake;
using pubsub_bench::Kind;
using pubsub_bench::Role;
using pubsub_bench::Run;
using pubsub_bench::Scenario;
using pubsub_bench::Slot;
using pubsub_bench::Wait;

// The control words the floor uses: odd values on `line` from the pinger, even from the echo;
// `ping` and `pong` the futex words, one per direction.
std::atomic<std::uint32_t>& line(Control& c) {
  return c.words[0].value;
}
std::atomic<std::uint32_t>& ping(Control& c) {
  return c.words[1].value;
}
std::atomic<std::uint32_t>& pong(Control& c) {
  return c.words[2].value;
}

void run_echo(const Scenario& sc, Slot& slot, int ready_fd) {
  Control& c = slot.control();
  signal_ready(ready_fd);
  std::uint32_t seen = 0;
  while (!slot.stopped()) {
    if (sc.wait == Wait::spin) {
      const std::uint32_t v = line(c).load(std::memory_order_acquire);
      if (v % 2 == 1) {
        line(c).store(v + 1, std::memory_order_release);
      } else {
        cpu_relax();
      }
      continue;
    }
    const std::uint32_t v = ping(c).load(std::memory_order_acquire);
    if (v == seen) {
      futex_wait(ping(c), seen);
      continue;
    }
    seen = v;
    pong(c).store(v, std::memory_order_release);
    futex_wake(pong(c));
  }
}

void run_pinger(const Scenario& sc, Slot& slot, int ready_fd) {
  Control& c = slot.control();
  signal_ready(ready_fd);
  slot.wait_for_go();
  std::uint32_t round = 0;
  while (!slot.stopped()) {
    const std::uint64_t start = now_ns();
    ++round;
    bool answered = false;
    if (sc.wait == Wait::spin) {
      const std::uint32_t odd = 2 * round - 1;
      line(c).store(odd, std::memory_order_release);
      while (!(answered = line(c).load(std::memory_order_acquire) == odd + 1) && !slot.stopped()) {
        cpu_relax();
      }
    } else {
      ping(c).store(round, std::memory_order_release);
      futex_wake(ping(c));
      for (;;) {
        const std::uint32_t v = pong(c).load(std::memory_order_acquire);
        if ((answered = v == round) || slot.stopped()) break;
        futex_wait(pong(c), v);
      }
    }
    const std::uint64_t end = now_ns();
    if (!answered || !slot.in_window(start)) continue;
    slot.result().publishes += 2;
    slot.result().deliveries += 2;
    ++slot.result().received;
    slot.sample((end - start) / 2);
  }
}

// No connections: the two roles hand a counter back and forth in the harness's shared region.
class Floor final : public pubsub_bench::Transport {
 public:
  std::unique_ptr<pubsub_bench::Subscription> subscribe(
      const std::vector<std::string>& /*channels*/) override {
    throw std::logic_error("the floor has no channels");
  }
  std::unique_ptr<pubsub_bench::Publisher> publisher() override {
    throw std::logic_error("the floor has no channels");
  }
  bool counts_receivers() const override { return true; }
  bool has_server() const override { return false; }
  std::string name() const override { return "floor"; }

  std::optional<Scenario> scenario(const std::string& name) const override {
    if (name != "floor-spin" && name != "floor-block") return std::nullopt;
    Scenario s;
    s.name = name;
    s.kind = Kind::pingpong;
    s.own_roles = true;
    s.wait = name == "floor-spin" ? Wait::spin : Wait::block;
    s.wait_fixed = true;
    return s;
  }

  void add_roles(const Run& run, std::vector<Role>& receivers,
                 std::vector<Role>& senders) override {
    receivers.emplace_back([&run](Slot& s, int fd) { run_echo(run.sc, s, fd); });
    senders.emplace_back([&run](Slot& s, int fd) { run_pinger(run.sc, s, fd); });
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "floor-bench: the ping-pong of shmcast-bench's pingpong-* scenarios over one bare shared "
      "cache line (floor-spin) or two bare futex words (floor-block), between two processes: "
      "the floor any transport is measured against."};
  pubsub_bench::Options opt;
  opt.scenario = "floor-block";
  pubsub_bench::add_options(app, opt, "floor-spin, floor-block");
  CLI11_PARSE(app, argc, argv);
  Floor floor;
  return pubsub_bench::run_and_report("floor-bench", opt, floor);
}
