// shmcast-bench: publishers and subscribers as separate processes, measuring throughput and
// one-way latency of shmcast through the harness redis-bench-pubsub and uds-bench use
// (pubsub_harness.hpp), plus the scenarios only shmcast has: many channels, a pattern holder, a
// stopped subscriber, subscription churn.
//
// The parent never connects to the bus: it forks every role, lines them up through a pipe
// (subscribers subscribed before any publisher starts), runs the clock, and merges what the
// children leave in one anonymous MAP_SHARED region.
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "private_coordinator.hpp"
#include "pubsub_harness.hpp"
#include "shmcast/shmcast.hpp"

namespace {

using namespace std::chrono_literals;
using bench_support::now_ns;
using bench_support::signal_ready;
using pubsub_bench::Kind;
using pubsub_bench::kPollInterval;
using pubsub_bench::OnMessage;
using pubsub_bench::Role;
using pubsub_bench::Run;
using pubsub_bench::Scenario;
using pubsub_bench::Slot;
using pubsub_bench::Stopped;
using pubsub_bench::Wait;

// The channel the churning process subscribes to and leaves.
constexpr const char* kChurnChannel = "churn";

shmcast::ConnectOptions connect_options() {
  shmcast::ConnectOptions o;
  // Hundreds of processes attaching at once queue at the coordinator on two cores.
  o.request_timeout = 120s;
  return o;
}

void drain_confirmations(shmcast::Subscriber& sub) {
  while (sub.try_receive()) {
  }
}

// Subscribes in batches and drains the confirmations in between, so tens of thousands of them
// never have to fit in the subscriber's ring at once.
void subscribe_all(shmcast::Subscriber& sub, const std::vector<std::string>& names, bool pattern) {
  constexpr std::size_t kBatch = 1000;
  for (std::size_t at = 0; at < names.size(); at += kBatch) {
    const std::span<const std::string> batch(names.data() + at,
                                             std::min(kBatch, names.size() - at));
    pattern ? sub.psubscribe(batch) : sub.subscribe(batch);
    drain_confirmations(sub);
  }
}

class ShmcastSubscription final : public pubsub_bench::Subscription {
 public:
  explicit ShmcastSubscription(shmcast::Subscriber sub) : sub_(std::move(sub)) {}

  std::optional<std::string_view> receive(Wait wait, std::chrono::milliseconds timeout) override {
    bool got = false;
    listen(
        [&](std::string_view payload) {
          last_.assign(payload);
          got = true;
          return false;
        },
        wait, timeout);
    if (!got) return std::nullopt;
    return last_;
  }

  // The callback loop reads frames in place, as a latency-minded user would.
  void listen(const OnMessage& on_message, Wait wait, std::chrono::milliseconds timeout) override {
    const auto on_frame = [&](const shmcast::MessageView& m) {
      if (m.kind != shmcast::Kind::message && m.kind != shmcast::Kind::pmessage) return true;
      return on_message(m.payload);
    };
    switch (wait) {
      case Wait::spin: sub_.listen(on_frame, timeout, shmcast::Wait::spin); return;
      // Blocking, for shmcast, is its adaptive wait: it sleeps, after a short spin when that pays.
      case Wait::block: sub_.listen(on_frame, timeout, shmcast::Wait::adaptive); return;
      case Wait::sleep: sub_.listen(on_frame, timeout, shmcast::Wait::sleep); return;
      case Wait::by_default: sub_.listen(on_frame, timeout); return;
    }
  }

  std::uint64_t dropped() const override { return sub_.dropped(); }

 private:
  shmcast::Subscriber sub_;
  std::string last_;
};

// How the throughput and latency publishers put a message on the bus (--publish).
enum class PublishMode {
  copy,       // Bus::publish(channel, bytes): one copy into each receiving ring
  loan,       // written in place into a loan (Bus::loan), whose descriptor the rings carry
  loan_copy,  // written into the process's own buffer, then copied into a loan: what the
              // ordinary publish would cost if it went through the pool
  batch,      // copied, each flush's run of one channel with one Bus::publish_batch
};

// Publishes at queue() and commit(), so nothing waits for flush(), except in batch mode, which
// keeps copies of the messages until flush(); final, so publish_loop inlines it. queue() (the
// ping-pong roles) always publishes at once.
class ShmcastPublisher final : public pubsub_bench::Publisher {
 public:
  ShmcastPublisher(shmcast::Bus bus, PublishMode mode) : bus_(std::move(bus)), mode_(mode) {}

