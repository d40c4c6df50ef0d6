// shm-stat: what a bus holds right now (coordinator, limits, registry, clients), read from its
// control segment with shmcast::inspect(), which does not attach as a client: looking at a
// full or sick bus neither takes a slot nor changes what is looked at. --all lists every bus on
// the host (shmcast::host_buses()), and --remove-dead removes those nothing uses any more.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
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
      {"pool_bytes", "--pool-bytes", "each publisher's pool for loans", l.pool_bytes},
      {"max_holds", "--max-holds", "loaned payloads kept per client", l.max_holds},
      {"max_unread_loan_bytes", "--max-unread-loan-bytes", "pool bytes a backlog pins",
       l.max_unread_loan_bytes},
  };
}

void sort_snapshot(shmcast::BusStats& s) {
  std::sort(s.channels.begin(), s.channels.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  std::sort(s.patterns.begin(), s.patterns.end(),
            [](const auto& a, const auto& b) { return a.pattern < b.pattern; });
  std::sort(s.clients.begin(), s.clients.end(),
            [](const auto& a, const auto& b) { return a.slot < b.slot; });
  std::sort(s.pools.begin(), s.pools.end(), [](const auto& a, const auto& b) {
    return std::pair(a.slot, a.pool_id) < std::pair(b.slot, b.pool_id);
  });
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
                   "\"ring_used\":{},\"delivered\":{},\"dropped\":{},\"holds\":{}}}",
                   i > 0 ? "," : "", c.slot, c.pid, c.subscriptions, c.ring_bytes, c.ring_used,
                   c.delivered, c.dropped, c.holds);
  }
  out += "],\"pools\":[";
  for (std::size_t i = 0; i < s.pools.size(); ++i) {
    const auto& p = s.pools[i];
    fmt::format_to(it,
                   "{}{{\"slot\":{},\"pool_id\":{},\"owner_pid\":{},\"owner_attached\":{},"
                   "\"bytes\":{},\"chunks_in_use\":{},\"bytes_in_use\":{}}}",
                   i > 0 ? "," : "", p.slot, p.pool_id, p.owner_pid, p.owner_attached, p.bytes,
                   p.chunks_in_use, p.bytes_in_use);
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
  if (!s.clients.empty()) {
    fmt::format_to(it, "  {:>5} {:>8} {:>13} {:>12} {:>12} {:>7} {:>12} {:>10} {:>6}\n", "SLOT",
                   "PID", "SUBSCRIPTIONS", "RING", "USED", "USED%", "DELIVERED", "DROPPED",
                   "HOLDS");
  }
  for (const auto& c : s.clients) {
    // A publish-only client has no ring.
    const std::string ring = c.ring_bytes > 0 ? fmt::format("{}", c.ring_bytes) : "-";
    const std::string used = c.ring_bytes > 0 ? fmt::format("{}", c.ring_used) : "-";
    const std::string percent =
        c.ring_bytes > 0 ? fmt::format("{:.1f}", 100.0 * static_cast<double>(c.ring_used) /
                                                     static_cast<double>(c.ring_bytes))
                         : "-";
    fmt::format_to(it, "  {:>5} {:>8} {:>13} {:>12} {:>12} {:>7} {:>12} {:>10} {:>6}\n", c.slot,
                   c.pid, c.subscriptions, ring, used, percent, c.delivered, c.dropped, c.holds);
  }
  // Pools outlive their publisher while subscribers still read from them.
  fmt::format_to(it, "\npools: {}\n", s.pools.size());
  if (s.pools.empty()) return out;
  fmt::format_to(it, "  {:>5} {:>6} {:>8} {:>9} {:>12} {:>13} {:>12}\n", "SLOT", "ID", "PID",
                 "PUBLISHER", "BYTES", "CHUNKS IN USE", "BYTES IN USE");
  for (const auto& p : s.pools) {
    fmt::format_to(it, "  {:>5} {:>6} {:>8} {:>9} {:>12} {:>13} {:>12}\n", p.slot, p.pool_id,
                   p.owner_pid, p.owner_attached ? "attached" : "gone", p.bytes, p.chunks_in_use,
                   p.bytes_in_use);
  }
  return out;
}

