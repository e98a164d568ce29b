// tools/common/signals.hpp — how a tool command takes ^C instead of dying of it.
//
//   const sluice::tool::signal_block signals;   // before any thread starts: they inherit it
//   ... start the run ...
//   if (const int sig = signals.take(std::chrono::milliseconds(100)); sig != 0) cancel();
//
// signal_block blocks SIGINT, SIGTERM and SIGHUP (those not ignored when it is made: a
// signal the process was started with ignored, as under nohup, stays ignored) in the
// constructing thread (and every thread it starts after) for its lifetime, so that the command can take them (take(), a
// signalfd; sigtimedwait if none can be made) and end its run in order: cancel the graph,
// remove what it leaves behind, say so, exit 128+N. The destructor puts the old mask back.
// wake() ends a take() at once (an eventfd), so a watcher thread is joined without
// waiting out its tick.
// One action, one signal: take() drops a signal that repeats the last one it returned
// (same number, sent by the same process with kill() or tgkill(), within a second;
// repeat_of below). coreutils `timeout -s INT` sends its signal to the child and then to
// the child's process group, so the child gets it twice; taken as two, the second read
// as "interrupted again" and cut short the orderly exit the first one began. A second
// ^C from the terminal (sent by the kernel), or a kill from another process, counts.
// Used by `sluice gzip`/`gunzip` (a half-written output) and `bench --cut` (two processes
// and a stream on the server).
//
// interrupt_watch is the usual policy on top, for a command that ends in order after ^C
// (`stress`, `bench`): a thread takes the signals while it lives; the first calls
// first(sig) (say what happens next) and is kept in signal(); a second exits at once with
// "<prog>: interrupted again by <signal>; exiting now" and 128+N.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "common/progress.hpp"
#include "common/sys.hpp"

namespace sluice::tool {

// "SIGINT": a signal's name, as a script matches it (strsignal says "Interrupt").
inline std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

// What take() saw of a signal: its number, its sender (0 and SI_KERNEL for a terminal's
// ^C) and when it was taken.
struct signal_seen {
  int sig = 0;
  pid_t pid = 0;
  int code = 0;
  std::chrono::steady_clock::time_point at{};
};
inline constexpr std::chrono::milliseconds kSignalRepeatWindow{1000};
// Is `next` the same delivery as `last`, sent twice by one process (timeout's pair)?
[[nodiscard]] inline bool repeat_of(const signal_seen& last, const signal_seen& next) noexcept {
  return last.sig != 0 && next.sig == last.sig && next.pid != 0 && next.pid == last.pid &&
         (next.code == SI_USER || next.code == SI_TKILL) && next.code == last.code &&
         next.at - last.at < kSignalRepeatWindow;
}

class signal_block {
 public:
  signal_block() {
    sigemptyset(&set_);
    // A signal this process was started with ignored stays ignored (nohup's SIGHUP, the
    // SIGINT of a `&` job in a script), as gzip(1) leaves it: blocked, it would be queued
    // and taken here despite SIG_IGN, and `nohup sluice gzip big &` lost its run at logout.
    for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction now {};
      if (::sigaction(sig, nullptr, &now) == 0 && now.sa_handler == SIG_IGN) continue;
      sigaddset(&set_, sig);
    }
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    sfd_ = ::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK);
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  signal_block(const signal_block&) = delete;
  signal_block& operator=(const signal_block&) = delete;
  ~signal_block() {
    if (sfd_ >= 0) ::close(sfd_);
    if (wake_ >= 0) ::close(wake_);
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  // A signal that arrived, or 0 after `wait` (or a wake(), or a repeat of the last one
  // taken, dropped: see the top). One thread takes at a time.
  [[nodiscard]] int take(std::chrono::milliseconds wait) const {
    signal_seen got = receive(wait);
    if (got.sig == 0) return 0;
    got.at = std::chrono::steady_clock::now();
    if (repeat_of(last_, got)) return 0;
    last_ = got;
    return got.sig;
  }
  void wake() const {
    const std::uint64_t one = 1;
    if (wake_ >= 0) {
      [[maybe_unused]] const ssize_t r = ::write(wake_, &one, sizeof one);
    }
  }

 private:
  signal_seen receive(std::chrono::milliseconds wait) const {
    if (sfd_ < 0) {  // no signalfd: sigtimedwait in slices
      timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>(wait.count() % 1000) * 1'000'000};
      siginfo_t info{};
      const int s = sigtimedwait(&set_, &info, &ts);
      if (s <= 0) return {};
      return {.sig = s, .pid = info.si_pid, .code = info.si_code};
    }
    pollfd p[2] = {{sfd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    if (::poll(p, wake_ >= 0 ? 2 : 1, static_cast<int>(wait.count())) <= 0) return {};
    signalfd_siginfo info{};
    if (::read(sfd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) return {};
    return {.sig = static_cast<int>(info.ssi_signo), .pid = static_cast<pid_t>(info.ssi_pid), .code = info.ssi_code};
  }

  sigset_t set_{};
  sigset_t old_{};
  int sfd_ = -1;
  int wake_ = -1;
  mutable signal_seen last_{};  // the last signal take() returned
};

// Construct before any thread that should leave the signals to it starts (they inherit
// the mask); its destructor joins the watching thread and puts the old mask back.
class interrupt_watch {
 public:
  interrupt_watch(std::string prog, std::function<void(int)> first)
      : prog_(std::move(prog)), first_(std::move(first)), thread_(start_thread("watches for signals", [this] { watch(); })) {}
  interrupt_watch(const interrupt_watch&) = delete;
  interrupt_watch& operator=(const interrupt_watch&) = delete;
  ~interrupt_watch() {
    over_.store(true, std::memory_order_release);
    signals_.wake();
    thread_.join();
  }
  // The first signal taken, or 0.
  [[nodiscard]] int signal() const noexcept { return sig_.load(std::memory_order_acquire); }

 private:
  void watch() {
    while (!over_.load(std::memory_order_acquire)) {
      const int sig = signals_.take(std::chrono::milliseconds(250));
      if (sig == 0) continue;
      if (sig_.exchange(sig, std::memory_order_acq_rel) != 0) {
        write_nowait(STDERR_FILENO, "\n" + prog_ + ": interrupted again by " + ::strsignal(sig) + "; exiting now\n");
        std::_Exit(128 + sig);
      }
      first_(sig);
    }
  }

  const signal_block signals_;  // first: blocked before the thread below starts
  const std::string prog_;
  const std::function<void(int)> first_;
  std::atomic<int> sig_{0};
  std::atomic<bool> over_{false};
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace sluice::tool
