// shmcast: the command line client of a bus. It speaks like redis-cli so that a script written
// against `redis-cli publish / subscribe / pubsub` keeps its meaning: when stdout is not a
// terminal, replies print exactly as redis-cli prints them there (one element per line,
// integers bare, nil as an empty line); on a terminal, as redis-cli's human format
// (`1) "subscribe"`). --raw and --no-raw force either, as they do for redis-cli.

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "shmcast/shmcast.hpp"
#include "tool_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace shmcast::tool;
using Clock = std::chrono::steady_clock;

// One element of a reply as redis-cli sees it. shmcast's replies are never nested.
struct Element {
  enum class Type { string, integer, nil };
  Type type = Type::string;
  std::string text;
  long long integer = 0;

  static Element string(std::string text) { return {Type::string, std::move(text), 0}; }
  static Element number(long long value) { return {Type::integer, {}, value}; }
  static Element nil() { return {Type::nil, {}, 0}; }
};

// A reply: one scalar, or an array (possibly empty, which redis-cli prints differently).
struct Reply {
  bool array = false;
  std::vector<Element> elements;

  static Reply scalar(Element element) { return {false, {std::move(element)}}; }
  static Reply list(std::vector<Element> elements) { return {true, std::move(elements)}; }
};

// redis-cli's raw format (cliFormatReplyRaw): elements joined by newlines, nil as nothing, and
// one newline after the reply, so an empty array is one empty line.
std::string format_raw(const Reply& reply) {
  std::string out;
  for (std::size_t i = 0; i < reply.elements.size(); ++i) {
    if (i > 0) out += '\n';
    const Element& e = reply.elements[i];
    switch (e.type) {
      case Element::Type::string: out += e.text; break;
      case Element::Type::integer: fmt::format_to(std::back_inserter(out), "{}", e.integer); break;
      case Element::Type::nil: break;
    }
  }
  out += '\n';
  return out;
}

void append_human(std::string& out, const Element& e) {
  switch (e.type) {
    case Element::Type::string: append_quoted(out, e.text); break;
    case Element::Type::integer:
      fmt::format_to(std::back_inserter(out), "(integer) {}", e.integer);
      break;
    case Element::Type::nil: out += "(nil)"; break;
  }
  out += '\n';
}

// redis-cli's terminal format (cliFormatReplyTTY) for flat replies: array indexes are
// right-aligned to the width of the largest one.
std::string format_human(const Reply& reply) {
  std::string out;
  if (!reply.array) {
    append_human(out, reply.elements.front());
    return out;
  }
  if (reply.elements.empty()) return "(empty array)\n";
  const std::size_t width = fmt::formatted_size("{}", reply.elements.size());
  for (std::size_t i = 0; i < reply.elements.size(); ++i) {
    fmt::format_to(std::back_inserter(out), "{:>{}}) ", i + 1, width);
    append_human(out, reply.elements[i]);
  }
  return out;
}

// Writes replies to stdout, flushed one by one so a subscriber's frames reach a pipe at once.
class Output {
 public:
  explicit Output(bool human) : human_(human) {}

  [[nodiscard]] bool human() const { return human_; }
  void reply(const Reply& r) const { write_stdout(human_ ? format_human(r) : format_raw(r)); }

 private:
  bool human_;
};

enum class Command { publish, subscribe, psubscribe, channels, numsub, numpat };

struct Invocation {
  std::string bus;
  bool bus_given = false;
  long long repeat = 1;
  double interval = 0;
  bool stdin_last = false;
  bool raw = false;
  bool no_raw = false;
  double wait = 0;          // seconds to wait for the bus's coordinator; 0 = the library's default
  std::uint64_t count = 0;  // subscribe: stop after this many messages; 0 = no limit
  double timeout = 0;       // subscribe: stop after this many seconds; 0 = no limit
  Command command = Command::publish;
  std::vector<std::string> args;
};

struct Arity {
  const char* name;
  const char* usage;
  std::size_t min;
  std::size_t max;
};

Arity arity(Command command) {
  constexpr std::size_t any = std::numeric_limits<std::size_t>::max();
  switch (command) {
    case Command::publish: return {"publish", "CHANNEL MESSAGE", 2, 2};
    case Command::subscribe: return {"subscribe", "CHANNEL...", 1, any};
    case Command::psubscribe: return {"psubscribe", "PATTERN...", 1, any};
    case Command::channels: return {"pubsub channels", "[PATTERN]", 0, 1};
    case Command::numsub: return {"pubsub numsub", "[CHANNEL...]", 0, any};
    case Command::numpat: return {"pubsub numpat", "no argument", 0, 0};
  }
  return {"?", "?", 0, 0};
}

