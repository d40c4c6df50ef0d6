#include "death_watch.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "futex.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {

namespace {

[[noreturn]] void fail(const char* what) {
  throw Error(Errc::system, fmt::format("{}: {}; the coordinator cannot watch its clients", what,
                                        std::strerror(errno)));
}

}  // namespace

DeathWatch::DeathWatch() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) fail("epoll_create1");
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    const int error = errno;
    ::close(epoll_fd_);
    errno = error;
    fail("eventfd");
  }
  epoll_event stop_event{};
  stop_event.events = EPOLLIN;
  stop_event.data.fd = stop_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &stop_event) != 0) {
    const int error = errno;
    ::close(stop_fd_);
    ::close(epoll_fd_);
    errno = error;
    fail("epoll_ctl");
  }
}

DeathWatch::~DeathWatch() {
  stop();
  ::close(stop_fd_);
  ::close(epoll_fd_);
}

bool DeathWatch::watch(int pidfd) noexcept {
  // One-shot: a pidfd stays readable until the coordinator reaps its client, and one ring is
  // all the coordinator needs meanwhile.
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.fd = pidfd;
  return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, pidfd, &event) == 0;
}

void DeathWatch::forget(int pidfd) noexcept {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, pidfd, nullptr);
}

void DeathWatch::start(std::atomic<std::uint32_t>& doorbell) {
  if (thread_.joinable()) return;
  sigset_t all;
  sigset_t before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);  // the new thread inherits this mask
  try {
    thread_ = std::thread([this, bell = &doorbell] { wait_for_deaths(bell); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

void DeathWatch::stop() noexcept {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  thread_.join();
  std::uint64_t count = 0;
  (void)!::read(stop_fd_, &count, sizeof count);  // so a later start() waits again
}

void DeathWatch::wait_for_deaths(std::atomic<std::uint32_t>* doorbell) const {
  epoll_event events[16];
  for (;;) {
    const int n = ::epoll_wait(epoll_fd_, events, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // cannot happen with a valid epoll fd; the coordinator's passes still reap
    }
    bool died = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == stop_fd_) return;
      died = true;
    }
    if (died) detail::futex_ring(doorbell);
  }
}

}  // namespace shmcast::daemon
