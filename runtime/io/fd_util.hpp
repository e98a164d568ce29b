// Private helpers of the io stages: errno messages, stop-aware waits on fds, SIGPIPE.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stop_token>
#include <string>

#include "sluice/io/error.hpp"
#include "sluice/io/file.hpp"

namespace sluice::io::detail {

// "STAGE: cannot OP WHERE: strerror" as an io::error carrying err.
[[noreturn]] inline void throw_errno(const std::string& stage, const std::string& op,
                                     const std::string& where, int err) {
  std::string msg = stage + ": cannot " + op;
  if (!where.empty()) msg += " " + where;
  msg += ": ";
  msg += std::strerror(err);
  throw error(msg, err);
}

inline bool is_regular_fd(int fd) noexcept {
  struct stat st{};
  return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

// Waits until fd is ready for `events` or the stop token is triggered, without polling
// in time slices: a stop callback writes to an eventfd that the poll watches too.
class stop_waiter {
 public:
  // `stage` and `what` (the file or socket waited on) name the failure: out of
  // descriptors, it said only "io: cannot create an eventfd".
  stop_waiter(std::stop_token stop, const char* stage, const std::string& what) {
    if (!stop.stop_possible()) return;
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0) throw_errno(stage, "create an eventfd to wait on", what, errno);
    cb_.emplace(std::move(stop), wake{efd_});
  }
  stop_waiter(const stop_waiter&) = delete;
  stop_waiter& operator=(const stop_waiter&) = delete;
  ~stop_waiter() {
    cb_.reset();  // unregisters (waits out a running callback) before the fd goes
    if (efd_ >= 0) ::close(efd_);
  }

  enum class waited { ready, stopped, timed_out };
  // As wait(), but gives up at `deadline` (steady clock).
  waited wait_until(int fd, short events, std::chrono::steady_clock::time_point deadline) const {
    pollfd p[2] = {{fd, events, 0}, {efd_, POLLIN, 0}};
    const nfds_t n = efd_ >= 0 ? 2 : 1;
    for (;;) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return waited::timed_out;
      // Rounded up (never woken before the deadline), at most a minute per poll.
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
      const int r = ::poll(p, n, static_cast<int>(std::min<std::int64_t>(ms, 60'000)));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("io", "poll", "fd " + std::to_string(fd), errno);
      }
      if (n == 2 && p[1].revents != 0) return waited::stopped;
      if (p[0].revents != 0) return waited::ready;
    }
  }

  // true: fd is ready (or in error: the next call reports it); false: stop requested.
  bool wait(int fd, short events) const {
    return wait_until(fd, events, std::chrono::steady_clock::time_point::max()) == waited::ready;
  }

 private:
  struct wake {
    int fd;
    void operator()() const noexcept {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t r = ::write(fd, &one, sizeof one);
    }
  };
  int efd_ = -1;
  std::optional<std::stop_callback<wake>> cb_;
};

// Blocks SIGPIPE and SIGXFSZ on the calling thread for its lifetime, so that a write to
// a closed pipe fails with EPIPE, and one past the file size limit (ulimit -f) with EFBIG,
// instead of killing the process; such a signal that became pending meanwhile is consumed
// before the old mask comes back (only those the caller had not blocked itself).
class write_signals_guard {
 public:
  write_signals_guard() noexcept {
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGPIPE);
    sigaddset(&both, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &both, &old_);
    sigemptyset(&ours_);
    for (const int sig : {SIGPIPE, SIGXFSZ}) {
      if (!sigismember(&old_, sig)) sigaddset(&ours_, sig);
    }
  }
  write_signals_guard(const write_signals_guard&) = delete;
  write_signals_guard& operator=(const write_signals_guard&) = delete;
  ~write_signals_guard() {
    const timespec zero{0, 0};
    while (sigtimedwait(&ours_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t ours_{};  // blocked here, not by the caller: consumed and unblocked at the end
  sigset_t old_{};
};

// How write_all writes to an fd so that no write blocks past a stop request.
enum class write_mode {
  plain,   // writev: a regular file or device (never waits long), or a non-blocking fd
  socket,  // sendmsg with MSG_DONTWAIT: a blocking socket, without touching its flags
  small,   // poll, then at most PIPE_BUF bytes: a blocking pipe or terminal we could
           // not reopen; a pipe with room takes that much without blocking
};

// Writes every byte of iov[0..n) to fd, resuming after short writes and EINTR, and
// waiting on `waiter` (when given) for room. Returns 0, or the errno of the failed
// write; sets *stopped and returns 0 when a stop request woke the wait. Adds the bytes
// written to *done (when given), also those before a failure.
inline int write_all(int fd, iovec* iov, int n, const stop_waiter* waiter, bool* stopped,
                     write_mode how = write_mode::plain, std::uint64_t* done = nullptr) {
  while (n > 0) {
    ssize_t w;
    if (how == write_mode::small) {
      if (waiter != nullptr && !waiter->wait(fd, POLLOUT)) {
        *stopped = true;
        return 0;
      }
      const iovec part{iov->iov_base, std::min<std::size_t>(iov->iov_len, PIPE_BUF)};
      w = ::write(fd, part.iov_base, part.iov_len);
    } else if (how == write_mode::socket) {
      msghdr m{};
      m.msg_iov = iov;
      m.msg_iovlen = static_cast<std::size_t>(n > IOV_MAX ? IOV_MAX : n);
      w = ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      w = ::writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
    }
    if (w < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && waiter != nullptr) {
        if (!waiter->wait(fd, POLLOUT)) {
          *stopped = true;
          return 0;
        }
        continue;
      }
      return errno;
    }
    auto left = static_cast<std::size_t>(w);
    if (done != nullptr) *done += left;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

// The fd a writer of a caller's descriptor uses, and how: a blocking pipe, FIFO or
// terminal is reopened non-blocking through /proc/self/fd (a file description of our
// own, so the caller's descriptor keeps its flags); a blocking socket is sent to with
// MSG_DONTWAIT; a regular file or block device is written as it is (never waits long).
class output_fd {
 public:
  explicit output_fd(int fd) : fd_(fd) {
    struct stat st{};
    if (::fstat(fd, &st) != 0 || S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return;
    const int fl = ::fcntl(fd, F_GETFL);
    // Not open for writing (a pipe's read end, stdin given as stdout): the first write
    // fails with EBADF, as it must. Opened again through /proc it would have been
    // writable, and the stage wrote into a pipe its own process reads (a probe: `1<&0`
    // hung, or succeeded with the output in the process's stdin).
    if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY) return;
    waits_ = true;
    if (fl >= 0 && (fl & O_NONBLOCK) != 0) return;  // already non-blocking: EAGAIN, then poll
    if (S_ISSOCK(st.st_mode)) {
      how_ = write_mode::socket;
      return;
    }
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    const int again = ::open(proc.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st2{};
    if (again >= 0 && ::fstat(again, &st2) == 0 && st2.st_dev == st.st_dev && st2.st_ino == st.st_ino &&
        st2.st_rdev == st.st_rdev) {
      own_ = fd_ = again;
      return;
    }
    if (again >= 0) ::close(again);
    how_ = write_mode::small;
  }
  output_fd(const output_fd&) = delete;
  output_fd& operator=(const output_fd&) = delete;
  ~output_fd() {
    if (own_ >= 0) ::close(own_);
  }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] write_mode how() const noexcept { return how_; }
  // Whether writes can wait (then the writer needs a stop_waiter).
  [[nodiscard]] bool waits() const noexcept { return waits_; }

 private:
  int fd_;
  int own_ = -1;
  bool waits_ = false;
  write_mode how_ = write_mode::plain;
};

std::string at_offset(const std::string& where, std::uint64_t offset);

// Reads fd into chunks and pushes them. A regular file fills each chunk; anything else
// pushes what each read() returned, waiting with poll() (fd and the stop eventfd) when
// a read would block, so a stop request wakes it. Returns at end of file, on a stop
// request, or when the output is closed.
void read_loop(int fd, sender<buffer>& out, const std::stop_token& stop, const read_options& o,
               const char* stage, const std::string& where);

// Pops batches of buffers and writes them with write_all, waiting on `waiter` when fd
// is full. Returns the bytes written when the input ends or (with *stopped set) when a
// stop request woke the wait. Throws io::error on a failed write.
std::uint64_t write_loop(int fd, receiver<buffer>& in, const write_options& o,
                         const stop_waiter* waiter, const char* stage, const std::string& where,
                         bool* stopped, write_mode how = write_mode::plain);

}  // namespace sluice::io::detail
