// shmcastd's settings: defaults, a config file, the environment and the command line, highest
// last, as --print-config reports them; and a config file that a real coordinator obeys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "integration/bus_fixture.hpp"

namespace shmcast {
namespace {

using test::Daemon;
using test::run_daemon;
using test::spawn;
using test::unique_bus;

// A config file for one test, removed when the test ends.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text)
      : path_(fmt::format("/tmp/shmcastd-{}.conf", unique_bus("conf"))) {
    std::ofstream(path_) << text;
  }
  ~ConfigFile() { ::unlink(path_.c_str()); }
  ConfigFile(const ConfigFile&) = delete;
  ConfigFile& operator=(const ConfigFile&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Sets (or, given nullptr, unsets) an environment variable for one scope, then restores it;
// spawn's children inherit it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The line --print-config gives for `name`, without its newline.
std::string line_of(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + " = ", 0) == 0) return line;
  }
  return "(no line for " + name + ")";
}

TEST(DaemonConfig, DefaultsAndTheirSource) {
  // A user's SHMCAST_BUS would otherwise be the bus's source.
  const ScopedEnv no_bus("SHMCAST_BUS", nullptr);
  const auto [status, out] = run_daemon({"--print-config"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(line_of(out, "bus"), "bus = default   (default)");
  EXPECT_EQ(line_of(out, "max-clients"), "max-clients = 256   (default)");
  EXPECT_EQ(line_of(out, "ring-bytes"), "ring-bytes = 1048576   (default)");
  EXPECT_EQ(line_of(out, "max-payload"), "max-payload = 65536   (default)");
  EXPECT_EQ(line_of(out, "mode"), "mode = 0600   (default)");
  for (const char* name : {"max-channel", "max-pattern", "max-subscriptions", "max-channels",
                           "max-patterns", "max-total-subscriptions", "group"}) {
    EXPECT_NE(line_of(out, name).find("(default)"), std::string::npos) << out;
  }
}

TEST(DaemonConfig, FileBeatsDefault) {
  const ConfigFile file("# a comment\n\nmax-clients = 512\n  mode = 0660  # shared\n");
  const auto [status, out] = run_daemon({"--config", file.path(), "--print-config"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(line_of(out, "max-clients"),
            fmt::format("max-clients = 512   (config {}:3)", file.path()));
  EXPECT_EQ(line_of(out, "mode"), fmt::format("mode = 0660   (config {}:4)", file.path()));
  EXPECT_EQ(line_of(out, "max-payload"), "max-payload = 65536   (default)");
}

TEST(DaemonConfig, EnvBeatsFile) {
  const ConfigFile file("max-clients = 512\nmax-payload = 4096\n");
  const ScopedEnv env("SHMCASTD_MAX_CLIENTS", "128");
  const ScopedEnv bus("SHMCAST_BUS", "from-env");
  const auto [status, out] = run_daemon({"--config", file.path(), "--print-config"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(line_of(out, "max-clients"), "max-clients = 128   (env SHMCASTD_MAX_CLIENTS)");
  EXPECT_EQ(line_of(out, "bus"), "bus = from-env   (env SHMCAST_BUS)");
  EXPECT_EQ(line_of(out, "max-payload"),
            fmt::format("max-payload = 4096   (config {}:2)", file.path()));
}

TEST(DaemonConfig, CommandLineBeatsEnv) {
  const ConfigFile file("max-clients = 512\n");
  const ScopedEnv env("SHMCASTD_MAX_CLIENTS", "128");
  const auto [status, out] =
      run_daemon({"--config", file.path(), "--max-clients", "64", "--print-config"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(line_of(out, "max-clients"), "max-clients = 64   (command line)");
}

TEST(DaemonConfig, BadFileLineFailsNamingFileLineAndKey) {
  const ConfigFile bad_value("max-clients = 512\nmax-payload = lots\n");
  auto [status, out] = run_daemon({"--config", bad_value.path(), "--print-config"});
  EXPECT_EQ(status, 1);
  EXPECT_EQ(out.rfind("shmcastd: ", 0), 0U) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line: " << out;
  EXPECT_NE(out.find(bad_value.path() + ":2"), std::string::npos) << out;
  EXPECT_NE(out.find("max-payload"), std::string::npos) << out;

  const ConfigFile unknown("\n# fine so far\nmax-cleints = 5\n");
  std::tie(status, out) = run_daemon({"--config", unknown.path(), "--print-config"});
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find(unknown.path() + ":3"), std::string::npos) << out;
  EXPECT_NE(out.find("max-cleints"), std::string::npos) << out;
}

TEST(DaemonConfig, RunningCoordinatorObeysTheFile) {
  const ConfigFile file("max-payload = 2048\n");
  Daemon daemon(unique_bus("cfg"), {"--config", file.path()});
  EXPECT_EQ(Bus::connect(daemon.bus()).limits().max_payload, 2048U);
}

}  // namespace
}  // namespace shmcast
