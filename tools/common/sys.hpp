// tools/common/sys.hpp — what the `sluice` tool measures about its own process (Linux):
// resident memory and returning freed heap to the OS; plus a token
// bucket for pacing and a JSON string escaper for --json output.
#pragma once

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace sluice::tool {

// A thread of the tool's own (a signal watcher, a sampler). Where none can be made (a
// thread or memory limit), the std::system_error says which: "cannot start the thread
// that WHAT: Resource temporarily unavailable", not the bare reason.
template <class F>
std::thread start_thread(const char* what, F&& f) {
  try {
    return std::thread(std::forward<F>(f));
  } catch (const std::system_error& e) {
    throw std::system_error(e.code(), std::string("cannot start the thread that ") + what);
  }
}

// Which of stdin, stdout and stderr the tool was started with closed (`sluice gzip - o <&-`).
// main() opens /dev/null on each before anything else runs (guard_stdio), so that no
// descriptor the tool opens later (a signalfd, an output file) lands on 0, 1 or 2 and is
// read or written as standard input or output. It is opened the wrong way round (stdin
// write-only, stdout and stderr read-only), so that using one still fails with EBADF, as
// the closed descriptor would have; a command that uses one as its data asks here first,
// to say so plainly.
inline bool (&stdio_closed())[3] {
  static bool closed[3] = {false, false, false};
  return closed;
}
// The descriptor of this process that `path` names, if it is one: /dev/stdin, /dev/stdout,
// /dev/stderr, /dev/fd/N or /proc/self/fd/N, or a chain of symlinks that leads to one (read
// link by link, at most 40). Writing "to" such a path means writing to that descriptor, as
// a shell redirection does: reopening it would reach whatever the descriptor is on (a file
// to truncate, or guard_stdio's /dev/null for a closed stream), and replacing it with a
// renamed file would replace the system's /dev/stdout link.
// Spellings with ".", ".." or "//" ("/dev/fd/./1"), /proc/thread-self/fd/N and
// /proc/<our pid>/fd/N count too: they were taken for a file to replace, and the error
// named a temporary ("cannot create /dev/fd/./1.zUgx6rf2.partial").
inline std::optional<int> own_fd_named_by(std::string path) {
  const std::string own_pid = "/proc/" + std::to_string(::getpid()) + "/fd/";
  for (int hop = 0; hop < 40; ++hop) {
    // Compared in plain form; the links are read as written.
    const std::string plain = std::filesystem::path(path).lexically_normal().string();
    if (plain == "/dev/stdin") return 0;
    if (plain == "/dev/stdout") return 1;
    if (plain == "/dev/stderr") return 2;
    for (const std::string_view prefix : {std::string_view("/dev/fd/"), std::string_view("/proc/self/fd/"),
                                          std::string_view("/proc/thread-self/fd/"), std::string_view(own_pid)}) {
      if (!plain.starts_with(prefix)) continue;
      const std::string_view digits = std::string_view(plain).substr(prefix.size());
      if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string_view::npos) {
        return std::nullopt;
      }
      return std::stoi(std::string(digits));
    }
    char buf[4096];
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf) return std::nullopt;  // not a link
    std::string target(buf, static_cast<std::size_t>(n));
    if (target.front() != '/') {
      const auto slash = path.rfind('/');
      target = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + target;
    }
    path = std::move(target);
  }
  return std::nullopt;
}

inline void guard_stdio() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    stdio_closed()[fd] = true;
    const int n = ::open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);  // the lowest free descriptor: fd
    if (n >= 0 && n != fd) ::close(n);  // (cannot happen: fd was the lowest free one)
  }
}

// Resident set size in bytes, from /proc/self/statm (field 2, in pages). 0 if unreadable.
inline std::uint64_t rss_bytes() {
  static const long page = ::sysconf(_SC_PAGESIZE);
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
  return static_cast<std::uint64_t>(resident) * static_cast<std::uint64_t>(page);
}

// Returns free heap pages to the OS (glibc malloc_trim on every arena), so that RSS
// measured next starts from what is really in use.
inline void return_free_memory() { ::malloc_trim(0); }

// A token bucket: `rate` bytes per second, bursts up to `burst` bytes. acquire(n)
// sleeps (sleep_until) until n bytes' worth of tokens have accrued, then spends them.
class token_bucket {
 public:
  token_bucket(std::uint64_t rate_bytes_per_s, std::uint64_t burst_bytes)
      : rate_(static_cast<double>(std::max<std::uint64_t>(1, rate_bytes_per_s))),
        burst_(static_cast<double>(std::max<std::uint64_t>(1, burst_bytes))),
        tokens_(0),
        last_(std::chrono::steady_clock::now()) {}

  // Waits until n bytes may go. With `stop`: the wait is slept in slices of at most 100 ms
  // and ends early, returning false, once *stop is true (at 1 B/s one 64 KiB chunk is an
  // 18-hour sleep, which ^C could not end).
  bool acquire(std::uint64_t n, const std::atomic<bool>* stop = nullptr) {
    refill(std::chrono::steady_clock::now());
    const double need = static_cast<double>(n);
    if (tokens_ < need) {
      const double wait_s = (need - tokens_) / rate_;
      const auto until = last_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(wait_s));
      for (auto now = std::chrono::steady_clock::now(); now < until; now = std::chrono::steady_clock::now()) {
        // acquire: pairs with the release of whoever set it; only a flag here.
        if (stop != nullptr && stop->load(std::memory_order_acquire)) return false;
        std::this_thread::sleep_until(std::min(until, now + std::chrono::milliseconds(100)));
      }
      refill(std::max(until, std::chrono::steady_clock::now()));
    }
    tokens_ -= need;  // may go slightly negative for an item larger than the burst
    return true;
  }

 private:
  void refill(std::chrono::steady_clock::time_point now) {
    const double dt = std::chrono::duration<double>(now - last_).count();
    if (dt > 0) {
      tokens_ = std::min(burst_, tokens_ + dt * rate_);
      last_ = now;
    }
  }
  double rate_;
  double burst_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
};

// Busy-spins for about `ns` nanoseconds (synthetic CPU work that a sleep would not be).
inline void spin_for(std::chrono::nanoseconds ns) {
  if (ns.count() <= 0) return;
  const auto until = std::chrono::steady_clock::now() + ns;
  while (std::chrono::steady_clock::now() < until) {
  }
}

inline std::string json_escape(std::string_view v) {
  std::string out = "\"";
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// Text for HTML content and attribute values (either quote).
inline std::string html_escape(std::string_view v) {
  std::string out;
  for (const char ch : v) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

}  // namespace sluice::tool
