// shmcast-bridge-bench: shmcast-bridge's forwarding through one Redis server and through a
// three-primary Redis Cluster, in one run. For each, it starts the Redis side on loopback TCP
// ports (the cluster's nodes joined with redis-cli --cluster create), two private shmcastd buses
// and the shmcast-bridge built next to it (--sharded on the one server, --cluster on the
// cluster: SPUBLISH and SSUBSCRIBE both times), then measures
//   out:     N messages published on bus A over 12 channels (4 on each primary), timed until
//            Redis subscribers (SSUBSCRIBE on each channel's node) have all of them;
//   in:      N SPUBLISH pipelined into Redis, one publisher per node, timed until a bus A
//            subscriber has them;
//   latency: bus A -> bridge A -> Redis -> bridge B -> bus B, one message per millisecond.
// Everything it started is stopped by pid at the end, and its directory removed.

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cluster_map.hpp"
#include "crc16.hpp"
#include "shmcast/shmcast.hpp"
#include "support/ports.hpp"
#include "support/process.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using shmcast::testing::free_tcp_port;
using shmcast::testing::output_to;
using shmcast::testing::Process;
namespace fs = std::filesystem;

std::string program_dir() {
  return fs::read_symlink("/proc/self/exe").parent_path().string();
}

class Redis {
 public:
  explicit Redis(int port) : c_(redisConnect("127.0.0.1", port)) {
    if (c_ == nullptr || c_->err != 0) {
      const std::string why = c_ != nullptr ? c_->errstr : "out of memory";
      if (c_ != nullptr) redisFree(c_);
      throw std::runtime_error(why);
    }
  }
  ~Redis() { redisFree(c_); }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  void append(std::initializer_list<std::string_view> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    redisAppendCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data());
  }
  // The next reply; throws when the connection fails or times out.
  redisReply* next() {
    void* reply = nullptr;
    if (redisGetReply(c_, &reply) != REDIS_OK) throw std::runtime_error(c_->errstr);
    return static_cast<redisReply*>(reply);
  }
  void skip() { freeReplyObject(next()); }
  // The reply's first string (a status, or an array's first element).
  std::string call(std::initializer_list<std::string_view> args) {
    append(args);
    redisReply* r = next();
    const redisReply* s = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0] : r;
    std::string text = s->str != nullptr ? std::string(s->str, s->len) : std::string();
    freeReplyObject(r);
    return text;
  }
  // Waiting longer than `t` for a reply fails.
  void timeout(std::chrono::seconds t) { redisSetTimeout(c_, timeval{t.count(), 0}); }

 private:
  redisContext* c_;
};