// ---- every bus on the host (--all, --remove-dead) -------------------------------------------

void append_json_strings(std::string& out, const std::vector<std::string>& strings) {
  out += '[';
  for (std::size_t i = 0; i < strings.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, strings[i]);
  }
  out += ']';
}

// {"buses":[...]} on one line: each bus's name, then the members `members` appends.
template <class Item, class F>
std::string format_buses_json(const std::vector<Item>& buses, F&& members) {
  std::string out = "{\"buses\":[";
  for (std::size_t i = 0; i < buses.size(); ++i) {
    out += i > 0 ? ",{\"bus\":" : "{\"bus\":";
    append_json_string(out, buses[i].bus);
    members(out, buses[i]);
    out += '}';
  }
  out += "]}\n";
  return out;
}

std::string format_host_json(const std::vector<shmcast::HostBus>& buses) {
  return format_buses_json(buses, [](std::string& out, const shmcast::HostBus& b) {
    fmt::format_to(std::back_inserter(out),
                   ",\"state\":\"{}\",\"coordinator\":{{\"pid\":{},\"alive\":{}}},"
                   "\"clients\":{{\"alive\":{},\"dead\":{}}},\"bytes\":{},\"objects\":",
                   shmcast::health_name(b.health), b.coordinator_pid, b.coordinator_alive,
                   b.clients_alive, b.clients_dead, b.bytes);
    append_json_strings(out, b.objects);
    out += ",\"problem\":";
    if (b.problem.empty()) {
      out += "null";
    } else {
      append_json_string(out, b.problem);
    }
  });
}

std::string format_host_table(const std::vector<shmcast::HostBus>& buses) {
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "buses: {}\n", buses.size());
  if (buses.empty()) return out;
  std::size_t width = 3;
  for (const auto& b : buses) width = std::max(width, b.bus.size());
  const auto row = [&](std::string_view bus, std::string_view state, std::string_view coordinator,
                       std::string_view alive, std::string_view dead, std::string_view bytes) {
    fmt::format_to(it, "  {:<{}}  {:<13} {:>16} {:>13} {:>12} {:>12}", bus, width, state,
                   coordinator, alive, dead, bytes);
  };
  row("BUS", "STATE", "COORDINATOR", "CLIENTS ALIVE", "CLIENTS DEAD", "BYTES");
  out += '\n';
  std::size_t dead = 0;
  std::size_t orphaned = 0;
  for (const auto& b : buses) {
    dead += b.health == shmcast::BusHealth::dead ? 1 : 0;
    orphaned += b.health == shmcast::BusHealth::orphaned ? 1 : 0;
    // Only a control segment this shmcast reads tells its coordinator's pid and its clients.
    const bool read = b.health == shmcast::BusHealth::live ||
                      b.health == shmcast::BusHealth::orphaned ||
                      b.health == shmcast::BusHealth::dead;
    const std::string liveness = b.coordinator_alive ? "alive" : "dead";
    row(b.bus, shmcast::health_name(b.health),
        read ? fmt::format("{} {}", b.coordinator_pid, liveness)
        : b.health == shmcast::BusHealth::other_version ? liveness
                                                        : "-",
        read ? fmt::format("{}", b.clients_alive) : "-",
        read ? fmt::format("{}", b.clients_dead) : "-", fmt::format("{}", b.bytes));
    if (!b.problem.empty()) fmt::format_to(it, "  {}", one_line(b.problem));
    out += '\n';
  }
  if (orphaned > 0) {
    out +=
        "\norphaned: its coordinator died and a client still runs; start shmcastd --bus NAME to "
        "adopt it\n";
  }
  if (dead > 0) {
    out += "\ndead: nothing uses it; shm-stat --remove-dead [--bus NAME] removes it\n";
  }
  return out;
}

