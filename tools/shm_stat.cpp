// shm-stat: what a bus holds right now (coordinator, limits, registry, clients), read from its
// control segment with shmcast::inspect(), which does not attach as a client: looking at a
// full or sick bus neither takes a slot nor changes what is looked at.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "shmcast/shmcast.hpp"
#include "tool_support.hpp"

namespace {

using namespace shmcast::tool;

// Channel names are bytes, not text. JSON strings hold code points, so every byte outside
// printable ASCII becomes \u00XX (a byte-to-code-point map a reader can invert), which keeps
// the output valid JSON whatever the names hold.
void append_json_string(std::string& out, std::string_view bytes) {
  out += '"';
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte >= 0x7f) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", byte);
    } else {
      out += c;
    }
  }
  out += '"';
}

// Names in the table are quoted as redis-cli quotes them (but for BEL and BS), so that "" and
// control bytes show.
std::string shown(std::string_view bytes) {
  std::string out;
  append_quoted(out, bytes);
  return out;
}

// The limits in the order of Limits, each with the shmcastd flag that sets it.
struct LimitRow {
  const char* name;
  const char* flag;
  const char* meaning;
  std::uint64_t value;
};

std::vector<LimitRow> limit_rows(const shmcast::Limits& l) {
  return {
      {"max_clients", "--max-clients", "clients attached at once", l.max_clients},
      {"max_channel", "--max-channel", "bytes in a channel name", l.max_channel},
      {"max_pattern", "--max-pattern", "bytes in a pattern", l.max_pattern},
      {"max_subscriptions", "--max-subscriptions", "channels + patterns per client",
       l.max_subscriptions},
      {"max_channels", "--max-channels", "channels with subscribers, bus-wide", l.max_channels},
      {"max_patterns", "--max-patterns", "distinct patterns, bus-wide", l.max_patterns},
      {"max_total_subscriptions", "--max-total-subscriptions", "subscriptions, bus-wide",
       l.max_total_subscriptions},
      {"ring_bytes", "--ring-bytes", "each subscriber's ring", l.ring_bytes},
      {"max_payload", "--max-payload", "bytes in one message payload", l.max_payload},
  };
}

