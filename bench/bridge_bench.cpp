// shmcast-bridge-bench: the forwarding rate of shmcast-bridge, each way. It starts a private
// redis-server on a unix socket in a temporary directory, a private shmcastd, and the
// shmcast-bridge built next to it, then
//   out: publishes N messages on the bus and times until a Redis subscriber has all of them;
//   in:  pipelines N PUBLISH commands to Redis and times until a bus subscriber has them.
// Everything it started is stopped by pid at the end, and the directory removed.

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "shmcast/shmcast.hpp"
#include "support/process.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using shmcast::testing::output_to;
using shmcast::testing::Process;

std::string program_dir() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
}

class Redis {
 public:
  explicit Redis(const std::string& socket) : c_(redisConnectUnix(socket.c_str())) {
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
  // Waiting longer than `t` for a reply fails.
  void timeout(std::chrono::seconds t) { redisSetTimeout(c_, timeval{t.count(), 0}); }

 private:
  redisContext* c_;
};

template <typename F>
void wait_until(F ready, const std::string& what) {
  const auto deadline = Clock::now() + 10s;
  while (!ready()) {
    if (Clock::now() > deadline) throw std::runtime_error(what + " did not start within 10 s");
    std::this_thread::sleep_for(10ms);
  }
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Setup {
  std::uint64_t messages = 200000;
  std::size_t payload = 64;
};

// Waits until the bridge is connected both ways: its --in pattern shows in Redis, and a
// message published on the bus every 20 ms reaches a Redis subscriber.
void wait_for_bridge(shmcast::Bus& bus, const std::string& socket) {
  Redis query(socket);
  wait_until(
      [&] {
        query.append({"PUBSUB", "NUMPAT"});
        redisReply* reply = query.next();
        const bool subscribed = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
        freeReplyObject(reply);
        return subscribed;
      },
      "shmcast-bridge's subscription in Redis");
  Redis sub(socket);
  sub.append({"SUBSCRIBE", "bench.warm"});
  sub.skip();
  sub.timeout(10s);
  std::atomic<bool> seen{false};
  std::thread publisher([&] {
    while (!seen) {
      bus.publish("bench.warm", "warm-up");
      std::this_thread::sleep_for(20ms);
    }
  });
  sub.skip();
  seen = true;
  publisher.join();
}

// Bus -> Redis. The bridge's subscriber is the only one on the channel, so a publish that
// returns 0 found its ring full and is retried: the rate is what the bridge sustains.
double bench_out(shmcast::Bus& bus, const std::string& socket, const Setup& setup) {
  Redis sub(socket);
  sub.append({"SUBSCRIBE", "bench.out"});
  sub.skip();
  sub.timeout(10s);
  const std::string payload(setup.payload, 'o');
  std::uint64_t received = 0;
  Clock::time_point last;
  std::thread reader([&] {
    try {
      for (; received < setup.messages; ++received) sub.skip();
      last = Clock::now();
    } catch (const std::runtime_error&) {
      // reported below from the count
    }
  });
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < setup.messages; ++i) {
    while (bus.publish("bench.out", payload) == 0) std::this_thread::yield();
  }
  reader.join();
  if (received < setup.messages) {
    throw std::runtime_error(
        fmt::format("Redis received {} of {} messages", received, setup.messages));
  }
  return static_cast<double>(setup.messages) / seconds_between(start, last);
}

struct InResult {
  double rate = 0;
  std::uint64_t received = 0;
  std::uint64_t dropped = 0;
};

// Redis -> bus, with PUBLISH pipelined 1000 at a time. Neither Redis nor the bridge waits for a
// slow reader, so the local subscriber may lose messages in its full ring; they are counted.
InResult bench_in(shmcast::Bus& bus, const std::string& socket, const Setup& setup) {
  shmcast::Subscriber sub = bus.subscriber();
  sub.subscribe({"bench.in"});
  (void)sub.receive(1s);  // the confirmation
  InResult result;
  Clock::time_point last;
  std::thread reader([&] {
    while (result.received + result.dropped < setup.messages) {
      const auto m = sub.receive(2s);
      if (!m) break;
      if (m->kind == shmcast::Kind::gap) result.dropped += static_cast<std::uint64_t>(m->count);
      if (m->kind != shmcast::Kind::message) continue;
      ++result.received;
      last = Clock::now();
    }
  });
  Redis publisher(socket);
  const std::string payload(setup.payload, 'i');
  const auto start = Clock::now();
  constexpr std::uint64_t kPipeline = 1000;
  for (std::uint64_t sent = 0; sent < setup.messages;) {
    const std::uint64_t batch = std::min(kPipeline, setup.messages - sent);
    for (std::uint64_t i = 0; i < batch; ++i) publisher.append({"PUBLISH", "bench.in", payload});
    for (std::uint64_t i = 0; i < batch; ++i) publisher.skip();
    sent += batch;
  }
  reader.join();
  result.rate = static_cast<double>(result.received) / seconds_between(start, last);
  return result;
}

int run(const Setup& setup) {
  std::string dir_template = "/tmp/shmcast-bridge-bench-XXXXXX";
  if (::mkdtemp(dir_template.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  const std::filesystem::path dir = dir_template;
  const std::string socket = dir / "redis.sock";
  const std::string bus_name = fmt::format("bridge-bench-{}", ::getpid());
  const std::string bin = program_dir();
  int status = 0;
  try {
    Process redis({"redis-server", "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
                   "--save", "", "--appendonly", "no"},
                  output_to(dir / "redis.log"));
    wait_until(
        [&] {
          try {
            Redis probe(socket);
            return true;
          } catch (const std::runtime_error&) {
            return false;
          }
        },
        "redis-server");
    Process daemon({bin + "/shmcastd", "--bus", bus_name}, output_to(dir / "shmcastd.log"));
    std::optional<shmcast::Bus> bus;
    wait_until(
        [&] {
          try {
            bus.emplace(shmcast::Bus::connect(bus_name));
            return true;
          } catch (const shmcast::Error&) {
            return false;
          }
        },
        "shmcastd");
    Process bridge({bin + "/shmcast-bridge", "--bus", bus_name, "--redis", "unix://" + socket,
                    "--out", "bench.*", "--in", "bench.in"},
                   output_to(dir / "bridge.log"));
    wait_for_bridge(*bus, socket);

    fmt::print(
        "{} messages of {} bytes each way, through shmcast-bridge and redis-server on a "
        "unix socket\n",
        setup.messages, setup.payload);
    const double out = bench_out(*bus, socket, setup);
    fmt::print("out (bus -> Redis, PUBLISH pipelined): {:.0f} msgs/s\n", out);
    const InResult in = bench_in(*bus, socket, setup);
    fmt::print(
        "in  (Redis -> bus):                    {:.0f} msgs/s ({} received, {} lost in "
        "the subscriber's full ring)\n",
        in.rate, in.received, in.dropped);
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmcast-bridge-bench: {} (logs were in {})\n", e.what(), dir.string());
    status = 1;
  }
  std::filesystem::remove_all(dir);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Setup setup;
  CLI::App app{"Measures shmcast-bridge's forwarding rate each way against a private redis-server.",
               "shmcast-bridge-bench"};
  app.add_option("--messages", setup.messages, "messages each way [200000]")
      ->check(CLI::PositiveNumber);
  app.add_option("--payload", setup.payload, "bytes per message [64]")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  return run(setup);
}
