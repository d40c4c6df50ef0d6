// shmcastd's settings and where each one came from: the command line, the environment, a config
// file or the built-in default, highest first.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "shmcast/limits.hpp"

namespace shmcast::daemon {

/// One setting: its effective value and the layer that gave it.
struct Setting {
  std::string name;    ///< the flag without dashes, also the config-file key
  std::string env;     ///< the environment variable that sets it
  std::string help;    ///< what it is, for --help
  std::string value;   ///< the effective value, always valid for the setting
  std::string source;  ///< "default", "config FILE:LINE", "env VAR" or "command line"
};

/// The layers are applied lowest first (the constructor's defaults, load_file, load_env, then
/// set_from_command_line), each overriding the ones before it. Every value is checked as it is
/// applied, so a bad one is reported against the file line, variable or flag that gave it.
/// Every error is a shmcast::Error with a one-line message.
class Config {
 public:
  Config();

  /// Applies `name = value` lines; `#` starts a comment. Unknown names and bad values are errors
  /// naming the file, the line and the key.
  void load_file(const std::string& path);
  /// Applies every setting's environment variable that is set and not empty.
  void load_env();
  /// Applies `--name value` from the command line.
  void set_from_command_line(std::string_view name, const std::string& value);

  [[nodiscard]] const std::vector<Setting>& settings() const { return settings_; }
  [[nodiscard]] const std::string& value(std::string_view name) const;
  [[nodiscard]] Limits limits() const;
  [[nodiscard]] mode_t mode() const;
  /// Every setting as `name = value   (source)`, one per line, in the order of --help.
  [[nodiscard]] std::string describe() const;

 private:
  Setting* find(std::string_view name);
  // Checks `value` for the setting and stores it; throws Error "<where>: <what is wrong>".
  static void apply(Setting& setting, const std::string& value, std::string source,
                    std::string_view where);

  std::vector<Setting> settings_;
};

}  // namespace shmcast::daemon