void sort_snapshot(shmcast::BusStats& s) {
  std::sort(s.channels.begin(), s.channels.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  std::sort(s.patterns.begin(), s.patterns.end(),
            [](const auto& a, const auto& b) { return a.pattern < b.pattern; });
  std::sort(s.clients.begin(), s.clients.end(),
            [](const auto& a, const auto& b) { return a.slot < b.slot; });
}

// One line: --watch --json prints one object per line, so a reader can split on newlines.
std::string format_json(const shmcast::BusStats& s) {
  std::string out = "{\"bus\":";
  append_json_string(out, s.bus);
  auto it = std::back_inserter(out);
  fmt::format_to(it, ",\"coordinator\":{{\"pid\":{},\"alive\":{},\"uptime_ms\":{}}}",
                 s.coordinator_pid, s.coordinator_alive, s.uptime_ms);
  fmt::format_to(it, ",\"routing_version\":{},\"reaped\":{}", s.routing_version, s.reaped);
  out += ",\"limits\":{";
  const auto limits = limit_rows(s.limits);
  for (std::size_t i = 0; i < limits.size(); ++i) {
    fmt::format_to(it, "{}\"{}\":{}", i > 0 ? "," : "", limits[i].name, limits[i].value);
  }
  fmt::format_to(it,
                 "}},\"registry\":{{\"bytes\":{},\"bytes_per_channel\":{},"
                 "\"bytes_per_subscription\":{}}}",
                 s.registry_bytes, s.bytes_per_channel, s.bytes_per_subscription);
  out += ",\"channels\":[";
  for (std::size_t i = 0; i < s.channels.size(); ++i) {
    out += i > 0 ? ",{\"name\":" : "{\"name\":";
    append_json_string(out, s.channels[i].name);
    fmt::format_to(it, ",\"subscribers\":{}}}", s.channels[i].subscribers);
  }
  out += "],\"patterns\":[";
  for (std::size_t i = 0; i < s.patterns.size(); ++i) {
    out += i > 0 ? ",{\"pattern\":" : "{\"pattern\":";
    append_json_string(out, s.patterns[i].pattern);
    fmt::format_to(it, ",\"subscribers\":{}}}", s.patterns[i].subscribers);
  }
  out += "],\"clients\":[";
  for (std::size_t i = 0; i < s.clients.size(); ++i) {
    const auto& c = s.clients[i];
    fmt::format_to(it,
                   "{}{{\"slot\":{},\"pid\":{},\"subscriptions\":{},\"ring_bytes\":{},"
                   "\"ring_used\":{},\"delivered\":{},\"dropped\":{}}}",
                   i > 0 ? "," : "", c.slot, c.pid, c.subscriptions, c.ring_bytes, c.ring_used,
                   c.delivered, c.dropped);
  }
  out += "]}\n";
  return out;
}

std::string format_uptime(std::uint64_t ms) {
  const std::uint64_t s = ms / 1000;
  if (s < 60) return fmt::format("{}.{:03}s", s, ms % 1000);
  const std::uint64_t m = s / 60 % 60;
  const std::uint64_t h = s / 3600 % 24;
  const std::uint64_t d = s / 86400;
  if (d > 0) return fmt::format("{}d {:02}h {:02}m {:02}s", d, h, m, s % 60);
  if (h > 0) return fmt::format("{}h {:02}m {:02}s", h, m, s % 60);
  return fmt::format("{}m {:02}s", m, s % 60);
}

std::string format_table(const shmcast::BusStats& s) {
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "bus          {}\n", shown(s.bus));
  if (s.coordinator_alive) {
    fmt::format_to(it, "coordinator  pid {}, alive, up {}\n", s.coordinator_pid,
                   format_uptime(s.uptime_ms));
  } else {
    fmt::format_to(it,
                   "coordinator  pid {}, NOT RUNNING (publish and receive still work; start "
                   "shmcastd --bus {} to adopt the bus)\n",
                   s.coordinator_pid, s.bus);
  }
  fmt::format_to(it,
                 "registry     {} bytes: {} per channel, {} per subscription; routing version "
                 "{}, {} dead client{} reaped\n",
                 s.registry_bytes, s.bytes_per_channel, s.bytes_per_subscription, s.routing_version,
                 s.reaped, s.reaped == 1 ? "" : "s");

  out += "\nlimits\n";
  fmt::format_to(it, "  {:<24} {:>12}  {:<26} {}\n", "LIMIT", "VALUE", "SHMCASTD FLAG", "MEANING");
  for (const auto& row : limit_rows(s.limits)) {
    fmt::format_to(it, "  {:<24} {:>12}  {:<26} {}\n", row.name, row.value, row.flag, row.meaning);
  }

  fmt::format_to(it, "\nchannels: {}\n", s.channels.size());
  if (!s.channels.empty()) fmt::format_to(it, "  {:>11}  {}\n", "SUBSCRIBERS", "CHANNEL");
  for (const auto& c : s.channels) {
    fmt::format_to(it, "  {:>11}  {}\n", c.subscribers, shown(c.name));
  }

  fmt::format_to(it, "\npatterns: {}\n", s.patterns.size());
  if (!s.patterns.empty()) fmt::format_to(it, "  {:>11}  {}\n", "SUBSCRIBERS", "PATTERN");
  for (const auto& p : s.patterns) {
    fmt::format_to(it, "  {:>11}  {}\n", p.subscribers, shown(p.pattern));
  }

  fmt::format_to(it, "\nclients: {}\n", s.clients.size());
  if (s.clients.empty()) return out;
  fmt::format_to(it, "  {:>5} {:>8} {:>13} {:>12} {:>12} {:>7} {:>12} {:>10}\n", "SLOT", "PID",
                 "SUBSCRIPTIONS", "RING", "USED", "USED%", "DELIVERED", "DROPPED");
  for (const auto& c : s.clients) {
    // A publish-only client has no ring.
    const std::string ring = c.ring_bytes > 0 ? fmt::format("{}", c.ring_bytes) : "-";
    const std::string used = c.ring_bytes > 0 ? fmt::format("{}", c.ring_used) : "-";
    const std::string percent =
        c.ring_bytes > 0 ? fmt::format("{:.1f}", 100.0 * static_cast<double>(c.ring_used) /
                                                     static_cast<double>(c.ring_bytes))
                         : "-";
    fmt::format_to(it, "  {:>5} {:>8} {:>13} {:>12} {:>12} {:>7} {:>12} {:>10}\n", c.slot, c.pid,
                   c.subscriptions, ring, used, percent, c.delivered, c.dropped);
  }
  return out;
}

int run(const std::string& bus, bool json, double watch) {
  // On a terminal, --watch redraws in place like watch(1); into a pipe or file, snapshots follow
  // one another, a blank line apart.
  const bool redraw = watch > 0 && !json && ::isatty(STDOUT_FILENO) == 1;
  for (bool first = true; !stop_requested(); first = false) {
    shmcast::BusStats snapshot = shmcast::inspect(bus);
    sort_snapshot(snapshot);
    std::string text;
    if (redraw) {
      text = "\x1b[H\x1b[2J";
    } else if (!first && !json) {
      text = "\n";
    }
    text += json ? format_json(snapshot) : format_table(snapshot);
    write_stdout(text);
    if (watch <= 0) break;
    sleep_unless_stopped(std::chrono::duration<double>(watch));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bus;
  bool json = false;
  double watch = 0;
  CLI::App app{
      "Shows a shmcast bus: its coordinator, limits, channels, patterns and clients.\n"
      "It reads the bus's shared memory without attaching as a client.",
      "shm-stat"};
  auto* bus_option =
      app.add_option("--bus", bus, "the bus to show (default: $SHMCAST_BUS, else 'default')");
  app.add_flag("--json", json, "print one JSON object per snapshot, on one line");
  app.add_option("--watch", watch, "print a snapshot every SECONDS until Ctrl-C")
      ->type_name("SECONDS")
      ->check(CLI::PositiveNumber);
  if (const auto status = parse_command_line(app, argc, argv)) return *status;

  install_signal_handlers();
  return run_main("shm-stat", [&] {
    const std::string name = bus_option->count() > 0 ? bus : shmcast::default_bus_name();
    shmcast::check_bus_name(name);
    return run(name, json, watch);
  });
}
