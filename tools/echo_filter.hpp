// EchoFilter: how the bridge recognizes its own messages coming back on one side.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string_view>

namespace shmcast::bridge {

using Clock = std::chrono::steady_clock;

// Recognizes the messages this bridge published on one side when its own subscription on that
// side delivers them back. Neither Redis nor shmcast tells a subscriber who published, so the
// bridge remembers (channel, hash of the payload) of each message it publishes there, in order,
// and drops an arriving message that equals the oldest remembered one. A subscription delivers
// one publisher's messages in the order published, so its own messages come back in the order
// remembered; messages of other publishers in between do not match and are delivered, even with
// the same content, as many times as they were published.
//
// Through a Redis Cluster the messages come back over one subscription per node, so their order
// holds only within a node: each message then belongs to a stream (its channel's hash slot), and
// the order is kept, and looked at, per stream. Without a cluster everything is stream 0.
//
// A remembered message can fail to come back (a full ring, a lost connection). mark_lost() says
// so: the entries remembered until then may be skipped when a later one matches. A publish that
// definitely failed (refused with an error) is forgotten at once with forget(), so that its entry
// cannot take someone else's identical message for the bridge's own. Entries older than the
// expiry, or beyond the capacity, are forgotten and counted: should such a message come back
// after all, it is delivered again as if someone else had published it.
//
// Thread safety: every member may be called from any thread.
class EchoFilter {
 public:
  EchoFilter(std::size_t capacity, std::chrono::milliseconds expiry);

  // Remembers a message about to be published, unless the filter is inactive. Returns its
  // sequence number, for forget().
  std::uint64_t expect(std::string_view channel, std::string_view payload, Clock::time_point now,
                       int stream = 0);
  // True (and forgets it) when an arriving message is the bridge's own, remembered message.
  bool consume(std::string_view channel, std::string_view payload, Clock::time_point now,
               int stream = 0);
  // The message expect() numbered `sequence` was not published: it will not come back.
  void forget(std::uint64_t sequence);
  // The messages remembered so far may never come back.
  void mark_lost();
  // Forgets everything; while inactive, expect() remembers nothing (no subscription will see
  // the messages).
  void reset(bool active);
  [[nodiscard]] std::size_t size() const;
  // How many entries expired or fell beyond the capacity before their message came back.
  [[nodiscard]] std::uint64_t forgotten() const;

 private:
  struct Entry {
    std::uint64_t hash;
    std::uint64_t sequence;
    Clock::time_point published;
    int stream;
  };

  static std::uint64_t hash(std::string_view channel, std::string_view payload);

  std::size_t capacity_;
  std::chrono::milliseconds expiry_;
  mutable std::mutex mutex_;
  std::deque<Entry> entries_;
  std::uint64_t next_sequence_ = 0;
  std::uint64_t lost_before_ = 0;  // entries with a smaller sequence may never come back
  std::uint64_t forgotten_ = 0;
  bool active_ = true;
};

}  // namespace shmcast::bridge
