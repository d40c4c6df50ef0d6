// Loopback TCP ports for the servers the tests and benchmarks start (redis-server).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <stdexcept>

namespace shmcast::testing {

/// A loopback TCP port that was free a moment ago and that this process has not handed out
/// before. The kernel picks it (bind to port 0), so programs running side by side get different
/// ones; a server started on it at once almost never finds it taken.
inline int free_tcp_port() {
  static std::mutex mutex;
  static std::set<int> given;
  const std::lock_guard lock(mutex);
  for (;;) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    const bool bound = fd >= 0 &&
                       ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                       ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    if (fd >= 0) ::close(fd);
    if (!bound) throw std::runtime_error("cannot find a free loopback port");
    const int port = ntohs(address.sin_port);
    if (given.insert(port).second) return port;
  }
}

}  // namespace shmcast::testing
