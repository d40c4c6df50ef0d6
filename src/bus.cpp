// Bus: connecting to a bus by name, and what its copies share.
#include "shmcast/bus.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include <fmt/format.h>

#include "client.hpp"
#include "shmcast/message.hpp"

namespace shmcast {

const char* kind_name(Kind kind) noexcept {
  switch (kind) {
    case Kind::message: return "message";
    case Kind::pmessage: return "pmessage";
    case Kind::subscribe: return "subscribe";
    case Kind::psubscribe: return "psubscribe";
    case Kind::unsubscribe: return "unsubscribe";
    case Kind::punsubscribe: return "punsubscribe";
    case Kind::gap: return "gap";
  }
  return "unknown";
}

std::string default_bus_name() {
  const char* env = std::getenv("SHMCAST_BUS");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("default");
}

void check_bus_name(std::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
      });
  if (!ok) {
    throw Error(Errc::invalid_bus_name,
                fmt::format("invalid bus name '{}': use 1 to 64 of A-Z a-z 0-9 _ . -", name));
  }
}

namespace detail {

namespace {

std::atomic<std::uint64_t> g_next_bus_id{1};  // unique in this process, keys per-thread caches

}  // namespace

BusState::BusState(std::string bus, ConnectOptions opts)
    : name(std::move(bus)),
      options(opts),
      view(open_running(name, options.request_timeout)),
      limits(to_limits(view->limits())),
      id(g_next_bus_id.fetch_add(1)) {
  link = std::make_unique<ClientLink>(view, name, options);
  link->request(Op::attach, 0, {});
}

}  // namespace detail

Bus Bus::connect(std::string_view name, ConnectOptions options) {
  std::string bus = name.empty() ? default_bus_name() : std::string(name);
  check_bus_name(bus);
  return Bus(std::make_shared<detail::BusState>(std::move(bus), options));
}

const Limits& Bus::limits() const noexcept {
  return state_->limits;
}
const std::string& Bus::name() const noexcept {
  return state_->name;
}
bool Bus::coordinator_alive() const {
  return detail::coordinator_running(*state_->view);
}

}  // namespace shmcast
