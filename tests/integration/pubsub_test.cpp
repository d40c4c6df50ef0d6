// Redis Pub/Sub semantics against a real shmcastd: the cases of Redis's tests/unit/pubsub.tcl
// that apply, ported, each run twice, with the subscribers in this process and in other
// processes; then binary safety, empty names and payloads, large payloads and the bus limits.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"
#include "integration/child_process.hpp"
#include "shmcast/shmcast.hpp"

namespace shmcast {

// Kinds print by name in failure messages (GoogleTest finds this by argument lookup, so it
// lives in Kind's namespace).
inline void PrintTo(Kind kind, std::ostream* os) {
  *os << kind_name(kind);
}

namespace {

using Counts = std::vector<std::int64_t>;
using Names = std::vector<std::string>;
using NumSub = std::vector<std::pair<std::string, std::size_t>>;

// How long a frame that must come may take: generous, since a loaded machine is slow.
constexpr std::chrono::milliseconds kWait{5000};
// How long to look for a frame that must not come. A publish writes into the rings before it
// returns, so a frame that leaked is already there when the test looks.
constexpr std::chrono::milliseconds kQuiet{50};

// What a test case drives: a subscriber in this process or in another one.
class Client {
 public:
  virtual ~Client() = default;
  virtual std::size_t subscribe(const Names& names) = 0;
  virtual std::size_t psubscribe(const Names& names) = 0;
  /// No names: everything held, as Subscriber::unsubscribe.
  virtual std::size_t unsubscribe(const Names& names) = 0;
  virtual std::size_t punsubscribe(const Names& names) = 0;
  virtual std::optional<Message> receive(std::chrono::milliseconds timeout) = 0;
  virtual std::size_t subscription_count() = 0;
};

class LocalClient final : public Client {
 public:
  explicit LocalClient(Bus bus) : sub_(bus.subscriber()) {}
  std::size_t subscribe(const Names& names) override { return sub_.subscribe(names); }
  std::size_t psubscribe(const Names& names) override { return sub_.psubscribe(names); }
  std::size_t unsubscribe(const Names& names) override { return sub_.unsubscribe(names); }
  std::size_t punsubscribe(const Names& names) override { return sub_.punsubscribe(names); }
  std::optional<Message> receive(std::chrono::milliseconds timeout) override {
    return sub_.receive(timeout);
  }
  std::size_t subscription_count() override { return sub_.subscription_count(); }

 private:
  Subscriber sub_;
};

class RemoteClient final : public Client {
 public:
  explicit RemoteClient(const Bus& bus) : sub_(bus) {}
  std::size_t subscribe(const Names& names) override { return sub_.subscribe(names); }
  std::size_t psubscribe(const Names& names) override { return sub_.psubscribe(names); }
  std::size_t unsubscribe(const Names& names) override { return sub_.unsubscribe(names); }
  std::size_t punsubscribe(const Names& names) override { return sub_.punsubscribe(names); }
  std::optional<Message> receive(std::chrono::milliseconds timeout) override {
    return sub_.receive(timeout);
  }
  std::size_t subscription_count() override { return sub_.subscription_count(); }

