// tools/common/progress.hpp — progress for long runs of the `sluice` tool.
//
//   sluice::tool::progress p("demo");           // writes to stderr
//   while (working) p.update("sent 12.0 MiB  98.1 MiB/s\nchannel 87% full");
//   p.finish("done: 512 MiB in 5.2 s");
//
// On a terminal (isatty(stderr), TERM not "dumb") the status block is redrawn in place,
// at most 10 times a second (ANSI cursor-up and erase-line), each line cut to the
// terminal's width (a line that wrapped took two rows, and the redraw, moving up one row
// per line, left copies behind). Otherwise each update prints plain lines
// prefixed "[name] ", at most once per `plain_every` (default 1 s; the first one
// `plain_every` after construction, so a short run prints none), so a log file gets
// a readable trace instead of escape codes. SLUICE_PROGRESS=plain|live|off in the
// environment overrides the detection (off: only finish() lines are printed).
// Thread safe: update() and finish() may be called from any thread.
// progress::notice() prints a line from any thread (a signal watcher's "interrupted by"),
// above the live block of the progress that is showing one: written beside the block, it
// was erased at the block's next redraw (its cursor-up landed on the notice).
// Never blocks on a terminal nobody reads: the live block is written through a
// non-blocking descriptor of its own and dropped when the terminal has no room (a
// blocked progress writer would keep the tool from taking Ctrl-C). write_nowait()
// gives other lines the same treatment, waiting at most a moment for room.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::tool {

// Writes `text` to fd without blocking for long: through a non-blocking reopening of a
// terminal or pipe (a file description of its own, so fd keeps its flags), waiting at
// most `patience` for room, dropping what does not fit. Other files: a plain write.
// Returns how many bytes of `text` were written (a prefix of it).
inline std::size_t write_nowait(int fd, std::string_view text,
                                std::chrono::milliseconds patience = std::chrono::milliseconds(200)) {
  const std::size_t whole = text.size();
  const int own = ::isatty(fd) != 0 || ::lseek(fd, 0, SEEK_CUR) < 0
                      ? ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
                      : -1;
  const int w = own >= 0 ? own : fd;
  const auto until = std::chrono::steady_clock::now() + patience;
  while (!text.empty()) {
    const ssize_t n = ::write(w, text.data(), text.size());
    if (n > 0) {
      text.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (own < 0 || n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || left.count() <= 0) break;
    pollfd p{w, POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left.count()));
  }
  if (own >= 0) ::close(own);
  return whole - text.size();
}

class progress {
 public:
  enum class mode { live, plain, off };

  explicit progress(std::string name, std::FILE* out = stderr,
                    std::chrono::milliseconds plain_every = std::chrono::seconds(1))
      : name_(std::move(name)), out_(out), plain_every_(plain_every), last_(std::chrono::steady_clock::now()) {
    const char* term = std::getenv("TERM");
    const bool dumb = term != nullptr && std::string_view(term) == "dumb";  // no cursor movement
    mode_ = ::isatty(::fileno(out_)) != 0 && !dumb ? mode::live : mode::plain;
    if (const char* env = std::getenv("SLUICE_PROGRESS")) {
      const std::string_view e = env;
      if (e == "plain") mode_ = mode::plain;
      if (e == "live") mode_ = mode::live;
      if (e == "off") mode_ = mode::off;
    }
    std::lock_guard lk(showing_mu());
    showing() = this;  // the newest one shows the block
  }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  ~progress() {
    {
      std::lock_guard lk(showing_mu());  // first: notice() may be inside this one
      if (showing() == this) showing() = nullptr;
    }
    std::lock_guard lk(mu_);
    clear_locked();
  }

  // Writes `text` to stderr as permanent lines, from any thread, without blocking for
  // long (write_nowait): the live block of the progress showing one is removed first and
  // drawn again below it at its next update.
  static void notice(std::string_view text) {
    std::lock_guard lk(showing_mu());
    progress* p = showing();
    if (p == nullptr || ::fileno(p->out_) != STDERR_FILENO) {
      write_nowait(STDERR_FILENO, text);
      return;
    }
    std::lock_guard plk(p->mu_);
    p->clear_locked();
    write_nowait(STDERR_FILENO, text);
  }

  [[nodiscard]] bool live() const noexcept { return mode_ == mode::live; }

