// shmcastd: the coordinator of one bus, in the foreground until SIGTERM or SIGINT.
#include <grp.h>
#include <signal.h>
#ifdef SHMCAST_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <atomic>
#include <cstdio>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "coordinator.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true);
}

// Tells systemd (Type=notify) where the daemon stands; a no-op outside systemd or in a build
// without libsystemd.
void notify_service_manager([[maybe_unused]] const char* state) {
#ifdef SHMCAST_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

std::optional<gid_t> parse_group(const std::string& name) {
  if (name.empty()) return std::nullopt;
  if (const struct group* g = getgrnam(name.c_str())) return g->gr_gid;
  try {
    std::size_t used = 0;
    const unsigned long gid = std::stoul(name, &used, 10);
    if (used == name.size()) return static_cast<gid_t>(gid);
  } catch (const std::exception&) {
  }
  throw shmcast::Error(shmcast::Errc::system, fmt::format("--group {}: no such group", name));
}

mode_t parse_mode(const std::string& mode) {
  try {
    std::size_t used = 0;
    const unsigned long m = std::stoul(mode, &used, 8);
    if (used == mode.size() && m <= 07777) return static_cast<mode_t>(m);
  } catch (const std::exception&) {
  }
  throw shmcast::Error(shmcast::Errc::system,
                       fmt::format("--mode {}: give octal permission bits, like 0660", mode));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmcastd: the coordinator of a shmcast bus. Runs in the foreground until SIGTERM or "
      "SIGINT; keeps the channel/pattern registry in shared memory and reaps clients that die."};
  std::string bus = shmcast::default_bus_name();
  shmcast::Limits limits;
  std::string mode = "0600";
  std::string group;
  app.add_option("--bus", bus,
                 "Bus name, [A-Za-z0-9_.-]{1,64} (default: $SHMCAST_BUS, else 'default')");
  app.add_option("--max-clients", limits.max_clients, "Clients attached at once")
      ->capture_default_str();
  app.add_option("--max-channel", limits.max_channel, "Bytes in a channel name")
      ->capture_default_str();
  app.add_option("--max-pattern", limits.max_pattern, "Bytes in a pattern")->capture_default_str();
  app.add_option("--max-subscriptions", limits.max_subscriptions, "Channels + patterns per client")
      ->capture_default_str();
  app.add_option("--max-channels", limits.max_channels, "Channels with subscribers, bus-wide")
      ->capture_default_str();
  app.add_option("--max-patterns", limits.max_patterns, "Distinct patterns, bus-wide")
      ->capture_default_str();
  app.add_option("--max-total-subscriptions", limits.max_total_subscriptions,
                 "Subscriptions, bus-wide")
      ->capture_default_str();
  app.add_option("--ring-bytes", limits.ring_bytes, "Each subscriber's ring, a power of two")
      ->capture_default_str();
  app.add_option("--max-payload", limits.max_payload, "Bytes in one message payload")
      ->capture_default_str();
  app.add_option("--mode", mode, "Octal mode of the bus's segments (never world-accessible)")
      ->capture_default_str();
  app.add_option("--group", group,
                 "Group of the bus's segments, for a bus shared by several users");
  CLI11_PARSE(app, argc, argv);

  try {
    shmcast::check_bus_name(bus);
    shmcast::daemon::Coordinator coordinator({bus, limits, parse_mode(mode), parse_group(group)});
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    // Only now is the bus usable: units ordered After=shmcastd wait for this, not for exec.
    notify_service_manager("READY=1");
    fmt::print(stderr, "shmcastd[{}]: serving ({}), pid {}\n", bus,
               coordinator.adopted() ? "adopted a running bus" : "new bus", getpid());
    coordinator.run(g_stop);
    notify_service_manager("STOPPING=1");
    coordinator.shutdown();
  } catch (const shmcast::Error& e) {
    fmt::print(stderr, "shmcastd: {}\n", e.what());
    return 1;
  }
  return 0;
}