 private:
  test::RemoteSubscriber sub_;
};

// Redis's names, written out here so that a wrong kind_name() cannot hide a wrong kind.
const char* redis_name(Kind kind) {
  switch (kind) {
    case Kind::message: return "message";
    case Kind::pmessage: return "pmessage";
    case Kind::subscribe: return "subscribe";
    case Kind::psubscribe: return "psubscribe";
    case Kind::unsubscribe: return "unsubscribe";
    case Kind::punsubscribe: return "punsubscribe";
    case Kind::gap: return "gap";
  }
  return "(bad kind)";
}

// Printable ASCII as is, other bytes as \xNN, the empty string as "".
std::string printable(std::string_view s) {
  if (s.empty()) return "\"\"";
  std::string out;
  for (const char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b > ' ' && b < 0x7f && b != '\\') {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", b);
    }
  }
  return out;
}

// A frame as Redis's tests write it: "message chan1 hello", "subscribe chan1 1",
// "unsubscribe (nil) 0"; "(none)" when no frame came.
std::string describe(const std::optional<Message>& m) {
  if (!m) return "(none)";
  switch (m->kind) {
    case Kind::message:
      return fmt::format("message {} {}", printable(m->channel), printable(m->payload));
    case Kind::pmessage:
      return fmt::format("pmessage {} {} {}", printable(m->pattern), printable(m->channel),
                         printable(m->payload));
    case Kind::gap: return fmt::format("gap {}", m->count);
    default:
      return fmt::format("{} {} {}", redis_name(m->kind),
                         m->has_name ? printable(m->channel) : "(nil)", m->count);
  }
}

std::string frame(Client& c, std::chrono::milliseconds timeout = kWait) {
  return describe(c.receive(timeout));
}

// Reads one confirmation of `kind` per name, as Redis's __consume_subscribe_messages does:
// subscribe confirmations come in argument order, unsubscribe ones in any order. Checks that
// the call returned the last count, and returns the counts in stream order.
Counts confirmed(Client& c, Kind kind, Names names, std::size_t returned) {
  const bool any_order = kind == Kind::unsubscribe || kind == Kind::punsubscribe;
  Counts counts;
  while (!names.empty()) {
    const auto m = c.receive(kWait);
    if (!m || m->kind != kind || !m->has_name) {
      ADD_FAILURE() << "expected a " << redis_name(kind) << " confirmation, got " << describe(m);
      return counts;
    }
    const auto at = any_order ? std::find(names.begin(), names.end(), m->channel) : names.begin();
    if (at == names.end() || *at != m->channel) {
      ADD_FAILURE() << "confirmation of a name not expected here: " << describe(m);
      return counts;
    }
    names.erase(at);
    counts.push_back(m->count);
  }
  if (!counts.empty()) {
    EXPECT_EQ(static_cast<std::int64_t>(returned), counts.back()) << "the call's return value";
  }
  return counts;
}

Counts subscribe(Client& c, const Names& names) {
  return confirmed(c, Kind::subscribe, names, c.subscribe(names));
}
Counts psubscribe(Client& c, const Names& names) {
  return confirmed(c, Kind::psubscribe, names, c.psubscribe(names));
}
Counts unsubscribe(Client& c, const Names& names) {
  return confirmed(c, Kind::unsubscribe, names, c.unsubscribe(names));
}
Counts punsubscribe(Client& c, const Names& names) {
  return confirmed(c, Kind::punsubscribe, names, c.punsubscribe(names));
}
// UNSUBSCRIBE with no arguments from a client that holds the channels `held`.
Counts unsubscribe_all(Client& c, const Names& held) {
  return confirmed(c, Kind::unsubscribe, held, c.unsubscribe({}));
}
Counts punsubscribe_all(Client& c, const Names& held) {
  return confirmed(c, Kind::punsubscribe, held, c.punsubscribe({}));
}

// The code of the Error that `f` throws, nullopt if it throws none; its message into `what`.
template <class F>
std::optional<Errc> error_of(F&& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (what != nullptr) *what = e.what();
    return e.code();
  }
  return std::nullopt;
}

Names sorted(Names names) {
  std::sort(names.begin(), names.end());
  return names;
}

enum class Place { in_process, other_process };

class PubSub : public ::testing::TestWithParam<Place> {
 protected:
  std::unique_ptr<Client> client(const Bus& bus) const {
    if (GetParam() == Place::in_process) return std::make_unique<LocalClient>(bus);
    return std::make_unique<RemoteClient>(bus);
  }
  std::unique_ptr<Client> client() const { return client(bus_); }
  std::size_t publish(std::string_view channel, std::string_view payload) {
    return bus_.publish(channel, payload);
  }
  NumSub numsub(const Names& names) const { return bus_.numsub(names); }
  Names channels() const { return sorted(bus_.channels()); }
  Names channels(std::string_view pattern) const { return sorted(bus_.channels(pattern)); }

  test::Daemon daemon_;
  Bus bus_ = Bus::connect(daemon_.bus());
};

