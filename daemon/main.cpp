// shmcastd: the coordinator of one bus, in the foreground until SIGTERM or SIGINT.
#include <grp.h>
#include <signal.h>
#ifdef SHMCAST_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <atomic>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "config.hpp"
#include "coordinator.hpp"
#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace {

std::atomic<bool> g_stop{false};
// The coordinator to wake, while it serves: its loop sleeps until something rings.
std::atomic<shmcast::daemon::Coordinator*> g_serving{nullptr};

void on_signal(int) {
  g_stop.store(true);
  if (shmcast::daemon::Coordinator* coordinator = g_serving.load()) coordinator->wake();
}

// SIGTERM and SIGINT stop the coordinator through on_signal, and are held back until the bus
// is created or adopted: one that arrives during start-up then ends it exactly as one that
// arrives while serving does (the bus removed if no live client is attached, left for adoption
// otherwise), never with a bus half made or half adopted.
sigset_t hold_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// While it lives, a stop signal is no longer held and wakes `coordinator`; it is destroyed before
// the coordinator, and holds the signals again first, so no handler wakes a coordinator that is
// gone.
class Serving {
 public:
  Serving(shmcast::daemon::Coordinator& coordinator, const sigset_t& signals) : signals_(signals) {
    g_serving.store(&coordinator);
    sigprocmask(SIG_UNBLOCK, &signals_, nullptr);  // a signal held until now stops run()
  }
  ~Serving() {
    sigprocmask(SIG_BLOCK, &signals_, nullptr);
    g_serving.store(nullptr);
  }
  Serving(const Serving&) = delete;
  Serving& operator=(const Serving&) = delete;

 private:
  sigset_t signals_;
};

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
  throw shmcast::Error(shmcast::Errc::invalid_setting,
                       fmt::format("--group {}: no such group", name));
}

}  // namespace

int main(int argc, char** argv) {
  const sigset_t stop_signals = hold_stop_signals();
  CLI::App app{
      "shmcastd: the coordinator of a shmcast bus. Runs in the foreground until SIGTERM or "
      "SIGINT; keeps the channel/pattern registry in shared memory and reaps clients that die.\n"
      "Each setting comes from its flag, else its environment variable, else the --config "
      "file, else its default."};
  shmcast::daemon::Config config;
  // CLI11 only collects the flags as text: Config checks them, so a value is judged the same
  // whichever layer gives it, and knows which layer that was.
  std::map<std::string, std::string> flags;
  for (const shmcast::daemon::Setting& s : config.settings()) {
    app.add_option("--" + s.name, flags[s.name],
                   fmt::format("{} (env {}, default '{}')", s.help, s.env, s.value));
  }
  std::string config_file;
  app.add_option("--config", config_file, "File of 'name = value' lines, e.g. max-clients = 512");
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "Print every setting's effective value and where it came from, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "shmcastd: {}\n", e.what());
    return 1;
  }

  try {
    if (!config_file.empty()) config.load_file(config_file);
    config.load_env();
    for (const auto& [name, value] : flags) {
      if (app.get_option("--" + name)->count() > 0) config.set_from_command_line(name, value);
    }
    if (print_config) {
      fmt::print("{}", config.describe());
      return 0;
    }

    const std::string& bus = config.value("bus");
    shmcast::daemon::Coordinator coordinator(
        {bus, config.limits(), config.mode(), parse_group(config.value("group"))});
    const Serving serving(coordinator, stop_signals);
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