template <typename F>
void wait_until(F ready, const std::string& what, std::chrono::seconds limit = 20s) {
  const auto deadline = Clock::now() + limit;
  while (!ready()) {
    if (Clock::now() > deadline) {
      throw std::runtime_error(fmt::format("{} not ready within {} s", what, limit.count()));
    }
    std::this_thread::sleep_for(10ms);
  }
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Setup {
  std::uint64_t messages = 200000;
  std::size_t payload = 64;
  int latency_messages = 2000;
};

// The Redis side: one server, or a cluster of three primaries.
class RedisSide {
 public:
  RedisSide(const fs::path& dir, bool cluster) : cluster_(cluster) {
    const int count = cluster ? 3 : 1;
    for (int i = 0; i < count; ++i) {
      const int port = free_tcp_port();
      std::vector<std::string> argv{
          "redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
          "--save",       "",       "--appendonly",       "no",     "--dir",
          dir.string()};
      if (cluster) {
        argv.insert(argv.end(),
                    {"--cluster-enabled", "yes", "--cluster-port", std::to_string(free_tcp_port()),
                     "--cluster-config-file", fmt::format("nodes-{}.conf", port)});
      }
      servers_.push_back(
          std::make_unique<Process>(argv, output_to(dir / fmt::format("redis-{}.log", port))));
      ports_.push_back(port);
      wait_until(
          [&] {
            try {
              return Redis(port).call({"PING"}) == "PONG";
            } catch (const std::runtime_error&) {
              return false;
            }
          },
          "redis-server");
    }
    if (!cluster) return;
    std::vector<std::string> create{"redis-cli", "--cluster", "create"};
    for (const int p : ports_) create.push_back(fmt::format("127.0.0.1:{}", p));
    create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    Process creating(create, output_to(dir / "cluster-create.log"));
    if (!creating.wait(60s) || creating.exit_code() != 0) {
      throw std::runtime_error("redis-cli --cluster create failed");
    }
    for (const int p : ports_) {
      wait_until(
          [&] {
            return Redis(p).call({"CLUSTER", "INFO"}).starts_with("cluster_state:ok");
          },
          "the cluster");
    }
    shmcast::bridge::RedisAddress seed;
    seed.host = "127.0.0.1";
    seed.port = ports_.front();
    map_ = shmcast::bridge::discover_slots({seed});
  }

  [[nodiscard]] const char* name() const {
    return cluster_ ? "3-primary cluster" : "one Redis server";
  }
  [[nodiscard]] std::vector<std::string> bridge_flags() const {
    if (!cluster_) return {"--redis", fmt::format("redis://127.0.0.1:{}", ports_[0]), "--sharded"};
    return {"--cluster", fmt::format("redis://127.0.0.1:{}", ports_[0])};
  }
  [[nodiscard]] const std::vector<int>& ports() const { return ports_; }
  // The index in ports() of the node that serves `channel`.
  [[nodiscard]] std::size_t node_of(const std::string& channel) const {
    if (!map_) return 0;
    const int port = map_->primary_of(shmcast::bridge::key_slot(channel)).port;
    return static_cast<std::size_t>(std::find(ports_.begin(), ports_.end(), port) - ports_.begin());
  }

 private:
  bool cluster_;
  std::vector<int> ports_;
  std::vector<std::unique_ptr<Process>> servers_;
  std::optional<shmcast::bridge::SlotMap> map_;
};

// `per_third` channel names "<prefix>N" in each third of the slots, which is what each primary
// of a cluster that redis-cli --cluster create made serves; one server gets the same names.
std::vector<std::string> spread_channels(const std::string& prefix, std::size_t per_third) {
  std::vector<std::string> out;
  std::vector<std::size_t> in_third(3, 0);
  for (int n = 0; out.size() < 3 * per_third; ++n) {
    const std::string name = fmt::format("{}{}", prefix, n);
    const auto third = static_cast<std::size_t>(shmcast::bridge::key_slot(name) * 3 /
                                                shmcast::bridge::kClusterSlots);
    if (in_third[third] < per_third) {
      ++in_third[third];
      out.push_back(name);
    }
  }
  return out;
}

// SSUBSCRIBEs each channel on its node: one connection per node.
std::vector<std::unique_ptr<Redis>> subscribe(const RedisSide& side,
                                              const std::vector<std::string>& channels) {
  std::vector<std::unique_ptr<Redis>> subs;
  for (const int port : side.ports()) subs.push_back(std::make_unique<Redis>(port));
  for (const auto& c : channels) {
    Redis& sub = *subs[side.node_of(c)];
    sub.append({"SSUBSCRIBE", c});
    sub.skip();
  }
  for (auto& sub : subs) sub->timeout(10s);
  return subs;
}

// Waits until both bridges forward: messages published on bus A every 20 ms reach a Redis
// subscriber on each node and bus B, and one SPUBLISHed on each --in channel reaches bus A.
void wait_for_bridges(const RedisSide& side, shmcast::Bus& a, shmcast::Bus& b,
                      const std::vector<std::string>& out, const std::vector<std::string>& in,
                      const std::string& latency) {
  auto subs = subscribe(side, out);
  shmcast::Subscriber at_a = a.subscriber();
  at_a.subscribe(in);
  shmcast::Subscriber at_b = b.subscriber();
  at_b.subscribe({latency});
  std::set<std::string> heard;  // the --in channels that reached bus A
  bool latency_heard = false;
  wait_until(
      [&] {
        for (const auto& c : out) a.publish(c, "warm-up");
        a.publish(latency, "warm-up");
        for (const auto& c : in) Redis(side.ports()[side.node_of(c)]).call({"SPUBLISH", c, "w"});
        for (auto m = at_a.receive(20ms); m; m = at_a.try_receive()) {
          if (m->kind == shmcast::Kind::message) heard.insert(m->channel);
        }
        for (auto m = at_b.receive(20ms); m; m = at_b.try_receive()) {
          latency_heard = latency_heard || m->kind == shmcast::Kind::message;
        }
        return latency_heard && heard.size() == in.size();
      },
      "shmcast-bridge");
  for (auto& sub : subs) sub->skip();  // every node's subscriber has had a warm-up message
}

// Bus -> Redis. The bridge's subscriber is the only one on the channels, so a publish that
// returns 0 found its ring full and is retried: the rate is what the bridge sustains.
double bench_out(shmcast::Bus& bus, const RedisSide& side, const std::vector<std::string>& channels,
                 const Setup& setup) {
  auto subs = subscribe(side, channels);
  std::vector<std::uint64_t> expected(subs.size(), 0);
  for (std::uint64_t i = 0; i < setup.messages; ++i)
    ++expected[side.node_of(channels[i % channels.size()])];
  const std::string payload(setup.payload, 'o');
  std::atomic<std::uint64_t> received{0};
  std::vector<Clock::time_point> last(subs.size(), Clock::now());
  std::vector<std::thread> readers;
  for (std::size_t n = 0; n < subs.size(); ++n) {
    readers.emplace_back([&, n] {
      try {
        for (std::uint64_t i = 0; i < expected[n]; ++i) {
          // The warm-up's leftovers are not counted.
          redisReply* r = subs[n]->next();
          const bool warm = r->elements == 3 && std::string_view(r->element[2]->str) == "warm-up";
          freeReplyObject(r);
          if (warm) --i;
        }
        received += expected[n];
        last[n] = Clock::now();
      } catch (const std::runtime_error&) {
        // reported below from the count
      }
    });
  }
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < setup.messages; ++i) {
    while (bus.publish(channels[i % channels.size()], payload) == 0) std::this_thread::yield();
  }
  for (auto& r : readers) r.join();
  if (received < setup.messages) {
    throw std::runtime_error(
        fmt::format("Redis received {} of {} messages", received.load(), setup.messages));
  }
  return static_cast<double>(setup.messages) /
         seconds_between(start, *std::max_element(last.begin(), last.end()));
}