INSTANTIATE_TEST_SUITE_P(, PubSub, ::testing::Values(Place::in_process, Place::other_process),
                         [](const ::testing::TestParamInfo<Place>& info) {
                           return std::string(info.param == Place::in_process ? "InProcess"
                                                                              : "OtherProcess");
                         });

TEST_P(PubSub, PublishSubscribeBasics) {
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {"chan1", "chan2"}), (Counts{1, 2}));
  EXPECT_EQ(publish("chan1", "hello"), 1U);
  EXPECT_EQ(publish("chan2", "world"), 1U);
  EXPECT_EQ(frame(*rd1), "message chan1 hello");
  EXPECT_EQ(frame(*rd1), "message chan2 world");

  EXPECT_EQ(unsubscribe(*rd1, {"chan1"}), (Counts{1}));
  EXPECT_EQ(publish("chan1", "hello"), 0U);
  EXPECT_EQ(publish("chan2", "world"), 1U);
  EXPECT_EQ(frame(*rd1), "message chan2 world");

  EXPECT_EQ(unsubscribe(*rd1, {"chan2"}), (Counts{0}));
  EXPECT_EQ(publish("chan1", "hello"), 0U);
  EXPECT_EQ(publish("chan2", "world"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, PublishSubscribeWithTwoClients) {
  auto rd1 = client();
  auto rd2 = client();
  EXPECT_EQ(subscribe(*rd1, {"chan1"}), (Counts{1}));
  EXPECT_EQ(subscribe(*rd2, {"chan1"}), (Counts{1}));
  EXPECT_EQ(publish("chan1", "hello"), 2U);
  EXPECT_EQ(frame(*rd1), "message chan1 hello");
  EXPECT_EQ(frame(*rd2), "message chan1 hello");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
  EXPECT_EQ(frame(*rd2, kQuiet), "(none)");
}

TEST_P(PubSub, PublishSubscribeAfterUnsubscribeWithoutArguments) {
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {"chan1", "chan2", "chan3"}), (Counts{1, 2, 3}));
  EXPECT_EQ(unsubscribe_all(*rd1, {"chan1", "chan2", "chan3"}), (Counts{2, 1, 0}));
  EXPECT_EQ(publish("chan1", "hello"), 0U);
  EXPECT_EQ(publish("chan2", "hello"), 0U);
  EXPECT_EQ(publish("chan3", "hello"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
  EXPECT_EQ(numsub({"chan1", "chan2", "chan3"}),
            (NumSub{{"chan1", 0}, {"chan2", 0}, {"chan3", 0}}));
}

TEST_P(PubSub, SubscribeToOneChannelMoreThanOnce) {
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {"chan1", "chan1", "chan1"}), (Counts{1, 1, 1}));
  EXPECT_EQ(numsub({"chan1"}), (NumSub{{"chan1", 1}}));
  EXPECT_EQ(publish("chan1", "hello"), 1U);
  EXPECT_EQ(frame(*rd1), "message chan1 hello");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
  // One unsubscribe undoes all three: a channel is held once.
  EXPECT_EQ(unsubscribe(*rd1, {"chan1"}), (Counts{0}));
  EXPECT_EQ(publish("chan1", "hello"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, UnsubscribeFromNonSubscribedChannels) {
  auto rd1 = client();
  EXPECT_EQ(unsubscribe(*rd1, {"foo", "bar", "quux"}), (Counts{0, 0, 0}));
  EXPECT_EQ(subscribe(*rd1, {"chan1"}), (Counts{1}));
  // With arguments the replies follow the arguments, held or not.
  EXPECT_EQ(rd1->unsubscribe({"foo", "chan1", "bar"}), 0U);
  EXPECT_EQ(frame(*rd1), "unsubscribe foo 1");
  EXPECT_EQ(frame(*rd1), "unsubscribe chan1 0");
  EXPECT_EQ(frame(*rd1), "unsubscribe bar 0");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, PublishPsubscribeBasics) {
  auto rd1 = client();
  EXPECT_EQ(psubscribe(*rd1, {"foo.*", "bar.*"}), (Counts{1, 2}));
  EXPECT_EQ(publish("foo.1", "hello"), 1U);
  EXPECT_EQ(publish("bar.1", "hello"), 1U);
  EXPECT_EQ(publish("foo1", "hello"), 0U);
  EXPECT_EQ(publish("barfoo.1", "hello"), 0U);
  EXPECT_EQ(publish("qux.1", "hello"), 0U);
  EXPECT_EQ(frame(*rd1), "pmessage foo.* foo.1 hello");
  EXPECT_EQ(frame(*rd1), "pmessage bar.* bar.1 hello");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");

  EXPECT_EQ(punsubscribe(*rd1, {"foo.*"}), (Counts{1}));
  EXPECT_EQ(publish("foo.1", "hello"), 0U);
  EXPECT_EQ(publish("bar.1", "hello"), 1U);
  EXPECT_EQ(frame(*rd1), "pmessage bar.* bar.1 hello");

  EXPECT_EQ(punsubscribe(*rd1, {"bar.*"}), (Counts{0}));
  EXPECT_EQ(publish("foo.1", "hello"), 0U);
  EXPECT_EQ(publish("bar.1", "hello"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, PublishPsubscribeWithTwoClients) {
  auto rd1 = client();
  auto rd2 = client();
  EXPECT_EQ(psubscribe(*rd1, {"chan.*"}), (Counts{1}));
  EXPECT_EQ(psubscribe(*rd2, {"chan.*"}), (Counts{1}));
  EXPECT_EQ(publish("chan.foo", "hello"), 2U);
  EXPECT_EQ(frame(*rd1), "pmessage chan.* chan.foo hello");
  EXPECT_EQ(frame(*rd2), "pmessage chan.* chan.foo hello");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
  EXPECT_EQ(frame(*rd2, kQuiet), "(none)");
}

TEST_P(PubSub, PublishPsubscribeAfterPunsubscribeWithoutArguments) {
  auto rd1 = client();
  EXPECT_EQ(psubscribe(*rd1, {"chan1.*", "chan2.*", "chan3.*"}), (Counts{1, 2, 3}));
  EXPECT_EQ(punsubscribe_all(*rd1, {"chan1.*", "chan2.*", "chan3.*"}), (Counts{2, 1, 0}));
  EXPECT_EQ(publish("chan1.hi", "hello"), 0U);
  EXPECT_EQ(publish("chan2.hi", "hello"), 0U);
  EXPECT_EQ(publish("chan3.hi", "hello"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
  EXPECT_EQ(bus_.numpat(), 0U);
}

TEST_P(PubSub, PunsubscribeFromNonSubscribedPatterns) {
  auto rd1 = client();
  EXPECT_EQ(punsubscribe(*rd1, {"foo.*", "bar.*", "quux.*"}), (Counts{0, 0, 0}));
  EXPECT_EQ(psubscribe(*rd1, {"foo.*"}), (Counts{1}));
  EXPECT_EQ(rd1->punsubscribe({"bar.*", "foo.*", "quux.*"}), 0U);
  EXPECT_EQ(frame(*rd1), "punsubscribe bar.* 1");
  EXPECT_EQ(frame(*rd1), "punsubscribe foo.* 0");
  EXPECT_EQ(frame(*rd1), "punsubscribe quux.* 0");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, MixSubscribeAndPsubscribeGivesMessageThenPmessage) {
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {"foo.bar"}), (Counts{1}));
  EXPECT_EQ(psubscribe(*rd1, {"foo.*"}), (Counts{2}));
  EXPECT_EQ(publish("foo.bar", "hello"), 2U) << "one client, counted twice";
  EXPECT_EQ(frame(*rd1), "message foo.bar hello");
  EXPECT_EQ(frame(*rd1), "pmessage foo.* foo.bar hello");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");

  // Two patterns that match: the message first, then one pmessage per pattern (their order
  // between themselves is not fixed).
  EXPECT_EQ(psubscribe(*rd1, {"foo.b*"}), (Counts{3}));
  EXPECT_EQ(publish("foo.bar", "again"), 3U);
  EXPECT_EQ(frame(*rd1), "message foo.bar again");
  EXPECT_EQ(sorted({frame(*rd1), frame(*rd1)}),
            (Names{"pmessage foo.* foo.bar again", "pmessage foo.b* foo.bar again"}));
  EXPECT_EQ(publish("foo.x", "one"), 1U);
  EXPECT_EQ(frame(*rd1), "pmessage foo.* foo.x one");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, PunsubscribeAndUnsubscribeAlwaysReply) {
  auto rd1 = client();
  EXPECT_EQ(rd1->punsubscribe({}), 0U);
  EXPECT_EQ(frame(*rd1), "punsubscribe (nil) 0");
  EXPECT_EQ(rd1->unsubscribe({}), 0U);
  EXPECT_EQ(frame(*rd1), "unsubscribe (nil) 0");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");

  // With no channel held, the one nil reply still counts the patterns.
  EXPECT_EQ(psubscribe(*rd1, {"a*", "b*"}), (Counts{1, 2}));
  EXPECT_EQ(rd1->unsubscribe({}), 2U);
  EXPECT_EQ(frame(*rd1), "unsubscribe (nil) 2");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");

  EXPECT_EQ(subscribe(*rd1, {"c"}), (Counts{3}));
  EXPECT_EQ(punsubscribe_all(*rd1, {"a*", "b*"}), (Counts{2, 1}));
  EXPECT_EQ(rd1->punsubscribe({}), 1U);
  EXPECT_EQ(frame(*rd1), "punsubscribe (nil) 1");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, NumsubReturnsExactCountsInArgumentOrder) {
  EXPECT_EQ(numsub({}), NumSub{});
  EXPECT_EQ(numsub({"abc", "def"}), (NumSub{{"abc", 0}, {"def", 0}}));
  auto rd1 = client();
  auto rd2 = client();
  auto rd3 = client();
  EXPECT_EQ(subscribe(*rd1, {"abc", "def"}), (Counts{1, 2}));
  EXPECT_EQ(subscribe(*rd2, {"abc"}), (Counts{1}));
  // Pattern subscribers are not channel subscribers, even for a pattern with no wildcard.
  EXPECT_EQ(psubscribe(*rd3, {"abc", "a*"}), (Counts{1, 2}));
  EXPECT_EQ(numsub({"abc", "def", "abc", "ghi"}),
            (NumSub{{"abc", 2}, {"def", 1}, {"abc", 2}, {"ghi", 0}}));
  EXPECT_EQ(publish("abc", "x"), 4U) << "two subscribers and two patterns of one client";
}

TEST_P(PubSub, NumpatCountsDistinctPatterns) {
  EXPECT_EQ(bus_.numpat(), 0U);
  auto rd1 = client();
  auto rd2 = client();
  EXPECT_EQ(psubscribe(*rd1, {"foo*", "bar*"}), (Counts{1, 2}));
  EXPECT_EQ(bus_.numpat(), 2U);
  // Patterns compare byte for byte: foo** is another pattern than foo*.
  EXPECT_EQ(psubscribe(*rd2, {"foo*", "foo**"}), (Counts{1, 2}));
  EXPECT_EQ(bus_.numpat(), 3U);
  EXPECT_EQ(subscribe(*rd1, {"foo*"}), (Counts{3})) << "a channel named like a pattern";
  EXPECT_EQ(bus_.numpat(), 3U);
  EXPECT_EQ(punsubscribe(*rd1, {"foo*"}), (Counts{2}));
  EXPECT_EQ(bus_.numpat(), 3U) << "rd2 still holds foo*";
  EXPECT_EQ(punsubscribe(*rd2, {"foo*"}), (Counts{1}));
  EXPECT_EQ(bus_.numpat(), 2U);
  EXPECT_EQ(punsubscribe_all(*rd1, {"bar*"}), (Counts{1}));
  EXPECT_EQ(bus_.numpat(), 1U);
  EXPECT_EQ(punsubscribe_all(*rd2, {"foo**"}), (Counts{0}));
  EXPECT_EQ(bus_.numpat(), 0U);
}

TEST_P(PubSub, PubsubChannelsWithAndWithoutPattern) {
  EXPECT_EQ(channels(), Names{});
  auto rd1 = client();
  auto rd2 = client();
  EXPECT_EQ(subscribe(*rd1, {"abc", "def", ""}), (Counts{1, 2, 3}));
  EXPECT_EQ(subscribe(*rd2, {"abc", "x y"}), (Counts{1, 2}));
  EXPECT_EQ(psubscribe(*rd2, {"abc*", "*"}), (Counts{3, 4}));
  EXPECT_EQ(channels(), (Names{"", "abc", "def", "x y"})) << "channels, never patterns";
  EXPECT_EQ(channels("*"), (Names{"abc", "def", "x y"})) << "* does not match \"\"";
  EXPECT_EQ(channels("a*"), (Names{"abc"}));
  EXPECT_EQ(channels("?bc"), (Names{"abc"}));
  EXPECT_EQ(channels("x[ ]y"), (Names{"x y"}));
  EXPECT_EQ(channels(""), (Names{""})) << "the empty pattern matches the empty channel";
  EXPECT_EQ(channels("zzz*"), Names{});

  EXPECT_EQ(unsubscribe(*rd1, {"abc"}), (Counts{2}));
  EXPECT_EQ(channels("a*"), (Names{"abc"})) << "rd2 still holds abc";
  EXPECT_EQ(unsubscribe(*rd2, {"abc"}), (Counts{3}));
  EXPECT_EQ(channels("a*"), Names{});
  EXPECT_EQ(channels(), (Names{"", "def", "x y"}));
}

TEST_P(PubSub, RegistryEntryGoesWithItsLastSubscriber) {
  auto rd1 = client();
  auto rd2 = client();
  EXPECT_EQ(subscribe(*rd1, {"room"}), (Counts{1}));
  EXPECT_EQ(subscribe(*rd2, {"room", "hall"}), (Counts{1, 2}));
  EXPECT_EQ(psubscribe(*rd2, {"r*"}), (Counts{3}));
  EXPECT_EQ(numsub({"room", "hall"}), (NumSub{{"room", 2}, {"hall", 1}}));

  EXPECT_EQ(unsubscribe(*rd1, {"room"}), (Counts{0}));
  EXPECT_EQ(numsub({"room"}), (NumSub{{"room", 1}}));
  EXPECT_EQ(channels(), (Names{"hall", "room"}));

  // A client that closes loses everything it held; no call tells anyone, so look until the
  // registry shows it (the bound is generous: it is not a speed test).
  rd2.reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline &&
         (!channels().empty() || bus_.numpat() != 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(numsub({"room", "hall"}), (NumSub{{"room", 0}, {"hall", 0}}));
  EXPECT_EQ(channels(), Names{});
  EXPECT_EQ(bus_.numpat(), 0U);
  EXPECT_EQ(publish("room", "anyone?"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, BinaryPayloadsAndNamesArriveByteExact) {
  std::string payload;
  for (int round = 0; round < 2; ++round) {
    for (int b = 0; b < 256; ++b) payload.push_back(static_cast<char>(b));
  }
  payload.append(3, '\0');
  const std::string channel("bin\0ary", 7);
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {channel}), (Counts{1}));
  EXPECT_EQ(psubscribe(*rd1, {"bin?ary"}), (Counts{2}));
  EXPECT_EQ(publish(channel, payload), 2U);

  const auto m = rd1->receive(kWait);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, Kind::message);
  EXPECT_EQ(m->channel, channel);
  EXPECT_EQ(m->payload, payload);
  const auto pm = rd1->receive(kWait);
  ASSERT_TRUE(pm.has_value());
  EXPECT_EQ(pm->kind, Kind::pmessage);
  EXPECT_EQ(pm->pattern, "bin?ary");
  EXPECT_EQ(pm->channel, channel);
  EXPECT_EQ(pm->payload, payload);

  // The NUL is part of the name, not its end.
  EXPECT_EQ(numsub({channel, "bin"}), (NumSub{{channel, 1}, {"bin", 0}}));
  EXPECT_EQ(channels(), (Names{channel}));
  EXPECT_EQ(publish("bin", "x"), 0U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, EmptyPayloadAndEmptyChannelName) {
  auto rd1 = client();
  EXPECT_EQ(rd1->subscribe({""}), 1U);
  EXPECT_EQ(frame(*rd1), "subscribe \"\" 1") << "an empty name is a name, not nil";
  EXPECT_EQ(psubscribe(*rd1, {"*"}), (Counts{2}));
  EXPECT_EQ(numsub({""}), (NumSub{{"", 1}}));

  EXPECT_EQ(publish("", ""), 1U) << "* does not match the empty channel";
  EXPECT_EQ(frame(*rd1), "message \"\" \"\"");
  EXPECT_EQ(publish("x", ""), 1U);
  EXPECT_EQ(frame(*rd1), "pmessage * x \"\"");
  EXPECT_EQ(publish("", "full"), 1U);
  EXPECT_EQ(frame(*rd1), "message \"\" full");
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");

  EXPECT_EQ(rd1->unsubscribe({""}), 1U);
  EXPECT_EQ(frame(*rd1), "unsubscribe \"\" 1");
  EXPECT_EQ(numsub({""}), (NumSub{{"", 0}}));
  EXPECT_EQ(publish("", ""), 0U);
}

TEST_P(PubSub, OneMebibytePayloadArrivesByteExact) {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  test::Daemon big(test::unique_bus("big"),
                   {"--max-payload", "1048576", "--ring-bytes", "4194304"});
  Bus bus = Bus::connect(big.bus());
  EXPECT_EQ(bus.limits().max_payload, kMiB);
  EXPECT_EQ(bus.limits().ring_bytes, 4 * kMiB);
  auto rd1 = client(bus);
  EXPECT_EQ(subscribe(*rd1, {"big"}), (Counts{1}));

  std::string payload(kMiB, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) {
    payload[i] = static_cast<char>((i * 131 + (i >> 12)) & 0xff);
  }
  EXPECT_EQ(bus.publish("big", payload), 1U);
  const auto m = rd1->receive(kWait);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, Kind::message);
  EXPECT_EQ(m->channel, "big");
  ASSERT_EQ(m->payload.size(), kMiB);
  const auto differ = std::mismatch(payload.begin(), payload.end(), m->payload.begin());
  EXPECT_EQ(differ.first - payload.begin(), static_cast<std::ptrdiff_t>(kMiB))
      << "first differing byte";

  payload.push_back('!');
  EXPECT_EQ(error_of([&] { bus.publish("big", payload); }), Errc::payload_too_large);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST_P(PubSub, PayloadOverMaxPayloadIsRefused) {
  const Limits& limits = bus_.limits();
  EXPECT_EQ(limits.max_payload, Limits{}.max_payload) << "the documented default";
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {"p"}), (Counts{1}));

  std::string payload(limits.max_payload, 'x');
  EXPECT_EQ(publish("p", payload), 1U);
  const auto m = rd1->receive(kWait);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload.size(), payload.size());
  EXPECT_EQ(m->payload, payload);

  payload.push_back('x');
  std::string what;
  EXPECT_EQ(error_of([&] { publish("p", payload); }, &what), Errc::payload_too_large);
  EXPECT_NE(what.find(std::to_string(limits.max_payload)), std::string::npos) << what;
  EXPECT_NE(what.find("--max-payload"), std::string::npos) << what;
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)") << "nothing of a refused message arrives";
}

