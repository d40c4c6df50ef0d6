#include "subscriber_fd.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "shmcast/error.hpp"

namespace shmcast::detail {

namespace {

// The longest the watcher sleeps on the ring without a wake-up. It only matters when a
// wake-up is lost (the `sleeping` word was overwritten; a publisher that died between its commit
// and its wake is covered by the coordinator's wake-up on each death): then the fd becomes
// readable this late. Long, so an idle watcher costs next to nothing.
constexpr std::chrono::nanoseconds kLongestSleep = std::chrono::seconds(1);
// A record claimed but not committed: the watcher waits this long for its commit, then makes
// the fd readable anyway, so the owner's read can skip it if its writer died.
constexpr std::chrono::nanoseconds kInFlightNap = std::chrono::milliseconds(1);

}  // namespace

SubscriberFd::SubscriberFd(const RingWatch& ring) : ring_(ring) {
  fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd_ < 0) {
    throw Error(Errc::system,
                fmt::format("cannot open the subscriber's eventfd: {} (raise the open-file limit)",
                            std::strerror(errno)));
  }
  // The watcher takes no signal: the application's handlers run in its own threads.
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    watcher_ = std::thread([this] { watch(); });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::close(fd_);
    throw Error(Errc::system,
                fmt::format("cannot start the thread behind the subscriber's fd: {} (raise the "
                            "process's thread limit)",
                            e.what()));
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_setname_np(watcher_.native_handle(), "shmcast-fd");
}

SubscriberFd::~SubscriberFd() {
  state_.store(kStopping, std::memory_order_seq_cst);
  futex_wake(&state_, 1);
  // After the store above: a watcher that announced its sleep before it is woken here, one
  // that announces later sees kStopping (see watch()).
  ring_.wake_sleepers();
  watcher_.join();
  ::close(fd_);
}

void SubscriberFd::rearm() noexcept {
  std::uint32_t state = state_.load(std::memory_order_acquire);
  // The watcher wrote the eventfd for a frame this drain has taken, and is about to mark it:
  // wait for the mark, or its count would outlast the drain. It is runnable, a few instructions
  // from there: yield to it, and past a few tries sleep a little, since a yield gives nothing to
  // a watcher of lower real-time priority on the same core.
  for (int tries = 1; state == kPosting; ++tries) {
    if (tries <= 64) {
      sched_yield();
    } else {
      futex_wait(&state_, kPosting, std::chrono::microseconds(100));
    }
    state = state_.load(std::memory_order_acquire);
  }
  if (state != kSignalled) return;
  std::uint64_t count = 0;
  // Never blocks and never finds it empty: whoever set kSignalled wrote it first.
  [[maybe_unused]] const ssize_t n = ::read(fd_, &count, sizeof count);
  state_.store(kArmed, std::memory_order_seq_cst);
  futex_wake(&state_, 1);
}

void SubscriberFd::post() noexcept {
  std::uint32_t expected = kArmed;
  if (!state_.compare_exchange_strong(expected, kPosting, std::memory_order_acq_rel)) return;
  const std::uint64_t one = 1;
  // Cannot fail: the count is at most one here, far below the eventfd's limit.
  [[maybe_unused]] const ssize_t n = ::write(fd_, &one, sizeof one);
  expected = kPosting;
  state_.compare_exchange_strong(expected, kSignalled, std::memory_order_acq_rel);
}

void SubscriberFd::wait(std::chrono::nanoseconds timeout) const noexcept {
  pollfd p{fd_, POLLIN, 0};
  timespec ts{};
  const timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    tsp = &ts;
  }
  ppoll(&p, 1, tsp, nullptr);
}

void SubscriberFd::watch() noexcept {
  bool napped = false;
  for (;;) {
    const std::uint32_t state = state_.load(std::memory_order_acquire);
    if (state == kStopping) return;
    if (state != kArmed) {
      futex_wait(&state_, state, std::chrono::nanoseconds(-1));
      continue;
    }
    ring_.announce_sleep();
    // Read again after announcing, paired with the destructor (store kStopping, then wake the
    // ring's sleepers): it cannot slip in between this check and the sleep.
    if (state_.load(std::memory_order_seq_cst) != kArmed) {
      ring_.end_sleep();
      continue;
    }
    switch (ring_.pending()) {
      case RingWatch::Pending::none:
        napped = false;
        ring_.sleep(kLongestSleep);
        continue;
      case RingWatch::Pending::in_flight:
        if (!napped) {
          napped = true;
          ring_.sleep(kInFlightNap);
          continue;
        }
        break;
      case RingWatch::Pending::record: break;
    }
    ring_.end_sleep();
    napped = false;
    post();
  }
}

}  // namespace shmcast::detail