struct InResult {
  double rate = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
};

// Redis -> bus, SPUBLISH pipelined 1000 at a time by one publisher per node. Neither Redis nor
// the bridge waits for a slow reader, so the bus subscriber may lose messages in its full ring;
// they are counted.
InResult bench_in(shmcast::Bus& bus, const RedisSide& side,
                  const std::vector<std::string>& channels, const Setup& setup) {
  shmcast::Subscriber sub = bus.subscriber();
  sub.subscribe(channels);
  InResult result;
  Clock::time_point last;
  std::thread reader([&] {
    while (result.received + result.dropped < setup.messages) {
      const auto m = sub.receive(2s);
      if (!m) break;
      if (m->kind == shmcast::Kind::gap) result.dropped += static_cast<std::uint64_t>(m->count);
      if (m->kind != shmcast::Kind::message || m->payload == "w") continue;
      ++result.received;
      last = Clock::now();
    }
  });
  const std::string payload(setup.payload, 'i');
  const auto start = Clock::now();
  std::vector<std::thread> publishers;
  for (std::size_t n = 0; n < side.ports().size(); ++n) {
    publishers.emplace_back([&, n] {
      std::vector<std::string> mine;
      for (const auto& c : channels) {
        if (side.node_of(c) == n) mine.push_back(c);
      }
      Redis publisher(side.ports()[n]);
      const std::uint64_t share =
          setup.messages / side.ports().size() + (n < setup.messages % side.ports().size() ? 1 : 0);
      constexpr std::uint64_t kPipeline = 1000;
      for (std::uint64_t sent = 0; sent < share;) {
        const std::uint64_t batch = std::min(kPipeline, share - sent);
        for (std::uint64_t i = 0; i < batch; ++i) {
          publisher.append({"SPUBLISH", mine[(sent + i) % mine.size()], payload});
        }
        for (std::uint64_t i = 0; i < batch; ++i) publisher.skip();
        sent += batch;
      }
    });
  }
  for (auto& p : publishers) p.join();
  reader.join();
  result.rate = static_cast<double>(result.received) / seconds_between(start, last);
  return result;
}

struct Latency {
  double median_us = 0;
  double p99_us = 0;
  int received = 0;
};

// Bus A -> bridge A -> Redis -> bridge B -> bus B: a message every millisecond carrying the
// time it was published (both buses are on this host, so one clock serves).
Latency bench_latency(shmcast::Bus& a, shmcast::Bus& b, const std::string& channel,
                      const Setup& setup) {
  shmcast::Subscriber sub = b.subscriber();
  sub.subscribe({channel});
  std::vector<double> micros;
  std::thread reader([&] {
    while (static_cast<int>(micros.size()) < setup.latency_messages) {
      const auto m = sub.receive(2s);
      if (!m) break;
      if (m->kind != shmcast::Kind::message || m->payload.size() < sizeof(std::int64_t)) continue;
      std::int64_t sent = 0;
      std::memcpy(&sent, m->payload.data(), sizeof sent);
      micros.push_back(static_cast<double>(Clock::now().time_since_epoch().count() - sent) / 1e3);
    }
  });
  std::string payload(std::max(setup.payload, sizeof(std::int64_t)), 'l');
  for (int i = 0; i < setup.latency_messages; ++i) {
    const std::int64_t now = Clock::now().time_since_epoch().count();
    std::memcpy(payload.data(), &now, sizeof now);
    a.publish(channel, payload);
    std::this_thread::sleep_for(1ms);
  }
  reader.join();
  Latency l;
  l.received = static_cast<int>(micros.size());
  if (micros.empty()) return l;
  std::sort(micros.begin(), micros.end());
  l.median_us = micros[micros.size() / 2];
  l.p99_us = micros[std::min(micros.size() - 1, micros.size() * 99 / 100)];
  return l;
}