TEST_P(PubSub, NamesOverTheLimitsAreRefused) {
  const Limits& limits = bus_.limits();
  EXPECT_EQ(limits.max_channel, Limits{}.max_channel) << "the documented default";
  EXPECT_EQ(limits.max_pattern, Limits{}.max_pattern) << "the documented default";
  const std::string longest(limits.max_channel, 'c');
  const std::string too_long(limits.max_channel + 1, 'c');
  auto rd1 = client();
  EXPECT_EQ(subscribe(*rd1, {longest}), (Counts{1}));
  EXPECT_EQ(publish(longest, "fits"), 1U);
  EXPECT_EQ(frame(*rd1), "message " + longest + " fits");

  std::string what;
  EXPECT_EQ(error_of([&] { publish(too_long, "x"); }, &what), Errc::channel_too_long);
  EXPECT_NE(what.find(std::to_string(limits.max_channel)), std::string::npos) << what;
  EXPECT_NE(what.find("--max-channel"), std::string::npos) << what;
  EXPECT_EQ(error_of([&] { rd1->subscribe({too_long}); }), Errc::channel_too_long);

  const std::string longest_pattern(limits.max_pattern, '*');
  EXPECT_EQ(error_of([&] { rd1->psubscribe({longest_pattern + "*"}); }, &what),
            Errc::pattern_too_long);
  EXPECT_NE(what.find("--max-pattern"), std::string::npos) << what;
  EXPECT_EQ(psubscribe(*rd1, {longest_pattern}), (Counts{2}));
  EXPECT_EQ(rd1->subscription_count(), 2U) << "a refused name is not held";
  EXPECT_EQ(numsub({too_long}), (NumSub{{too_long, 0}}));
  EXPECT_EQ(channels(), (Names{longest}));
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)") << "a refused call puts no frame in the stream";
}

