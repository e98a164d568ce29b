// tests/serve/serve_test_util.hpp — helpers of the live-view tests: a graph that stays
// live, a child process with a hard deadline (curl, chromium), a PATH lookup.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"

extern char** environ;

namespace serve_test {

using namespace std::chrono_literals;

// numbers -> square -> slow-sink: the sink sleeps `sink_sleep` per item, so the graph is
// live for a while, slow-sink is the bottleneck (busy while square is backpressured), and
// `items` = 0 runs until request_stop().
struct live_graph {
  sluice::graph g;
  std::atomic<std::uint64_t> produced{0};
  std::atomic<std::uint64_t> sunk{0};

  explicit live_graph(std::uint64_t items, std::chrono::microseconds sink_sleep = 1000us) {
    auto src = g.source<std::uint64_t>(
        "numbers",
        [this, items](sluice::sender<std::uint64_t>& out, std::stop_token stop) {
          for (std::uint64_t i = 0; (items == 0 || i < items) && !stop.stop_requested(); ++i) {
            if (!out.push(i)) return;
            produced.fetch_add(1);
          }
        },
        {.capacity = 16});
    auto sq = g.map("square", src, [](std::uint64_t v) { return v * v; }, {.capacity = 16});
    g.sink("slow-sink", sq, [this, sink_sleep](std::uint64_t) {
      std::this_thread::sleep_for(sink_sleep);
      sunk.fetch_add(1);
    });
  }
};

struct process_result {
  int exit_code = -1;   // -1: killed at the deadline, or could not start
  bool timed_out = false;
  std::string out;      // stdout
};

// Runs argv (PATH lookup) in its own process group with stdin and stderr on /dev/null,
// collects stdout, and kills the whole group at the deadline.
inline process_result run_process(const std::vector<std::string>& argv, std::chrono::milliseconds deadline) {
  process_result r;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return r;
  }
  const auto until = std::chrono::steady_clock::now() + deadline;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 200)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    const ssize_t got = ::read(pipefd[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child closed stdout (it has ended or is ending)
    r.out.append(buf, static_cast<std::size_t>(got));
  }
  ::close(pipefd[0]);
  // Wait for the exit, still bounded by the deadline; then the group is killed.
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (r.timed_out || std::chrono::steady_clock::now() >= until) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ::kill(-pid, SIGKILL);  // helpers chromium left behind, if any
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

inline bool on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string p = path;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = std::min(p.find(':', start), p.size());
    const std::string dir = p.substr(start, end - start);
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace serve_test