  void queue(std::string_view channel, std::string_view payload) override {
    delivered_ += bus_.publish(channel, payload);
  }
  std::span<char> claim(std::string& buffer, const Stopped& stopped) override {
    stopped_ = &stopped;
    if (mode_ != PublishMode::loan) return buffer;
    loan_ = lend(buffer.size());
    const std::span<std::byte> bytes = loan_.data();
    return {reinterpret_cast<char*>(bytes.data()), bytes.size()};
  }
  void commit(std::string_view channel, std::span<char> written) override {
    switch (mode_) {
      case PublishMode::copy:
        queue(channel, std::string_view(written.data(), written.size()));
        return;
      case PublishMode::batch:
        if (!sizes_.empty() && channel != channel_) send_batch();
        channel_.assign(channel);
        bytes_.append(written.data(), written.size());
        sizes_.push_back(written.size());
        return;
      case PublishMode::loan: delivered_ += bus_.publish(channel, std::move(loan_)); return;
      case PublishMode::loan_copy:
        if (shmcast::Loan loan = lend(written.size())) {
          std::memcpy(loan.data().data(), written.data(), written.size());
          delivered_ += bus_.publish(channel, std::move(loan));
        }
        return;
    }
  }
  std::optional<std::uint64_t> flush(const Stopped& /*stopped*/) override {
    if (!sizes_.empty()) send_batch();
    return std::exchange(delivered_, 0);
  }
  bool batches() const override { return mode_ == PublishMode::batch; }

 private:
  void send_batch() {
    views_.clear();
    std::size_t at = 0;
    for (const std::size_t n : sizes_) {
      views_.emplace_back(bytes_.data() + at, n);
      at += n;
    }
    delivered_ += bus_.publish_batch(channel_, views_);
    bytes_.clear();
    sizes_.clear();
  }

  // A full pool waits, as Bus::loan does when asked to, until subscribers let go of a chunk;
  // an empty loan if the run stops first.
  shmcast::Loan lend(std::size_t bytes) {
    while (!(*stopped_)()) {
      try {
        return bus_.loan(bytes, kPollInterval);
      } catch (const shmcast::Error& e) {
        if (e.code() != shmcast::Errc::pool_full) throw;
      }
    }
    return {};
  }

  shmcast::Bus bus_;
  PublishMode mode_;
  const Stopped* stopped_ = nullptr;  // the publish loop's, from its latest claim()
  shmcast::Loan loan_;                // claimed, until committed
  std::uint64_t delivered_ = 0;
  // Batch mode: the messages committed since the last send, all of channel_.
  std::string channel_;
  std::string bytes_;
  std::vector<std::size_t> sizes_;
  std::vector<std::string_view> views_;
};

std::uint64_t ring_bytes_for(std::size_t payload) {
  // A message must fit in half a ring; a quarter leaves room for several in flight.
  return std::max<std::uint64_t>(std::uint64_t{1} << 20, std::bit_ceil(4 * (payload + 512)));
}

// The limits a scenario needs, as shmcastd flags. Loaned payloads need no room in the rings.
std::vector<std::string> coordinator_flags(const Scenario& sc, std::size_t payload,
                                           PublishMode mode) {
  if (mode == PublishMode::loan || mode == PublishMode::loan_copy) payload = 64;
  const auto subscribers = static_cast<std::size_t>(std::max(1, sc.subscribers));
  const std::size_t per_client =
      std::max<std::size_t>(sc.patterns, (sc.channels + subscribers - 1) / subscribers);
  const auto arg = [](std::string flag, std::uint64_t value) {
    return std::vector<std::string>{std::move(flag), std::to_string(value)};
  };
  const std::vector<std::vector<std::string>> flags = {
      // A subscribing process holds two slots: its Bus connection and its Subscriber.
      arg("--max-clients",
          2 * static_cast<std::uint64_t>(sc.subscribers + sc.publishers + sc.stopped) + 16),
      arg("--max-subscriptions", std::max<std::size_t>(1024, per_client + 16)),
      arg("--max-channels", std::max<std::size_t>(16384, sc.channels + 16)),
      arg("--max-patterns", std::max<std::size_t>(4096, sc.patterns + 16)),
      arg("--max-total-subscriptions",
          std::max<std::size_t>(65536, sc.channels + sc.patterns + 64)),
      arg("--ring-bytes", ring_bytes_for(payload)),
      arg("--max-payload", std::max<std::size_t>(65536, payload)),
  };
  std::vector<std::string> out;
  for (const auto& f : flags) out.insert(out.end(), f.begin(), f.end());
  // A loaning publisher waits for room in its pool rather than drop: a subscriber may leave the
  // whole pool unread, but for the one that is stopped on purpose.
  if (sc.stopped == 0) {
    const auto all = arg("--max-unread-loan-bytes", shmcast::Limits{}.pool_bytes);
    out.insert(out.end(), all.begin(), all.end());
  }
  return out;
}

struct ShmcastOptions {
  std::string bus;
  PublishMode publish = PublishMode::copy;
  std::optional<std::size_t> patterns;
  std::optional<int> churn;
};

class ShmcastTransport final : public pubsub_bench::Transport {
 public:
  ShmcastTransport(const ShmcastOptions& opt, std::size_t payload) : opt_(opt), payload_(payload) {}
  ~ShmcastTransport() override { stop_coordinator(); }
  ShmcastTransport(const ShmcastTransport&) = delete;
  ShmcastTransport& operator=(const ShmcastTransport&) = delete;