void check_arity(const Invocation& inv) {
  const Arity a = arity(inv.command);
  const std::size_t given = inv.args.size() + (inv.stdin_last ? 1 : 0);
  if (given >= a.min && given <= a.max) return;
  throw UsageError(fmt::format("'{}' takes {}, got {} argument{}{}", a.name, a.usage, given,
                               given == 1 ? "" : "s", inv.stdin_last ? " (one from -x)" : ""));
}

// Reads all of stdin, binary-safe. More than `limit` bytes is an error, found without reading
// an endless stream to its end.
std::string read_stdin(std::uint64_t limit, const std::string& bus) {
  std::string data;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n == 0) return data;
    if (n < 0) {
      if (errno == EINTR && !stop_requested()) continue;
      throw std::runtime_error(fmt::format("cannot read standard input: {}", std::strerror(errno)));
    }
    data.append(buffer, static_cast<std::size_t>(n));
    if (data.size() > limit) {
      throw shmcast::Error(
          shmcast::Errc::payload_too_large,
          fmt::format("the message on stdin is over bus '{}''s max_payload limit of {} bytes: "
                      "send a smaller one, or start shmcastd with a larger --max-payload",
                      bus, limit));
    }
  }
}

Reply frame_reply(const shmcast::Message& m) {
  switch (m.kind) {
    case shmcast::Kind::message:
      return Reply::list(
          {Element::string("message"), Element::string(m.channel), Element::string(m.payload)});
    case shmcast::Kind::pmessage:
      return Reply::list({Element::string("pmessage"), Element::string(m.pattern),
                          Element::string(m.channel), Element::string(m.payload)});
    default:
      return Reply::list({Element::string(shmcast::kind_name(m.kind)),
                          m.has_name ? Element::string(m.channel) : Element::nil(),
                          Element::number(m.count)});
  }
}

void run_subscribe(shmcast::Bus& bus, const Invocation& inv, const Output& out) {
  shmcast::Subscriber sub = bus.subscriber();
  if (inv.command == Command::psubscribe) {
    sub.psubscribe(inv.args);
  } else {
    sub.subscribe(inv.args);
  }
  if (out.human()) write_stdout("Reading messages... (press Ctrl-C to quit)\n");

  const auto deadline = inv.timeout > 0
                            ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(inv.timeout))
                            : Clock::time_point::max();
  std::uint64_t messages = 0;
  // Waits in poll() on the subscriber's fd and the stop pipe: an idle subscriber wakes for
  // nothing but a frame, a signal or the deadline.
  std::array<pollfd, 2> waits{pollfd{sub.fd(), POLLIN, 0}, pollfd{stop_fd(), POLLIN, 0}};
  while (!stop_requested()) {
    const auto message = sub.receive(std::chrono::nanoseconds(0));
    if (!message) {
      const auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) return;
      const int ms =
          deadline == Clock::time_point::max()
              ? -1
              : static_cast<int>(std::min<long long>(
                    std::chrono::ceil<std::chrono::milliseconds>(left).count(), INT_MAX));
      if (::poll(waits.data(), waits.size(), ms) < 0 && errno != EINTR) {
        throw std::runtime_error(fmt::format("cannot wait for messages: {}", std::strerror(errno)));
      }
      continue;
    }
    if (message->kind == shmcast::Kind::gap) {
      // Not a Redis frame: a script reading stdout must not mistake it for a message.
      fmt::print(stderr,
                 "shmcast: {} message{} dropped here because this subscriber's ring ({} bytes) "
                 "was full: read faster, or start shmcastd with a larger --ring-bytes\n",
                 message->count, message->count == 1 ? " was" : "s were", bus.limits().ring_bytes);
      continue;
    }
    out.reply(frame_reply(*message));
    const bool is_message =
        message->kind == shmcast::Kind::message || message->kind == shmcast::Kind::pmessage;
    if (is_message && inv.count > 0 && ++messages >= inv.count) return;
  }
}

void run_once(shmcast::Bus& bus, const Invocation& inv, const Output& out) {
  switch (inv.command) {
    case Command::publish:
      out.reply(Reply::scalar(
          Element::number(static_cast<long long>(bus.publish(inv.args[0], inv.args[1])))));
      return;
    case Command::subscribe:
    case Command::psubscribe: run_subscribe(bus, inv, out); return;
    case Command::channels: {
      auto names = inv.args.empty() ? bus.channels() : bus.channels(inv.args[0]);
      // Redis gives no order; sorted output is easier to read and to compare.
      std::sort(names.begin(), names.end());
      std::vector<Element> elements;
      for (auto& name : names) elements.push_back(Element::string(std::move(name)));
      out.reply(Reply::list(std::move(elements)));
      return;
    }
    case Command::numsub: {
      std::vector<Element> elements;
      for (auto& [name, count] : bus.numsub(inv.args)) {
        elements.push_back(Element::string(std::move(name)));
        elements.push_back(Element::number(static_cast<long long>(count)));
      }
      out.reply(Reply::list(std::move(elements)));
      return;
    }
    case Command::numpat:
      out.reply(Reply::scalar(Element::number(static_cast<long long>(bus.numpat()))));
      return;
  }
}

