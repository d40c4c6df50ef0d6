// `cmake --install` of this build gives a usable package: the programs, the headers, the CMake
// package and the systemd units, and a project outside the tree that finds and links it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "integration/bus_fixture.hpp"

namespace shmcast {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `command` through the shell with its output in `log`; returns its exit status.
int run(const std::string& command, const fs::path& log) {
  const int status = std::system(fmt::format("{} >'{}' 2>&1", command, log.string()).c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A fresh directory under /tmp, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string name = (fs::temp_directory_path() / "shmcast-install-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = name;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(Install, ConsumerProjectFindsLinksAndRunsTheInstalledPackage) {
  const TempDir tmp;
  const fs::path prefix = tmp.path() / "prefix";
  const fs::path log = tmp.path() / "log";
  ASSERT_EQ(
      run(fmt::format("cmake --install '{}' --prefix '{}'", SHMCAST_BUILD_DIR, prefix.string()),
          log),
      0)
      << read_file(log);
  std::vector<std::string> files{"bin/shmcastd",
                                 "bin/shmcast",
                                 "bin/shm-stat",
                                 "include/shmcast/shmcast.hpp",
                                 "lib/cmake/shmcast/shmcastConfig.cmake",
                                 "lib/systemd/system/shmcastd@.service"};
  if (SHMCAST_WITH_BRIDGE) files.emplace_back("bin/shmcast-bridge");
  for (const std::string& file : files) EXPECT_TRUE(fs::exists(prefix / file)) << file;

  const fs::path src = tmp.path() / "app";
  fs::create_directories(src);
  // It names no C++ standard: the package brings the C++20 its headers need.
  std::ofstream(src / "CMakeLists.txt") << "cmake_minimum_required(VERSION 3.25)\n"
                                           "project(app LANGUAGES CXX)\n"
                                           "find_package(shmcast REQUIRED)\n"
                                           "add_executable(app main.cpp)\n"
                                           "target_link_libraries(app PRIVATE shmcast::shmcast)\n";
  // A bus nobody runs, so connect fails with the message that tells the user what to start.
  const std::string bus = test::unique_bus("nobody");
  std::ofstream(src / "main.cpp") << "#include <cstdio>\n"
                                     "#include <shmcast/shmcast.hpp>\n"
                                     "int main() {\n"
                                     "  try {\n"
                                     "    (void)shmcast::Bus::connect(\""
                                  << bus
                                  << "\");\n"
                                     "  } catch (const shmcast::Error& e) {\n"
                                     "    std::printf(\"%s\\n\", e.what());\n"
                                     "  }\n"
                                     "}\n";
  const fs::path build = tmp.path() / "app-build";
  ASSERT_EQ(run(fmt::format("cmake -S '{}' -B '{}' -DCMAKE_PREFIX_PATH='{}'", src.string(),
                            build.string(), prefix.string()),
                log),
            0)
      << read_file(log);
  ASSERT_EQ(run(fmt::format("cmake --build '{}'", build.string()), log), 0) << read_file(log);
  ASSERT_EQ(run(fmt::format("'{}'", (build / "app").string()), log), 0) << read_file(log);
  EXPECT_NE(read_file(log).find("start shmcastd --bus " + bus), std::string::npos)
      << read_file(log);
}

}  // namespace
}  // namespace shmcast
