// Bridge: options, counters, and the out and in forwarding loops through one Redis server.
#include "bridge.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <exception>
#include <stdexcept>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "bridge_timing.hpp"

namespace shmcast::bridge {
namespace {

constexpr std::size_t kEchoCapacity = 1 << 16;
constexpr auto kEchoExpiry = 10s;

bool is_glob(std::string_view name) {
  return name.find_first_of("*?[") != std::string_view::npos;
}

}  // namespace

void check_options(const Options& options) {
  if (options.out.empty() && options.in.empty()) {
    throw std::invalid_argument("nothing to bridge: give --out PATTERN and/or --in PATTERN");
  }
  if (options.sharded || !options.cluster.empty()) {
    for (const auto& name : options.in) {
      if (is_glob(name)) {
        throw std::invalid_argument(fmt::format(
            "--in '{}' is a glob pattern, but {} subscribes with SSUBSCRIBE, which takes "
            "channel names only: list the channels",
            name, options.cluster.empty() ? "--sharded" : "--cluster"));
      }
    }
  }
}

namespace {

// Every counter with its name, in the order both formats print them.
std::array<std::pair<const char*, std::uint64_t>, 13> counters(const Stats& s) {
  return {{{"forwarded_out", s.forwarded_out},
           {"forwarded_in", s.forwarded_in},
           {"dropped_redis_down", s.dropped_redis_down},
           {"dropped_redis_error", s.dropped_redis_error},
           {"dropped_ring_full", s.dropped_ring_full},
           {"dropped_local_error", s.dropped_local_error},
           {"echo_suppressed_out", s.echo_suppressed_out},
           {"echo_suppressed_in", s.echo_suppressed_in},
           {"echo_forgotten", s.echo_forgotten},
           {"reconnects", s.reconnects},
           {"redirects", s.redirects},
           {"slot_map_refreshes", s.slot_map_refreshes},
           {"resubscribes", s.resubscribes}}};
}

}  // namespace

std::string to_json(const Stats& s) {
  std::string out = fmt::format("{{\"state\":\"{}\"", s.state());
  for (const auto& [name, value] : counters(s)) out += fmt::format(",\"{}\":{}", name, value);
  return out + "}";
}

std::string to_log_line(const Stats& s) {
  std::string out = fmt::format("state={}", s.state());
  for (const auto& [name, value] : counters(s)) out += fmt::format(" {}={}", name, value);
  return out;
}

Bridge::Bridge(Options options, Log log)
    : options_(std::move(options)),
      log_(std::move(log)),
      bus_(Bus::connect(options_.bus)),
      local_echoes_(kEchoCapacity, kEchoExpiry),
      redis_echoes_(kEchoCapacity, kEchoExpiry) {
  for (const auto& p : options_.out) out_globs_.emplace_back(p);
  for (const auto& p : options_.in) in_globs_.emplace_back(p);
  // Nothing is sent to Redis before the in side has subscribed there.
  redis_echoes_.reset(false);
  if (!options_.out.empty()) {
    out_subscriber_.emplace(bus_.subscriber());
    out_subscriber_->psubscribe(options_.out);
  }
}

Bridge::~Bridge() = default;

std::optional<std::size_t> Bridge::first_match(const std::vector<detail::Glob>& globs,
                                               std::string_view channel) {
  for (std::size_t i = 0; i < globs.size(); ++i) {
    if (globs[i].match(channel)) return i;
  }
  return std::nullopt;
}

bool Bridge::first_frame(const std::vector<detail::Glob>& globs, std::string_view pattern,
                         std::string_view channel) {
  const auto first = first_match(globs, channel);
  return first && globs[*first].pattern() == pattern;
}

bool Bridge::matches_in(std::string_view channel) const {
  if (options_.sharded || !options_.cluster.empty()) {
    return std::find(options_.in.begin(), options_.in.end(), channel) != options_.in.end();
  }
  return first_match(in_globs_, channel).has_value();
}

Stats Bridge::stats() const {
  Stats s;
  s.stopped = stopped_.load();
  s.connected = (options_.out.empty() || out_connected_.load()) &&
                (options_.in.empty() || in_connected_.load());
  s.forwarded_out = forwarded_out_.get();
  s.forwarded_in = forwarded_in_.get();
  s.dropped_redis_down = dropped_redis_down_.get();
  s.dropped_redis_error = dropped_redis_error_.get();
  s.dropped_ring_full = dropped_ring_full_.get();
  s.dropped_local_error = dropped_local_error_.get();
  s.echo_suppressed_out = echo_suppressed_out_.get();
  s.echo_suppressed_in = echo_suppressed_in_.get();
  s.echo_forgotten = local_echoes_.forgotten() + redis_echoes_.forgotten();
  s.reconnects = reconnects_.get();
  s.redirects = redirects_.get();
  s.slot_map_refreshes = slot_map_refreshes_.get();
  s.resubscribes = resubscribes_.get();
  return s;
}

void Bridge::run(const std::function<bool()>& stop) {
  std::atomic<bool> failed{false};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const std::function<bool()> done = [&] { return failed.load() || stop(); };
  const auto guarded = [&](void (Bridge::*side)(const std::function<bool()>&)) {
    try {
      (this->*side)(done);
    } catch (...) {
      const std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      failed = true;
    }
  };
  const bool cluster = !options_.cluster.empty();
  std::vector<std::thread> threads;
  if (!options_.out.empty()) {
    threads.emplace_back(guarded, cluster ? &Bridge::run_out_cluster : &Bridge::run_out);
  }
  if (!options_.in.empty()) {
    threads.emplace_back(guarded, cluster ? &Bridge::run_in_cluster : &Bridge::run_in);
  }
  for (auto& t : threads) t.join();
  stopped_ = true;
  if (failure) std::rethrow_exception(failure);
}

void Bridge::log_connect_failure(std::string_view side, std::string_view attempt,
                                 const std::string& error, std::string& last_error,
                                 std::chrono::milliseconds delay) {
  if (error == last_error) return;
  last_error = error;
  log_(fmt::format("{}: cannot {}: {}; retrying with back-off (next in {}, at most {})", side,
                   attempt, error, seconds(delay), seconds(options_.max_backoff)));
}

bool Bridge::receive_batch(Subscriber& sub, std::vector<Message>& batch) {
  batch.clear();
  auto first = sub.receive(kPollInterval);
  if (!first) return false;
  batch.push_back(std::move(*first));
  while (batch.size() < kBatch) {
    auto next = sub.try_receive();
    if (!next) break;
    batch.push_back(std::move(*next));
  }
  return true;
}

bool Bridge::to_send(const Message& m, Clock::time_point now) {
  if (m.kind == Kind::gap) {
    dropped_ring_full_.add(static_cast<std::uint64_t>(m.count));
    local_echoes_.mark_lost();
    return false;
  }
  if (m.kind != Kind::pmessage || !first_frame(out_globs_, m.pattern, m.channel)) return false;
  if (local_echoes_.consume(m.channel, m.payload, now)) {
    echo_suppressed_out_.add();
    return false;
  }
  return true;
}

void Bridge::bring_in(std::string_view channel, std::string_view payload, int stream,
                      std::string& last_publish_error) {
  const auto now = Clock::now();
  if (redis_echoes_.consume(channel, payload, now, stream)) {
    echo_suppressed_in_.add();
    return;
  }
  const auto sequence = first_match(out_globs_, channel)
                            ? std::optional(local_echoes_.expect(channel, payload, now))
                            : std::nullopt;
  try {
    bus_.publish(channel, payload);
    forwarded_in_.add();
  } catch (const Error& e) {
    dropped_local_error_.add();
    if (sequence) local_echoes_.forget(*sequence);  // refused: it never reaches the bus
    if (last_publish_error != e.what()) {
      last_publish_error = e.what();
      log_(fmt::format("in: the bus refused a message: {}", last_publish_error));
    }
  }
}

void Bridge::run_out(const std::function<bool()>& stop) {
  Subscriber& sub = *out_subscriber_;
  const std::string_view publish = options_.sharded ? "SPUBLISH" : "PUBLISH";
  const std::string where = options_.redis.display();
  Context redis;
  Backoff backoff(options_.max_backoff);
  auto retry_at = Clock::now();
  bool ever_connected = false;
  std::string last_error;
  std::string last_reply_error;
  std::vector<Message> batch;
  batch.reserve(kBatch);
  std::vector<std::optional<std::uint64_t>> sequences;
  sequences.reserve(kBatch);

  auto connected_at = Clock::now();

  const auto lose = [&](const std::string& why) {
    log_(fmt::format("out: lost the connection to Redis at {}: {}; reconnecting", where, why));
    out_connected_ = false;
    redis.reset();
    redis_echoes_.mark_lost();
    retry_at = Clock::now();
    if (retry_at - connected_at >= kStableAfter) {
      backoff.reset();
    } else {
      retry_at += backoff.next();
    }
  };

  while (!stop()) {
    if (!redis && Clock::now() >= retry_at) {
      try {
        redis = connect_redis(options_.redis);
        if (ever_connected) reconnects_.add();
        ever_connected = true;
        connected_at = Clock::now();
        last_error.clear();
        out_connected_ = true;
        log_(fmt::format("out: connected to Redis at {}", where));
      } catch (const std::runtime_error& e) {
        const auto delay = backoff.next();
        retry_at = Clock::now() + delay;
        log_connect_failure("out", "connect to Redis at " + where, e.what(), last_error, delay);
      }
    }

    if (!receive_batch(sub, batch)) {
      if (redis) {
        if (const auto problem = idle_connection_problem(redis.get())) lose(*problem);
      }
      continue;
    }

    const auto now = Clock::now();
    std::size_t pending = 0;
    sequences.clear();  // of the pending publishes' echo entries, in order
    for (const Message& m : batch) {
      if (!to_send(m, now)) continue;
      if (!redis) {
        dropped_redis_down_.add();
        continue;
      }
      sequences.push_back(matches_in(m.channel)
                              ? std::optional(redis_echoes_.expect(m.channel, m.payload, now))
                              : std::nullopt);
      if (!append_command(redis.get(), {publish, m.channel, m.payload})) {
        throw std::runtime_error("out of memory");
      }
      ++pending;
    }

    for (std::size_t done = 0; done < pending; ++done) {
      Reply reply = next_reply(redis.get());
      if (!reply) {
        dropped_redis_down_.add(pending - done);
        lose(connection_error(redis.get()));
        break;
      }
      if (reply->type != REDIS_REPLY_ERROR) {
        forwarded_out_.add();
        continue;
      }
      dropped_redis_error_.add();
      if (sequences[done]) redis_echoes_.forget(*sequences[done]);  // it never comes back
      if (last_reply_error != text(reply.get())) {
        last_reply_error = text(reply.get());
        log_(fmt::format("out: Redis refused {}: {}", publish, last_reply_error));
      }
    }
  }
  out_connected_ = false;
}

void Bridge::run_in(const std::function<bool()>& stop) {
  const std::string where = options_.redis.display();
  Backoff backoff(options_.max_backoff);
  bool ever_connected = false;
  std::string last_error;
  std::string last_publish_error;
  auto subscribed_at = Clock::now();

  while (!stop()) {
    Context redis;
    try {
      redis = connect_redis(options_.redis);
    } catch (const std::runtime_error& e) {
      const auto delay = backoff.next();
      log_connect_failure("in", "connect to Redis at " + where, e.what(), last_error, delay);
      sleep_unless(delay, stop);
      continue;
    }

    // Messages the out side publishes from now on are remembered; those published before the
    // subscription takes effect never come back, so all of them may be passed over once it has.
    redis_echoes_.reset(true);
    const bool appended = [&] {
      if (!options_.sharded) {
        std::vector<const char*> argv{"PSUBSCRIBE"};
        std::vector<std::size_t> lengths{10};
        for (const auto& p : options_.in) {
          argv.push_back(p.data());
          lengths.push_back(p.size());
        }
        return redisAppendCommandArgv(redis.get(), static_cast<int>(argv.size()), argv.data(),
                                      lengths.data()) == REDIS_OK;
      }
      // One command per channel: in a cluster, channels of different slots cannot share one.
      for (const auto& c : options_.in) {
        if (!append_command(redis.get(), {"SSUBSCRIBE", c})) return false;
      }
      return true;
    }();
    if (!appended) throw std::runtime_error("out of memory");
    std::string error = flush_output(redis.get());
    Pinger pinger;

    const std::string_view confirmation = options_.sharded ? "ssubscribe" : "psubscribe";
    std::size_t unconfirmed = options_.in.size();
    while (error.empty() && !stop()) {
      const auto tick = Clock::now();
      if (pinger.overdue(tick)) {
        error = fmt::format("no answer to PING within {}", seconds(kCommandTimeout));
        continue;
      }
      if (pinger.due(tick)) {
        if (!append_command(redis.get(), {"PING"})) throw std::runtime_error("out of memory");
        error = flush_output(redis.get());
        pinger.sent(tick);
        continue;
      }
      Reply r;
      const ReadStatus status = read_reply(redis.get(), kPollInterval, r);
      if (status == ReadStatus::failed) error = connection_error(redis.get());
      if (status != ReadStatus::reply) continue;
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && text(r->element[0]) == "pong") {
        pinger.answered(Clock::now());
        continue;
      }
      if (r->type == REDIS_REPLY_ERROR) {
        const std::string_view why = text(r.get());
        const bool redirected = why.starts_with("MOVED ") || why.starts_with("ASK ");
        error = redirected ? fmt::format(
                                 "Redis redirected SSUBSCRIBE ({}): the channel's slot is "
                                 "served by another node",
                                 why)
                           : fmt::format("Redis refused {}: {}",
                                         options_.sharded ? "SSUBSCRIBE" : "PSUBSCRIBE", why);
        continue;
      }
      if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) continue;
      const std::string_view kind = text(r->element[0]);
      if (options_.sharded && kind == "sunsubscribe") {
        // Unasked for: the server dropped the subscription, as a cluster does when the channel's
        // slot moves to another node. Nothing more would arrive on this connection.
        error = fmt::format("Redis ended the subscription to '{}' (its slot moved?)",
                            text(r->element[1]));
        continue;
      }
      if (kind == confirmation) {
        if (unconfirmed > 0 && --unconfirmed == 0) {
          redis_echoes_.mark_lost();
          if (ever_connected) reconnects_.add();
          ever_connected = true;
          subscribed_at = Clock::now();
          last_error.clear();
          in_connected_ = true;
          log_(fmt::format("in: connected to Redis at {}, subscribed to {} {}", where,
                           options_.in.size(), options_.sharded ? "channel(s)" : "pattern(s)"));
        }
        continue;
      }
      std::string_view channel;
      std::string_view payload;
      if (kind == "pmessage" && r->elements == 4) {
        channel = text(r->element[2]);
        payload = text(r->element[3]);
        if (!first_frame(in_globs_, text(r->element[1]), channel)) continue;
      } else if (kind == "smessage" && r->elements == 3) {
        channel = text(r->element[1]);
        payload = text(r->element[2]);
      } else {
        continue;
      }
      bring_in(channel, payload, 0, last_publish_error);
    }

    const bool was_stable = in_connected_ && Clock::now() - subscribed_at >= kStableAfter;
    in_connected_ = false;
    redis_echoes_.reset(false);
    if (!error.empty()) {
      if (was_stable) backoff.reset();
      log_(fmt::format("in: lost the connection to Redis at {}: {}; reconnecting", where, error));
      sleep_unless(backoff.next(), stop);
    }
  }
}

}  // namespace shmcast::bridge