int run(Invocation inv) {
  const std::string bus_name = inv.bus_given ? inv.bus : shmcast::default_bus_name();
  shmcast::check_bus_name(bus_name);
  check_arity(inv);
  shmcast::ConnectOptions options;
  if (inv.wait > 0) {
    options.request_timeout =
        std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>(inv.wait));
  }
  shmcast::Bus bus = shmcast::Bus::connect(bus_name, options);

  if (inv.stdin_last) {
    // Only a message has a size limit worth stopping the read for; names are checked by the
    // library against their own limits once read.
    const bool is_payload = inv.command == Command::publish && inv.args.size() == 1;
    inv.args.push_back(read_stdin(
        is_payload ? bus.limits().max_payload : std::numeric_limits<std::uint64_t>::max(),
        bus_name));
  }
  if (inv.command == Command::publish && inv.args[1].size() > bus.limits().max_payload) {
    throw shmcast::Error(
        shmcast::Errc::payload_too_large,
        fmt::format("the message of {} bytes is over bus '{}''s max_payload limit of {} bytes: "
                    "send a smaller one, or start shmcastd with a larger --max-payload",
                    inv.args[1].size(), bus_name, bus.limits().max_payload));
  }

  const Output out(inv.no_raw || (!inv.raw && ::isatty(STDOUT_FILENO) == 1));
  for (long long i = 0; inv.repeat < 0 || i < inv.repeat; ++i) {
    if (stop_requested()) break;
    if (i > 0 && inv.interval > 0) {
      sleep_unless_stopped(std::chrono::duration<double>(inv.interval));
    }
    run_once(bus, inv, out);
  }
  return 0;
}

// CLI11 knows only the options before the command; the command and its arguments come after.
class CommandUsage : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App* /*app*/, std::string name) const override {
    return "Usage: " + name + " [OPTIONS] COMMAND [ARG...]\n";
  }
};

constexpr const char* kCommands =
    "Commands (case-insensitive). Every argument after the command is taken verbatim, as\n"
    "redis-cli takes it, whatever its first byte and whatever brackets or commas it holds, so\n"
    "options go before the command:\n"
    "  publish CHANNEL MESSAGE       publish MESSAGE; prints the number of deliveries\n"
    "  subscribe CHANNEL...          print confirmations, then every message, until Ctrl-C\n"
    "                                (or --count, or --timeout)\n"
    "  psubscribe PATTERN...         the same for glob patterns\n"
    "  pubsub channels [PATTERN]     channels with subscribers (those matching PATTERN)\n"
    "  pubsub numsub [CHANNEL...]    each channel, then its number of subscribers\n"
    "  pubsub numpat                 the number of distinct patterns with subscribers\n"
    "\n"
    "Examples:\n"
    "  shmcast subscribe news                   print news messages until Ctrl-C\n"
    "  shmcast --count 1 --timeout 5 subscribe news\n"
    "                                           wait at most 5 s for one news message\n"
    "  shmcast subscribe -x '[a,b]'             channels '-x' and '[a,b]', as in redis-cli\n"
    "  shmcast publish news hello               prints how many subscribers got it\n"
    "  shmcast -x publish news < file           publish the file's bytes as the message\n"
    "  shmcast pubsub numsub news               news, then its number of subscribers";

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return text;
}

// Reads the command and its arguments (`words`, after the global options) into `inv`.
void parse_command(std::vector<std::string> words, Invocation& inv) {
  if (words.empty()) throw UsageError("no command given");
  const std::string word = words.front();
  const std::string name = lowercase(word);
  words.erase(words.begin());
  if (name == "publish" || name == "subscribe" || name == "psubscribe") {
    inv.command = name == "publish"     ? Command::publish
                  : name == "subscribe" ? Command::subscribe
                                        : Command::psubscribe;
    inv.args = std::move(words);
    return;
  }
  if (name == "pubsub") {
    const std::string sub = words.empty() ? std::string() : lowercase(words.front());
    if (sub == "channels") {
      inv.command = Command::channels;
    } else if (sub == "numsub") {
      inv.command = Command::numsub;
    } else if (sub == "numpat") {
      inv.command = Command::numpat;
    } else {
      throw UsageError(words.empty() ? "'pubsub' needs channels, numsub or numpat"
                                     : fmt::format("unknown pubsub subcommand '{}': use channels, "
                                                   "numsub or numpat",
                                                   words.front()));
    }
    inv.args.assign(words.begin() + 1, words.end());
    return;
  }
  // prefix_command() leaves an unknown option where the command should be.
  throw UsageError(
      fmt::format("unknown {} '{}'", word.starts_with('-') ? "option" : "command", word));
}

