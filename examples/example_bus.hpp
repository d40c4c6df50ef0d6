// What every example shares: which bus to use. `--bus NAME` wins, then $SHMCAST_BUS, then
// "default", the same rule as the shmcast command-line tools follow.
#pragma once

#include <string>
#include <string_view>

#include <shmcast/shmcast.hpp>

namespace example {

inline std::string bus_name(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) == "--bus") return argv[i + 1];
  }
  return shmcast::default_bus_name();
}

}  // namespace example
