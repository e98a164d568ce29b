// Parking for sluice::detail::waker: the futex system calls live here, not in headers.
#include "sluice/detail/waker.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace sluice::detail {
namespace {

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t val, const timespec* ts,
           std::uint32_t bitset) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                "the futex word must be a plain 32-bit integer");
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, val, ts, nullptr, bitset);
}

}  // namespace

void heavy_fence(bool asymmetric) noexcept {
  if (asymmetric) {
    // Every thread of this process that is running now executes a full memory barrier
    // before this returns; one that is not running passes a context switch, which is one.
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool waker::commit_wait(std::uint32_t key, const time_point* deadline) noexcept {
  bool timed_out = false;
  if (deadline == nullptr) {
    // FUTEX_WAIT returns at once when epoch_ != key: a notify between prepare and
    // here is never lost. Spurious returns are fine; the caller re-checks.
    futex(&*epoch_, FUTEX_WAIT_PRIVATE, key, nullptr, 0);
  } else {
    // steady_clock is CLOCK_MONOTONIC, which FUTEX_WAIT_BITSET takes as absolute time.
    auto since = deadline->time_since_epoch();
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
    if (since.count() < 0) secs = std::chrono::seconds(0);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = since.count() < 0
                     ? 0
                     : static_cast<long>(
                           std::chrono::duration_cast<std::chrono::nanoseconds>(since - secs).count());
    if (futex(&*epoch_, FUTEX_WAIT_BITSET_PRIVATE, key, &ts, FUTEX_BITSET_MATCH_ANY) != 0 &&
        errno == ETIMEDOUT) {
      timed_out = true;
    }
  }
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return !timed_out;
}

void waker::notify(int n) noexcept {
  // release: a waiter that reads the new epoch (in prepare_wait or in the kernel's
  // compare) also sees the condition the notifier made true before its fence.
  epoch_->fetch_add(1, std::memory_order_release);
  futex(&*epoch_, FUTEX_WAKE_PRIVATE, n < 0 ? INT_MAX : n, nullptr, 0);
}

}  // namespace sluice::detail