  std::unique_ptr<pubsub_bench::Subscription> subscribe(
      const std::vector<std::string>& channels) override {
    shmcast::Subscriber sub = bus().subscriber();
    subscribe_all(sub, channels, false);
    return std::make_unique<ShmcastSubscription>(std::move(sub));
  }
  std::unique_ptr<pubsub_bench::Publisher> publisher() override {
    return std::make_unique<ShmcastPublisher>(bus(), opt_.publish);
  }
  bool counts_receivers() const override { return true; }
  bool has_server() const override { return false; }
  std::string name() const override {
    switch (opt_.publish) {
      case PublishMode::copy: return "shmcast";
      case PublishMode::loan: return "shmcast-loan";
      case PublishMode::loan_copy: return "shmcast-loan-copy";
      case PublishMode::batch: return "shmcast-batch";
    }
    return "shmcast";
  }

  std::optional<Scenario> scenario(const std::string& name) const override {
    Scenario s;
    s.name = name;
    if (name == "patterns-10000" || name == "patterns-0") {
      s.patterns = name == "patterns-0" ? 0 : 10'000;
      return s;
    }
    if (name == "churn") {
      s.churn = 1000;
      return s;
    }
    if (name == "stopped-subscriber") {
      // fanout to 4 readers, plus one more subscriber that is stopped for the whole run.
      s.subscribers = 4;
      s.stopped = 1;
      s.compare_stopped = true;
      s.wait = Wait::block;
      return s;
    }
    if (name == "channels-100k") {
      s.channels = 100'000;
      s.subscribers = 10;
      s.wait = Wait::block;
      return s;
    }
    return std::nullopt;
  }

  std::string adjust(Scenario& sc) const override {
    if (sc.kind != Kind::throughput && opt_.patterns) {
      return fmt::format("{} holds no patterns; drop --patterns", sc.name);
    }
    if (opt_.churn && sc.churn == 0) return "--churn is for the churn scenario";
    if (opt_.publish != PublishMode::copy && sc.kind == Kind::pingpong) {
      return fmt::format("{} publishes copies; drop --publish", sc.name);
    }
    if (opt_.patterns) sc.patterns = *opt_.patterns;
    if (opt_.churn) sc.churn = *opt_.churn;
    return {};
  }

  void add_roles(const Run& run, std::vector<Role>& receivers,
                 std::vector<Role>& senders) override {
    if (run.sc.patterns > 0) {
      receivers.emplace_back([&run, this](Slot& s, int fd) { hold_patterns(run, s, fd); });
    }
    if (run.sc.churn > 0) {
      senders.emplace_back([&run, this](Slot& s, int fd) { churn(run, s, fd); });
    }
  }

  void run_publisher(const Run& run, Slot& slot, std::size_t index, int ready_fd) override {
    ShmcastPublisher pub(bus(), opt_.publish);
    signal_ready(ready_fd);
    pubsub_bench::publish_loop(run, slot, pub, index);
  }

