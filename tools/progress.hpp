// tools/progress.hpp — progress for long runs of the `sluice` tool.
//
//   sluice::tool::progress p("demo");           // writes to stderr
//   while (working) p.update("sent 12.0 MiB  98.1 MiB/s\nchannel 87% full");
//   p.finish("done: 512 MiB in 5.2 s");
//
// On a terminal (isatty(stderr)) the status block is redrawn in place, at most 10 times
// a second (ANSI cursor-up and erase-line). Otherwise each update prints plain lines
// prefixed "[name] ", at most once per `plain_every` (default 1 s; the first one
// `plain_every` after construction, so a short run prints none), so a log file gets
// a readable trace instead of escape codes. SLUICE_PROGRESS=plain|live|off in the
// environment overrides the detection (off: only finish() lines are printed).
// Thread safe: update() and finish() may be called from any thread.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::tool {

class progress {
 public:
  enum class mode { live, plain, off };

  explicit progress(std::string name, std::FILE* out = stderr,
                    std::chrono::milliseconds plain_every = std::chrono::seconds(1))
      : name_(std::move(name)), out_(out), plain_every_(plain_every), last_(std::chrono::steady_clock::now()) {
    mode_ = ::isatty(::fileno(out_)) != 0 ? mode::live : mode::plain;
    if (const char* env = std::getenv("SLUICE_PROGRESS")) {
      const std::string_view e = env;
      if (e == "plain") mode_ = mode::plain;
      if (e == "live") mode_ = mode::live;
      if (e == "off") mode_ = mode::off;
    }
  }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  ~progress() {
    std::lock_guard lk(mu_);
    clear_locked();
  }

  [[nodiscard]] bool live() const noexcept { return mode_ == mode::live; }

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
      std::string block;
      int lines = 0;
      std::size_t start = 0;
      while (start <= text.size()) {
        const std::size_t nl = text.find('\n', start);
        const std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
        block += "\x1b[2K";
        block += line;
        block += '\n';
        ++lines;
        if (nl == std::string_view::npos) break;
        start = nl + 1;
      }
      std::fputs(block.c_str(), out_);
      std::fflush(out_);
      drawn_lines_ = lines;
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
    std::fputs(s.c_str(), out_);
    std::fflush(out_);
    drawn_lines_ = 0;
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
    std::fputs(out.c_str(), out_);
    std::fflush(out_);
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
