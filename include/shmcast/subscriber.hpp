// A subscriber: one client of the bus with its own ring, in Redis's subscribed mode.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmcast/export.hpp"
#include "shmcast/loan.hpp"
#include "shmcast/message.hpp"
#include "shmcast/wait.hpp"

namespace shmcast {

namespace detail {
class SubscriberState;
}
class Bus;

/// A client that owns one ring and holds a set of channels and a set of patterns.
///
/// Confirmations are frames of the stream, as in Redis: subscribe("a", "b") puts
/// [subscribe a 1] and [subscribe b 2] into the stream, before any message the new
/// subscriptions route. subscribe() returns once the registry shows the subscriptions, so
/// every publish that starts after it returns, from any process, reaches this subscriber.
/// Confirmations wait in this process, not in the ring, until the reader reaches them: one
/// that (un)subscribes over and over without reading keeps them all in memory, as a Redis
/// connection keeps its unread replies.
///
/// Thread safety: one thread at a time (like one Redis connection); move it between threads
/// freely. Destroying it (or the process dying) removes all its subscriptions.
class SHMCAST_EXPORT Subscriber {
 public:
  /// Each returns the client's channels + patterns after the call, however full the ring is:
  /// confirmations take no room in it. Throws Error: channel_too_long / pattern_too_long,
  /// too_many_subscriptions, registry_full, coordinator_gone.
  std::size_t subscribe(std::span<const std::string> channels);
  std::size_t psubscribe(std::span<const std::string> patterns);
  /// With no names: everything held (one confirmation each; one nil confirmation if none).
  std::size_t unsubscribe(std::span<const std::string> channels = {});
  std::size_t punsubscribe(std::span<const std::string> patterns = {});

  std::size_t subscribe(std::initializer_list<std::string> channels) {
    return subscribe(std::span<const std::string>(channels.begin(), channels.size()));
  }
  std::size_t psubscribe(std::initializer_list<std::string> patterns) {
    return psubscribe(std::span<const std::string>(patterns.begin(), patterns.size()));
  }
  std::size_t unsubscribe(std::initializer_list<std::string> channels) {
    return unsubscribe(std::span<const std::string>(channels.begin(), channels.size()));
  }
  std::size_t punsubscribe(std::initializer_list<std::string> patterns) {
    return punsubscribe(std::span<const std::string>(patterns.begin(), patterns.size()));
  }

  /// The next frame, waiting at most `timeout` (negative: no limit) as `wait` says; nullopt on
  /// timeout. A loaned payload is copied into the Message (listen() hands it without a copy).
  std::optional<Message> receive(std::chrono::nanoseconds timeout, Wait wait = Wait::adaptive);
  /// The next frame if one is ready, without waiting.
  std::optional<Message> try_receive();

  /// The callback loop: calls `handler` for every frame, without copying it, until the handler
  /// returns false or `timeout` passes with no frame (negative: no limit). Returns the number
  /// of frames handled. A loaned payload is handed in place, in the publisher's pool. The
  /// handler must not call this subscriber's other members, but keep(). Between
  /// frames it waits as `wait` says, as receive() does.
  std::size_t listen(const std::function<bool(const MessageView&)>& handler,
                     std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1),
                     Wait wait = Wait::adaptive);

  /// Keeps the payload of the frame a listen() handler is given, past the handler (the one
  /// member a handler may call). A loaned payload (Bus::loan) stays in the publisher's pool,
  /// read-only and valid until the Payload is reset or destroyed, from any thread; it takes one
  /// of the connection's Limits::max_holds holds (throws Error(too_many_holds) when all are
  /// taken) and keeps its chunk from returning to the publisher, so keep few and briefly. Any
  /// other payload is copied.
  [[nodiscard]] Payload keep(const MessageView& frame);

  /// Channels + patterns held now.
  [[nodiscard]] std::size_t subscription_count() const;
  /// Messages dropped so far because this subscriber's ring was full.
  [[nodiscard]] std::uint64_t dropped() const;

  /// A file descriptor for an event loop (poll, epoll, select, asyncio): it reports readable
  /// (POLLIN) when frames may be waiting: messages, gaps, and the confirmations of
  /// (p)(un)subscribe() calls. It is level-like: it stays readable until a read finds nothing.
  /// So, at each wake-up, drain: call receive(std::chrono::nanoseconds(0)) (or try_receive())
  /// until it returns nothing; after that the fd is not readable again until a new frame comes.
  /// Stopping before that is fine with level-triggered polling (poll, plain EPOLLIN, asyncio's
  /// add_reader): the fd stays readable and the loop comes back; with EPOLLET, always drain to
  /// the end. A wake-up may find nothing (a frame a read took first); that drain ends at once.
  ///
  /// Only poll it: never read, write or close it. It belongs to the subscriber, moves with it,
  /// and is closed when the subscriber is destroyed (take it out of an epoll set first). Every
  /// call returns the same descriptor. Throws Error (system) if no eventfd or thread can be made.
  ///
  /// Cost: the first call starts one thread for this subscriber, which sleeps on the ring's futex
  /// in its place and writes an eventfd (no socket) when a record is committed. Measured with
  /// shmcast-fd-bench on a 2-vCPU machine, one message a millisecond: the extra thread hop adds
  /// about 6 us to a wake-up at the median (p50 21 us against 15 us for receive()), and the
  /// subscriber's process uses about 20 us of CPU per message. Idle, the thread wakes once a
  /// second (a guard against a wake-up lost to an overwritten ring; a publisher that died
  /// between its commit and its wake-up is covered by the coordinator, which wakes sleepers on
  /// each death), so a long epoll_wait on the fd costs about 20 us of CPU per second. After a
  /// wake-up, the drain that finds nothing pays two system calls to re-arm. Once fd() was
  /// called, receive() and listen() wait on the fd too (unless they spin), with the same added
  /// latency.
  [[nodiscard]] int fd() const;

  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;
  ~Subscriber();

 private:
  friend class Bus;
  explicit Subscriber(std::unique_ptr<detail::SubscriberState> state);
  std::unique_ptr<detail::SubscriberState> state_;
};

}  // namespace shmcast