  // Without --bus, every run gets a private coordinator on a fresh bus, with the scenario's
  // limits.
  void begin_run(const Scenario& sc) override {
    if (!opt_.bus.empty()) {
      bus_name_ = opt_.bus;
      return;
    }
    bus_name_ = runs_++ == 0 ? fmt::format("bench-{}", getpid())
                             : fmt::format("bench-{}-{}", getpid(), runs_);
    coordinator_ = bench_support::start_private_coordinator(
        bus_name_, coordinator_flags(sc, payload_, opt_.publish));
  }
  void end_run() override { stop_coordinator(); }
  std::vector<pid_t> servers() const override {
    if (coordinator_ > 0) return {coordinator_};
    const std::int32_t pid = shmcast::inspect(bus_name_).coordinator_pid;
    return pid > 0 ? std::vector<pid_t>{pid} : std::vector<pid_t>{};
  }

 private:
  // This process's one connection, made on first use (in the child, after fork).
  shmcast::Bus& bus() {
    if (!bus_) bus_ = shmcast::Bus::connect(bus_name_, connect_options());
    return *bus_;
  }

  void stop_coordinator() {
    bench_support::stop_private_coordinator(coordinator_);
    coordinator_ = 0;
  }

  // An idle subscriber that only holds patterns, none matching, to load the registry.
  void hold_patterns(const Run& run, Slot& slot, int ready_fd) {
    shmcast::Subscriber sub = bus().subscriber();
    std::vector<std::string> patterns;
    patterns.reserve(run.sc.patterns);
    for (std::size_t i = 0; i < run.sc.patterns; ++i) {
      patterns.push_back(fmt::format("idle:{}:*", i));
    }
    subscribe_all(sub, patterns, true);
    signal_ready(ready_fd);
    while (!slot.stopped()) (void)sub.receive(kPollInterval);
    slot.result().dropped = sub.dropped();
  }

  // Subscribes to and leaves kChurnChannel sc.churn times a second, evenly spaced, while the
  // parent says so.
  void churn(const Run& run, Slot& slot, int ready_fd) {
    shmcast::Subscriber sub = bus().subscriber();
    signal_ready(ready_fd);
    slot.wait_for_go();
    const auto period = std::chrono::nanoseconds(1'000'000'000 / run.sc.churn);
    auto next = std::chrono::steady_clock::now();
    while (!slot.stopped()) {
      if (slot.control().churning.load(std::memory_order_acquire) == 0) {
        std::this_thread::sleep_for(100us);
        next = std::chrono::steady_clock::now();
        continue;
      }
      sub.subscribe({kChurnChannel});
      sub.unsubscribe({kChurnChannel});
      drain_confirmations(sub);
      if (slot.in_window(now_ns()) && !slot.window_closed()) ++slot.result().churned;
      next += period;
      std::this_thread::sleep_until(next);
    }
  }

  const ShmcastOptions& opt_;
  std::size_t payload_;
  std::string bus_name_;
  std::optional<shmcast::Bus> bus_;
  pid_t coordinator_ = 0;  // a private one, while it runs
  int runs_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmcast-bench: shmcast throughput and latency with publishers and subscribers in "
      "separate processes. Without --bus it starts a private shmcastd (the one next to "
      "this program) and stops it at the end."};
  pubsub_bench::Options opt;
  ShmcastOptions own;
  app.add_option("--bus", own.bus,
                 "Use the running coordinator of this bus instead of a private one");
  pubsub_bench::add_options(app, opt,
                            pubsub_bench::common_scenarios() +
                                ", patterns-10000, patterns-0, channels-100k, "
                                "stopped-subscriber, churn");
  app.add_option("--patterns", own.patterns,
                 "Patterns an idle subscriber holds, none of them matching the published channel "
                 "(throughput scenarios)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 24));
  app.add_option("--publish", own.publish,
                 "How the throughput and latency publishers publish: copy (Bus::publish with the "
                 "bytes), loan (written in place into a Bus::loan) or loan-copy (written into "
                 "the publisher's buffer, then copied into a loan)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, PublishMode>{{"copy", PublishMode::copy},
                                             {"loan", PublishMode::loan},
                                             {"loan-copy", PublishMode::loan_copy},
                                             {"batch", PublishMode::batch}}))
      ->capture_default_str();
  app.add_option("--pipeline", opt.pipeline,
                 "Messages per Bus::publish_batch with --publish batch [64]")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 16));
  app.add_option("--churn", own.churn,
                 "Subscribe/unsubscribe pairs per second on an unrelated channel (churn)")
      ->check(CLI::Range(1, 1'000'000));
  CLI11_PARSE(app, argc, argv);
  if (own.publish == PublishMode::batch && app.count("--pipeline") == 0) opt.pipeline = 64;

  ShmcastTransport transport(own, opt.payload);
  return pubsub_bench::run_and_report("shmcast-bench", opt, transport);
}