// The numeric options as typed: CLI11 only collects them, so that a bad value gets one short
// line that says what is allowed.
struct OptionText {
  std::string repeat;
  std::string interval;
  std::string count;
  std::string timeout;
  std::string wait;
};

// Longer than anyone waits, short enough that a deadline this far ahead is a valid time point.
constexpr long long kMaxSeconds = 1'000'000'000;

template <class Number>
std::optional<Number> parse_number(std::string_view text) {
  Number value{};
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || stop != end) return std::nullopt;
  if constexpr (std::is_floating_point_v<Number>) {
    if (!std::isfinite(value)) return std::nullopt;
  }
  return value;
}

[[noreturn]] void bad_value(std::string_view option, std::string_view allowed,
                            std::string_view text) {
  constexpr std::size_t kShown = 32;
  const std::string shown =
      text.size() <= kShown ? std::string(text) : fmt::format("{}...", text.substr(0, kShown));
  throw UsageError(fmt::format("{} must be {}, got '{}'", option, allowed, shown));
}

double positive_seconds(std::string_view option, std::string_view text) {
  const auto seconds = parse_number<double>(text);
  if (!seconds || *seconds <= 0 || *seconds > kMaxSeconds) {
    bad_value(option, fmt::format("a number of seconds > 0 and at most {}", kMaxSeconds), text);
  }
  return *seconds;
}

void read_option_values(const CLI::App& app, const OptionText& text, Invocation& inv) {
  if (app.count("-r") > 0) {
    const auto repeat = parse_number<long long>(text.repeat);
    if (!repeat) bad_value("-r", "a whole number (negative: until interrupted)", text.repeat);
    inv.repeat = *repeat;
  }
  if (app.count("-i") > 0) {
    const auto interval = parse_number<double>(text.interval);
    if (!interval || *interval < 0 || *interval > kMaxSeconds) {
      bad_value("-i", fmt::format("a number of seconds from 0 to {}", kMaxSeconds), text.interval);
    }
    inv.interval = *interval;
  }
  if (app.count("--count") > 0) {
    const auto count = parse_number<std::uint64_t>(text.count);
    if (!count || *count == 0) bad_value("--count", "a whole number >= 1", text.count);
    inv.count = *count;
  }
  if (app.count("--timeout") > 0) inv.timeout = positive_seconds("--timeout", text.timeout);
  if (app.count("--wait") > 0) inv.wait = positive_seconds("--wait", text.wait);
  const bool subscribes = inv.command == Command::subscribe || inv.command == Command::psubscribe;
  for (const char* option : {"--count", "--timeout"}) {
    if (!subscribes && app.count(option) > 0) {
      throw UsageError(fmt::format("{} applies to subscribe and psubscribe only", option));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Invocation inv;
  OptionText text;
  CLI::App app{
      "The command line client of a shmcast bus (Redis-style Pub/Sub over shared "
      "memory).\nReplies print as redis-cli prints them: raw when stdout is not a "
      "terminal, human-readable on one.",
      "shmcast"};
  app.formatter(std::make_shared<CommandUsage>());
  app.footer(kCommands);
  // Everything from the first word that is not an option on is the command, verbatim.
  app.prefix_command();
  auto* bus_option =
      app.add_option("--bus", inv.bus, "the bus to use (default: $SHMCAST_BUS, else 'default')");
  app.add_option("-r", text.repeat, "run the command N times; negative: until interrupted")
      ->type_name("N");
  app.add_option("-i", text.interval, "wait SECONDS between repetitions (with -r)")
      ->type_name("SECONDS");
  app.add_option("--count", text.count, "(p)subscribe: exit after N messages (N >= 1)")
      ->type_name("N");
  app.add_option("--timeout", text.timeout, "(p)subscribe: exit after SECONDS (> 0)")
      ->type_name("SECONDS");
  app.add_option(
         "--wait", text.wait,
         fmt::format(
             "wait at most SECONDS for the bus's coordinator to start or answer (default {:g})",
             std::chrono::duration<double>(shmcast::ConnectOptions{}.request_timeout).count()))
      ->type_name("SECONDS");
  app.add_flag("-x", inv.stdin_last,
               "read the last argument from stdin: all of it, byte for byte, newlines included");
  auto* raw = app.add_flag("--raw", inv.raw, "print replies raw even on a terminal");
  app.add_flag("--no-raw", inv.no_raw, "print replies human-readable even when piped")
      ->excludes(raw);

  if (const auto status = parse_command_line(app, argc, argv)) return *status;
  inv.bus_given = bus_option->count() > 0;

  install_signal_handlers();
  return run_main("shmcast", [&] {
    parse_command(app.remaining(), inv);
    read_option_values(app, text, inv);
    return run(std::move(inv));
  });
}
