// tests/support/spawn_tool.hpp — the built `sluice` tool started as a child process that a
// test watches and signals while it runs (run_tool.hpp runs one to its end).
//
//   sluice_test::spawned_tool t({sluice_test::tool_path(), "demo", "--bytes", "4GiB"});
//   if (t.until([&] { return t.err.find("run 1:") != std::string::npos; }, 60s)) t.signal(SIGINT);
//   ASSERT_TRUE(t.wait(60s)) << t.out << t.err;
//   EXPECT_EQ(t.exit_code(), 130);
//
// Guarantees: the child starts with SIGINT, SIGTERM and SIGHUP at their default action
//   (child_signals.hpp) and with every other descriptor of the test closed (pipes made
//   O_CLOEXEC). Its stdout and stderr are pipes read into `out` and `err` as the test
//   waits (until(), wait()), so a chatty child never blocks on a full pipe; or stdout a
//   pipe whose reader is already gone (stdout_gone), or stderr a file or /dev/null.
//   Every wait is bounded: wait() that runs out kills the child (SIGKILL), reaps it and
//   returns false; the destructor does the same to a child still running.
// Non-guarantees: `in_child` runs between fork and exec of a multi-threaded test: only
//   async-signal-safe calls there (sigprocmask, kill, signal, ...).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "support/child_signals.hpp"

namespace sluice_test {

struct spawn_options {
  bool stdout_gone = false;         // stdout: a pipe whose read end is closed before the exec
  std::string stderr_file;          // stderr to this file (made 0600), not a pipe
  bool stderr_null = false;         // stderr to /dev/null
  std::function<void()> in_child;   // after fork, before exec: async-signal-safe calls only
};

class spawned_tool {
 public:
  explicit spawned_tool(std::vector<std::string> argv, spawn_options o = {}) {
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};
    if (::pipe2(outp, O_CLOEXEC) != 0) return;
    const bool err_pipe = o.stderr_file.empty() && !o.stderr_null;
    if (err_pipe && ::pipe2(errp, O_CLOEXEC) != 0) return;
    if (o.stdout_gone) {
      ::close(outp[0]);
      outp[0] = -1;
    }
    // Opened here, not in the child: open() is async-signal-safe, but building the path is not.
    int err_fd = -1;
    if (!o.stderr_file.empty()) err_fd = ::open(o.stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (o.stderr_null) err_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      default_stop_signals();
      ::signal(SIGPIPE, SIG_DFL);  // as a shell starts it
      ::dup2(outp[1], STDOUT_FILENO);
      ::dup2(err_pipe ? errp[1] : err_fd, STDERR_FILENO);
      if (o.in_child) o.in_child();
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(outp[1]);
    if (errp[1] >= 0) ::close(errp[1]);
    if (err_fd >= 0) ::close(err_fd);
    out_fd_ = outp[0];
    err_fd_ = errp[0];
    for (const int fd : {out_fd_, err_fd_}) {
      if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    if (pid_ < 0) {
      ADD_FAILURE() << "fork failed";
      close_pipes();
    }
  }
  spawned_tool(const spawned_tool&) = delete;
  spawned_tool& operator=(const spawned_tool&) = delete;
  ~spawned_tool() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      (void)::waitpid(pid_, &status_, 0);
    }
    close_pipes();
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0 && !reaped_; }
  void signal(int sig) const {
    if (running()) ::kill(pid_, sig);
  }

  // Reads what the child has written so far into out and err (without blocking).
  void pump() {
    read_ready(out_fd_, out);
    read_ready(err_fd_, err);
  }

  // Pumps until pred() holds (true) or `limit` passes, or the child ends first (false).
  // pred() is asked every 20 ms (it may be costly: a request to the child), the pipes
  // read as data comes in between.
  template <class Pred>
  bool until(Pred pred, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      pump();
      if (pred()) return true;
      if (!running() || reap() || std::chrono::steady_clock::now() >= end) {
        pump();
        return pred();
      }
      const auto tick = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
      for (auto now = std::chrono::steady_clock::now(); now < tick; now = std::chrono::steady_clock::now()) {
        wait_readable(static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(tick - now).count()));
        pump();
      }
    }
  }

  // Pumps until the child ends: true once it has (and its output to the end of its pipes is
  // read); false after `limit`, with the child killed and reaped.
  bool wait(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (running() && !reap()) {
      pump();
      if (std::chrono::steady_clock::now() >= end) {
        ::kill(pid_, SIGKILL);
        (void)::waitpid(pid_, &status_, 0);
        reaped_ = true;
        killed_ = true;
        break;
      }
      wait_readable(20);
    }
    // What is left in the pipes (a grandchild holding them open is not waited for long).
    const auto drain_end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while ((out_fd_ >= 0 || err_fd_ >= 0) && std::chrono::steady_clock::now() < drain_end) {
      pump();
      wait_readable(20);
    }
    return !killed_ && pid_ > 0;
  }

  // The wait status (waitpid's), once ended.
  [[nodiscard]] int status() const noexcept { return status_; }
  [[nodiscard]] bool exited() const noexcept { return reaped_ && WIFEXITED(status_); }
  // The exit code, or 128+N when killed by signal N; -1 while it runs.
  [[nodiscard]] int exit_code() const noexcept {
    if (!reaped_) return -1;
    return WIFSIGNALED(status_) ? 128 + WTERMSIG(status_) : WEXITSTATUS(status_);
  }

  std::string out, err;

 private:
  bool reap() {
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
    return reaped_;
  }
  static void read_ready(int& fd, std::string& into) {
    if (fd < 0) return;
    char buf[8192];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        into.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) {  // end: the child and everything it started closed it
        ::close(fd);
        fd = -1;
      }
      return;  // EAGAIN: nothing more now
    }
  }
  void wait_readable(int ms) const {
    pollfd p[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};  // a negative fd is skipped
    (void)::poll(p, 2, ms);
  }
  void close_pipes() {
    for (int* fd : {&out_fd_, &err_fd_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  int status_ = 0;
  bool reaped_ = false, killed_ = false;
};

}  // namespace sluice_test