struct Figures {
  std::string name;
  double out = 0;
  InResult in;
  Latency latency;
};

Figures measure(const fs::path& dir, bool cluster, const Setup& setup) {
  const std::string bin = program_dir();
  const std::string tag = cluster ? "cluster" : "server";
  RedisSide side(dir, cluster);
  const std::string bus_a = fmt::format("bridge-bench-{}-{}-a", ::getpid(), tag);
  const std::string bus_b = fmt::format("bridge-bench-{}-{}-b", ::getpid(), tag);
  Process daemon_a({bin + "/shmcastd", "--bus", bus_a}, output_to(dir / (bus_a + ".log")));
  Process daemon_b({bin + "/shmcastd", "--bus", bus_b}, output_to(dir / (bus_b + ".log")));
  std::optional<shmcast::Bus> a;
  std::optional<shmcast::Bus> b;
  wait_until(
      [&] {
        try {
          a.emplace(shmcast::Bus::connect(bus_a));
          b.emplace(shmcast::Bus::connect(bus_b));
          return true;
        } catch (const shmcast::Error&) {
          return false;
        }
      },
      "shmcastd");

  const auto out = spread_channels("bench.out.", 4);
  const auto in = spread_channels("bench.in.", 4);
  const std::string latency = "bench.latency";
  std::vector<std::string> args_a{bin + "/shmcast-bridge", "--bus", bus_a, "--out", "bench.*"};
  for (const auto& c : in) args_a.insert(args_a.end(), {"--in", c});
  std::vector<std::string> args_b{bin + "/shmcast-bridge", "--bus", bus_b, "--in", latency};
  for (auto* args : {&args_a, &args_b}) {
    const auto flags = side.bridge_flags();
    args->insert(args->end(), flags.begin(), flags.end());
  }
  Process bridge_a(args_a, output_to(dir / (bus_a + "-bridge.log")));
  Process bridge_b(args_b, output_to(dir / (bus_b + "-bridge.log")));
  wait_for_bridges(side, *a, *b, out, in, latency);

  Figures f;
  f.name = side.name();
  f.out = bench_out(*a, side, out, setup);
  f.in = bench_in(*a, side, in, setup);
  f.latency = bench_latency(*a, *b, latency, setup);
  return f;
}

int run(const Setup& setup) {
  std::string dir_template = "/tmp/shmcast-bridge-bench-XXXXXX";
  if (::mkdtemp(dir_template.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  const fs::path dir = dir_template;
  int status = 0;
  try {
    fmt::print(
        "{} messages of {} bytes each way over 12 channels, and {} one-way latency samples at 1 "
        "per ms, through shmcast-bridge (SPUBLISH / SSUBSCRIBE) and Redis on loopback TCP\n",
        setup.messages, setup.payload, setup.latency_messages);
    fmt::print("{:<18} {:>16} {:>16} {:>14} {:>14} {:>10}\n", "Redis side", "out msgs/s",
               "in msgs/s", "latency p50", "latency p99", "in lost");
    for (const bool cluster : {false, true}) {
      const Figures f = measure(dir, cluster, setup);
      fmt::print("{:<18} {:>16.0f} {:>16.0f} {:>11.0f} us {:>11.0f} us {:>10}\n", f.name, f.out,
                 f.in.rate, f.latency.median_us, f.latency.p99_us, f.in.dropped);
      if (f.latency.received < setup.latency_messages) {
        fmt::print("  ({} of {} latency samples arrived)\n", f.latency.received,
                   setup.latency_messages);
      }
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmcast-bridge-bench: {} (logs were in {})\n", e.what(), dir.string());
    status = 1;
  }
  fs::remove_all(dir);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Setup setup;
  CLI::App app{
      "Measures shmcast-bridge's forwarding rate each way and its one-way latency, through one "
      "Redis server and through a three-primary Redis Cluster.",
      "shmcast-bridge-bench"};
  app.add_option("--messages", setup.messages, "messages each way [200000]")
      ->check(CLI::PositiveNumber);
  app.add_option("--payload", setup.payload, "bytes per message [64]")->check(CLI::PositiveNumber);
  app.add_option("--latency-messages", setup.latency_messages, "latency samples [2000]")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  return run(setup);
}