  // The tool's output goes to terminal fd `out_fd` too (gunzip ... - on a terminal): a
  // live block redrawn among that output would be drawn over it and then erase a line of
  // it. No live block then (plain lines go elsewhere: stderr is not a terminal there).
  void not_over_output_on(int out_fd) {
    std::lock_guard lk(mu_);
    if (mode_ == mode::live && out_fd >= 0 && ::isatty(out_fd) != 0) mode_ = mode::off;
  }

  // Shows `text` (one or more lines separated by '\n') as the current status.
  // force: draw now even if the last draw was recent.
  void update(std::string_view text, bool force = false) {
    std::lock_guard lk(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (mode_ == mode::off) return;
    if (mode_ == mode::live) {
      if (!force && drawn_lines_ > 0 && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      clear_locked();
      const std::size_t width = columns_locked();
      std::string block;
      int lines = 0;
      std::size_t start = 0;
      while (start <= text.size()) {
        const std::size_t nl = text.find('\n', start);
        const std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
        block += "\x1b[2K";
        block += fit(line, width);
        block += '\n';
        ++lines;
        if (nl == std::string_view::npos) break;
        start = nl + 1;
      }
      // Only the lines that reached the terminal are erased later: a block dropped because
      // the terminal had no room erased a line of someone else's output at the next clear.
      const std::size_t put = put_locked(block);
      drawn_lines_ = put == block.size() ? lines
                                         : static_cast<int>(std::count(block.begin(), block.begin() +
                                                                           static_cast<std::ptrdiff_t>(put), '\n'));
      return;
    }
    if (!force && now - last_ < plain_every_) return;
    last_ = now;
    print_prefixed_locked(text);
  }

  // Removes the live block (if any) and prints `text` as permanent lines.
  void finish(std::string_view text) {
    std::lock_guard lk(mu_);
    clear_locked();
    if (text.empty()) return;
    print_prefixed_locked(text);
  }

  // Removes the live block without printing anything.
  void clear() {
    std::lock_guard lk(mu_);
    clear_locked();
  }

 private:
  void clear_locked() {
    if (mode_ != mode::live || drawn_lines_ == 0) return;
    // Move up over the block and erase it line by line.
    std::string s;
    for (int i = 0; i < drawn_lines_; ++i) s += "\x1b[1A\x1b[2K";
    put_locked(s);
    drawn_lines_ = 0;
  }
  // The terminal's width in columns (asked on each draw: it may be resized), else
  // COLUMNS, else 80. A line is cut to one less, so that none wraps.
  std::size_t columns_locked() const {
    winsize ws{};
    if (::ioctl(::fileno(out_), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) return ws.ws_col;
    if (const char* c = std::getenv("COLUMNS")) {
      const long n = std::strtol(c, nullptr, 10);
      if (n > 1 && n < 100000) return static_cast<std::size_t>(n);
    }
    return 80;
  }
  // The start of `line` that fills at most width - 1 columns, a UTF-8 character counted
  // as one (the tool's lines hold no wide characters).
  static std::string_view fit(std::string_view line, std::size_t width) {
    std::size_t cols = 0;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if ((static_cast<unsigned char>(line[i]) & 0xC0) == 0x80) continue;  // a continuation byte
      if (++cols == width) return line.substr(0, i);
    }
    return line;
  }
  void print_prefixed_locked(std::string_view text) {
    std::string out;
    std::size_t start = 0;
    while (start <= text.size()) {
      const std::size_t nl = text.find('\n', start);
      out += "[" + name_ + "] ";
      out += text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
      out += '\n';
      if (nl == std::string_view::npos) break;
      start = nl + 1;
    }
    put_locked(out);
  }

  // Written at once or (a terminal or pipe nobody reads) dropped; returns the bytes written.
  std::size_t put_locked(const std::string& text) {
    std::fflush(out_);
    return write_nowait(::fileno(out_), text, std::chrono::milliseconds(0));
  }

  // The progress notice() writes above (lock order: showing_mu, then a progress's mu_).
  static std::mutex& showing_mu() {
    static std::mutex m;
    return m;
  }
  static progress*& showing() {
    static progress* p = nullptr;
    return p;
  }

  std::mutex mu_;
  std::string name_;
  std::FILE* out_;
  std::chrono::milliseconds plain_every_;
  mode mode_ = mode::plain;
  int drawn_lines_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace sluice::tool
