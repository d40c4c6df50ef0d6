// The systemd units as systemd reads them: `systemd-analyze verify` on copies configured to
// start this build's shmcastd (verify checks that the ExecStart binary exists), run offline
// with --man=no because the machine needs no running systemd for it.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace {

struct Result {
  int status = -1;
  std::string output;  ///< stdout and stderr together
};

Result run(const std::string& command) {
  Result result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 512> buffer{};
  for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;) {
    result.output.append(buffer.data(), n);
  }
  result.status = ::pclose(pipe);
  return result;
}

std::string read_unit(const std::string& unit) {
  std::ifstream in(std::string(SHMCAST_UNIT_DIR) + "/" + unit);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool have_systemd_analyze() {
  return run("command -v systemd-analyze").status == 0;
}

// verify exits 0 on a unit with unknown keys or bad values (it only warns), so any output at
// all is a failure.
void expect_verifies(const std::string& unit) {
  const Result r =
      run(fmt::format("systemd-analyze verify --man=no '{}/{}'", SHMCAST_UNIT_DIR, unit));
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << r.output;
  EXPECT_EQ(r.output, "") << "systemd-analyze verify warns about " << unit;
}

TEST(SystemdUnits, DefaultBusUnitVerifies) {
  if (!have_systemd_analyze()) {
    GTEST_SKIP() << "systemd-analyze is not installed (Debian package systemd)";
  }
  expect_verifies("shmcastd.service");
  const std::string text = read_unit("shmcastd.service");
  EXPECT_NE(text.find(fmt::format("ExecStart={}/shmcastd --bus default ", SHMCAST_BIN_DIR)),
            std::string::npos)
      << text;
}

TEST(SystemdUnits, TemplateUnitVerifies) {
  if (!have_systemd_analyze()) {
    GTEST_SKIP() << "systemd-analyze is not installed (Debian package systemd)";
  }
  expect_verifies("shmcastd@.service");
  const std::string text = read_unit("shmcastd@.service");
  EXPECT_NE(text.find(fmt::format("ExecStart={}/shmcastd --bus %i ", SHMCAST_BIN_DIR)),
            std::string::npos)
      << text;
}

TEST(SystemdUnits, UnitsKeepTheBusWorkingUnderHardening) {
  for (const char* unit : {"shmcastd.service", "shmcastd@.service"}) {
    const std::string text = read_unit(unit);
    for (const char* line : {"Restart=on-failure\n", "RemoveIPC=no\n", "Group=shmcast\n",
                             "PrivateDevices=no\n", "ReadWritePaths=/dev/shm\n",
                             "ProtectSystem=strict\n", "RestrictAddressFamilies=AF_UNIX\n"}) {
      EXPECT_NE(text.find(line), std::string::npos) << unit << " lacks " << line;
    }
  }
}

}  // namespace
