#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {
namespace {

// The limits, by setting name; the table keeps --help, the file keys and limits() in step.
struct LimitField {
  std::string_view name;
  std::string_view help;
  std::uint32_t Limits::*u32 = nullptr;
  std::uint64_t Limits::*u64 = nullptr;
};

constexpr LimitField kLimitFields[] = {
    {"max-clients", "Clients attached at once", &Limits::max_clients, nullptr},
    {"max-channel", "Bytes in a channel name", &Limits::max_channel, nullptr},
    {"max-pattern", "Bytes in a pattern", &Limits::max_pattern, nullptr},
    {"max-subscriptions", "Channels + patterns per client", &Limits::max_subscriptions, nullptr},
    {"max-channels", "Channels with subscribers, bus-wide", &Limits::max_channels, nullptr},
    {"max-patterns", "Distinct patterns, bus-wide", &Limits::max_patterns, nullptr},
    {"max-total-subscriptions", "Subscriptions, bus-wide", &Limits::max_total_subscriptions,
     nullptr},
    {"ring-bytes", "Each subscriber's ring, a power of two", nullptr, &Limits::ring_bytes},
    {"max-payload", "Bytes in one message payload", nullptr, &Limits::max_payload},
    {"pool-bytes", "Each publishing connection's pool for loaned payloads; 0: no loans", nullptr,
     &Limits::pool_bytes},
    {"max-holds", "Loaned payloads one connection keeps past their callback", &Limits::max_holds,
     nullptr},
    {"max-unread-loan-bytes", "Pool bytes one subscriber's unread loaned messages may pin",
     nullptr, &Limits::max_unread_loan_bytes},
};

const LimitField* limit_field(std::string_view name) {
  const auto* it = std::find_if(std::begin(kLimitFields), std::end(kLimitFields),
                                [&](const LimitField& f) { return f.name == name; });
  return it == std::end(kLimitFields) ? nullptr : it;
}

// SHMCASTD_ + the name upper-cased with underscores; the bus keeps the variable every shmcast
// client reads, so one SHMCAST_BUS points a whole session at one bus.
std::string env_name(std::string_view name) {
  if (name == "bus") return "SHMCAST_BUS";
  std::string env = "SHMCASTD_";
  for (const char c : name) env += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return env;
}

// True if the whole of `text` is a number in `base` no larger than `max`.
bool parse_unsigned(std::string_view text, int base, std::uint64_t max, std::uint64_t& out) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out, base);
  return !text.empty() && ec == std::errc{} && ptr == end && out <= max;
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

Error config_error(const std::string& message) {
  return Error(Errc::invalid_setting, message);
}

}  // namespace

Config::Config() {
  const auto add = [this](std::string_view name, std::string help, std::string value) {
    settings_.push_back(
        {std::string(name), env_name(name), std::move(help), std::move(value), "default"});
  };
  add("bus", "Bus name, [A-Za-z0-9_.-]{1,64}", "default");
  const Limits defaults;
  for (const LimitField& f : kLimitFields) {
    add(f.name, std::string(f.help),
        std::to_string(f.u32 != nullptr ? defaults.*f.u32 : defaults.*f.u64));
  }
  add("mode", "Octal mode of the bus's segments: owner and group bits only, like 0660", "0600");
  add("group", "Group of the bus's segments, for a bus shared by several users", "");
}

Setting* Config::find(std::string_view name) {
  const auto it = std::find_if(settings_.begin(), settings_.end(),
                               [&](const Setting& s) { return s.name == name; });
  return it == settings_.end() ? nullptr : &*it;
}

const std::string& Config::value(std::string_view name) const {
  const auto it = std::find_if(settings_.begin(), settings_.end(),
                               [&](const Setting& s) { return s.name == name; });
  if (it == settings_.end()) throw config_error(fmt::format("no setting '{}'", name));
  return it->value;
}

void Config::apply(Setting& setting, const std::string& value, std::string source,
                   std::string_view where) {
  std::uint64_t number = 0;
  if (setting.name == "bus") {
    try {
      check_bus_name(value);
    } catch (const Error& e) {
      throw config_error(fmt::format("{}: {}", where, e.what()));
    }
  } else if (setting.name == "mode") {
    if (!parse_unsigned(value, 8, 07777, number)) {
      throw config_error(fmt::format(
          "{}: '{}' is not a mode: give octal permission bits, like 0660", where, value));
    }
  } else if (const LimitField* f = limit_field(setting.name)) {
    const std::uint64_t max = f->u32 != nullptr ? std::numeric_limits<std::uint32_t>::max()
                                                : std::numeric_limits<std::uint64_t>::max();
    if (!parse_unsigned(value, 10, max, number)) {
      throw config_error(
          fmt::format("{}: '{}' is not a whole number from 0 to {}", where, value, max));
    }
  }
  setting.value = value;
  setting.source = std::move(source);
}

void Config::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw config_error(fmt::format("--config {}: cannot read it: {}", path, std::strerror(errno)));
  }
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    std::string_view text = raw;
    text = trim(text.substr(0, text.find('#')));
    if (text.empty()) continue;
    const auto eq = text.find('=');
    const std::string where = fmt::format("{}:{}", path, line);
    if (eq == std::string_view::npos) {
      throw config_error(fmt::format("{}: '{}': expected 'name = value'", where, text));
    }
    const std::string_view key = trim(text.substr(0, eq));
    Setting* setting = find(key);
    if (setting == nullptr) {
      throw config_error(fmt::format("{}: unknown setting '{}'", where, key));
    }
    apply(*setting, std::string(trim(text.substr(eq + 1))), "config " + where,
          fmt::format("{}: {}", where, key));
  }
}

void Config::load_env() {
  for (Setting& s : settings_) {
    const char* value = std::getenv(s.env.c_str());
    if (value == nullptr || *value == '\0') continue;
    apply(s, value, "env " + s.env, s.env);
  }
}

void Config::set_from_command_line(std::string_view name, const std::string& value) {
  Setting* setting = find(name);
  if (setting == nullptr) throw config_error(fmt::format("no setting '{}'", name));
  apply(*setting, value, "command line", "--" + setting->name);
}

Limits Config::limits() const {
  Limits limits;
  for (const LimitField& f : kLimitFields) {
    // apply() accepted every value, so these conversions cannot fail or overflow.
    const std::uint64_t number = std::stoull(value(f.name));
    if (f.u32 != nullptr) {
      limits.*f.u32 = static_cast<std::uint32_t>(number);
    } else {
      limits.*f.u64 = number;
    }
  }
  return limits;
}

mode_t Config::mode() const {
  return static_cast<mode_t>(std::stoul(value("mode"), nullptr, 8));
}

std::string Config::describe() const {
  std::string out;
  for (const Setting& s : settings_)
    out += fmt::format("{} = {}   ({})\n", s.name, s.value, s.source);
  return out;
}

}  // namespace shmcast::daemon