std::string format_removals_json(const std::vector<shmcast::BusRemoval>& removals) {
  return format_buses_json(removals, [](std::string& out, const shmcast::BusRemoval& r) {
    fmt::format_to(std::back_inserter(out), ",\"removed\":{},\"bytes\":{},\"objects\":", r.removed,
                   r.bytes);
    append_json_strings(out, r.objects);
    out += ",\"kept\":";
    append_json_strings(out, r.kept);
  });
}

std::string format_removals(const std::vector<shmcast::BusRemoval>& removals) {
  std::string out;
  auto it = std::back_inserter(out);
  std::size_t removed = 0;
  std::uint64_t bytes = 0;
  for (const auto& r : removals) {
    if (r.removed) {
      ++removed;
      fmt::format_to(it, "removed {}: {} objects, {} bytes\n", r.bus, r.objects.size(), r.bytes);
    }
    bytes += r.bytes;
    for (const auto& why : r.kept) fmt::format_to(it, "kept {}: {}\n", r.bus, one_line(why));
  }
  fmt::format_to(it, "{} dead bus{} removed, {} bytes freed\n", removed, removed == 1 ? "" : "es",
                 bytes);
  return out;
}

// ---- output ----------------------------------------------------------------------------------

// Prints `snapshot()` once, or every `watch` seconds until SIGINT/SIGTERM.
int run(const std::function<std::string()>& snapshot, bool json, double watch) {
  // On a terminal, --watch redraws in place like watch(1); into a pipe or file, snapshots follow
  // one another, a blank line apart.
  const bool redraw = watch > 0 && !json && ::isatty(STDOUT_FILENO) == 1;
  for (bool first = true; !stop_requested(); first = false) {
    std::string text;
    if (redraw) {
      text = "\x1b[H\x1b[2J";
    } else if (!first && !json) {
      text = "\n";
    }
    text += snapshot();
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
  bool all = false;
  bool remove_dead = false;
  double watch = 0;
  CLI::App app{
      "Shows a shmcast bus: its coordinator, limits, channels, patterns and clients.\n"
      "It reads the bus's shared memory without attaching as a client.\n"
      "--all lists every bus on the host; --remove-dead removes those nothing uses.",
      "shm-stat"};
  auto* bus_option = app.add_option(
      "--bus", bus,
      "the bus to show (default: $SHMCAST_BUS, else 'default'); with --all or --remove-dead, "
      "only this bus");
  app.add_flag("--json", json, "print one JSON object per snapshot, on one line");
  auto* all_flag = app.add_flag(
      "--all", all,
      "list every bus on this host: its state, coordinator, clients alive and dead, bytes held");
  auto* watch_option =
      app.add_option("--watch", watch, "print a snapshot every SECONDS until Ctrl-C")
          ->type_name("SECONDS")
          ->check(CLI::PositiveNumber);
  app.add_flag("--remove-dead", remove_dead,
               "remove every bus whose coordinator and clients are all dead, and print what it "
               "removed and kept")
      ->excludes(all_flag)
      ->excludes(watch_option);
  if (const auto status = parse_command_line(app, argc, argv)) return *status;

  install_signal_handlers();
  return run_main("shm-stat", [&] {
    // --all and --remove-dead look at every bus unless one is named on the command line.
    const std::string only = bus_option->count() > 0 ? bus : std::string();
    if (bus_option->count() > 0) shmcast::check_bus_name(bus);
    if (remove_dead) {
      const auto removals = shmcast::remove_dead_buses(only);
      write_stdout(json ? format_removals_json(removals) : format_removals(removals));
      return 0;
    }
    if (all) {
      return run(
          [&] {
            const auto buses = shmcast::host_buses(only);
            return json ? format_host_json(buses) : format_host_table(buses);
          },
          json, watch);
    }
    const std::string name = bus_option->count() > 0 ? bus : shmcast::default_bus_name();
    shmcast::check_bus_name(name);
    return run(
        [&] {
          shmcast::BusStats snapshot = shmcast::inspect(name);
          sort_snapshot(snapshot);
          return json ? format_json(snapshot) : format_table(snapshot);
        },
        json, watch);
  });
}
