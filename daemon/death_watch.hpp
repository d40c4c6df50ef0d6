// Wakes the coordinator when a client's process ends.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace shmcast::daemon {

/// A thread that waits on the pidfds of the attached clients and rings the bus's doorbell when
/// one becomes readable (its process ended), so the coordinator sleeps on the doorbell alone
/// and reaps a dead client at once. A futex cannot be polled beside file descriptors, hence the
/// thread; it only rings, so the coordinator's thread stays the only one that touches the
/// registry and the slots.
class DeathWatch {
 public:
  /// Throws shmcast::Error (system) if the epoll or eventfd cannot be made.
  DeathWatch();
  ~DeathWatch();
  DeathWatch(const DeathWatch&) = delete;
  DeathWatch& operator=(const DeathWatch&) = delete;

  /// Reports the end of the process behind `pidfd` once; callable whether or not the thread
  /// runs. False, with errno set, if the kernel refuses it (out of memory, or of
  /// fs.epoll.max_user_watches).
  bool watch(int pidfd) noexcept;
  /// Stops watching `pidfd`; called before closing it.
  void forget(int pidfd) noexcept;

  /// Starts the thread, which rings `doorbell` (and wakes its sleeper) for each process that
  /// ends. The thread takes no signal, so the signals that stop the coordinator interrupt the
  /// coordinator's own wait.
  void start(std::atomic<std::uint32_t>& doorbell);
  /// Stops the thread and waits for it; nothing if it does not run.
  void stop() noexcept;

 private:
  void wait_for_deaths(std::atomic<std::uint32_t>* doorbell) const;

  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: readable once the thread must end
  std::thread thread_;
};

}  // namespace shmcast::daemon