TEST_P(PubSub, LimitsAreTheCoordinatorsSettings) {
  test::Daemon small(test::unique_bus("small"),
                     {"--max-channel", "16", "--max-pattern", "8", "--max-payload", "100",
                      "--max-subscriptions", "3"});
  Bus bus = Bus::connect(small.bus());
  EXPECT_EQ(bus.limits().max_channel, 16U);
  EXPECT_EQ(bus.limits().max_pattern, 8U);
  EXPECT_EQ(bus.limits().max_payload, 100U);
  EXPECT_EQ(bus.limits().max_subscriptions, 3U);

  auto rd1 = client(bus);
  EXPECT_EQ(subscribe(*rd1, {std::string(16, 'a')}), (Counts{1}));
  EXPECT_EQ(error_of([&] { rd1->subscribe({std::string(17, 'a')}); }), Errc::channel_too_long);
  EXPECT_EQ(error_of([&] { bus.publish(std::string(17, 'a'), "x"); }), Errc::channel_too_long);
  EXPECT_EQ(psubscribe(*rd1, {std::string(8, '*')}), (Counts{2}));
  EXPECT_EQ(error_of([&] { rd1->psubscribe({std::string(9, '*')}); }), Errc::pattern_too_long);
  EXPECT_EQ(bus.publish(std::string(16, 'a'), std::string(100, 'p')), 2U);
  EXPECT_EQ(frame(*rd1), "message aaaaaaaaaaaaaaaa " + std::string(100, 'p'));
  EXPECT_EQ(frame(*rd1), "pmessage ******** aaaaaaaaaaaaaaaa " + std::string(100, 'p'));
  EXPECT_EQ(error_of([&] { bus.publish("b", std::string(101, 'p')); }), Errc::payload_too_large);

  EXPECT_EQ(subscribe(*rd1, {"c"}), (Counts{3}));
  EXPECT_EQ(error_of([&] { rd1->subscribe({"d"}); }), Errc::too_many_subscriptions);
  EXPECT_EQ(subscribe(*rd1, {"c"}), (Counts{3})) << "a channel already held takes no new room";
  EXPECT_EQ(rd1->subscription_count(), 3U);
  EXPECT_EQ(frame(*rd1, kQuiet), "(none)");
}

TEST(PubSubKinds, KindNamesAreRedisNames) {
  for (const Kind k : {Kind::message, Kind::pmessage, Kind::subscribe, Kind::psubscribe,
                       Kind::unsubscribe, Kind::punsubscribe, Kind::gap}) {
    EXPECT_STREQ(kind_name(k), redis_name(k));
  }
}

}  // namespace
}  // namespace shmcast
