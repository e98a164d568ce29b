// The tool's progress line (tools/common/progress.hpp) on a terminal: it never draws over,
// or erases, output the tool writes to the same terminal.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "common/progress.hpp"

namespace {

struct pty {
  int master = -1;
  int slave = -1;
  pty() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) return;
    slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  }
  ~pty() {
    if (slave >= 0) ::close(slave);
    if (master >= 0) ::close(master);
  }
  pty(const pty&) = delete;
  pty& operator=(const pty&) = delete;
  // A stdio stream on the terminal (as stderr is), for a progress to draw on.
  [[nodiscard]] std::FILE* stream() const { return ::fdopen(::dup(slave), "w"); }
  // Everything the terminal received so far.
  [[nodiscard]] std::string drain() const {
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{master, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
};

// A terminal, and stderr-like stream `err` on it; no SLUICE_PROGRESS override.
class ToolProgress : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("SLUICE_PROGRESS");
    if (const char* term = std::getenv("TERM")) term_before = term;
    ::setenv("TERM", "xterm", 1);  // whatever the test runner's is ("dumb" means no live block)
    if (t.slave < 0) GTEST_SKIP() << "no pseudo-terminal here";
    err = t.stream();
    ASSERT_NE(err, nullptr);
  }
  void TearDown() override {
    close_stream();
    if (term_before) {
      ::setenv("TERM", term_before->c_str(), 1);
    } else {
      ::unsetenv("TERM");
    }
  }
  void close_stream() {
    if (err != nullptr) std::fclose(std::exchange(err, nullptr));
  }
  pty t;
  std::FILE* err = nullptr;
  std::optional<std::string> term_before;
};

// `gunzip f.gz -` on a terminal: the live block would be drawn among the output and its
// clear would erase a line of it. No live block when the output is a terminal too.
TEST_F(ToolProgress, NoLiveBlockWhenTheOutputIsATerminalToo) {
  {
    sluice::tool::progress p("gunzip", err);
    EXPECT_TRUE(p.live());
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    p.not_over_output_on(fds[1]);  // output to a pipe: the block stays
    EXPECT_TRUE(p.live());
    ::close(fds[0]);
    ::close(fds[1]);
    p.not_over_output_on(t.slave);
    EXPECT_FALSE(p.live());
    p.update("read 1 MiB", true);
  }
  close_stream();
  EXPECT_EQ(t.drain().find('\x1b'), std::string::npos);
}

// A line wider than the terminal wrapped onto a second row; the redraw moved up one row
// per line and left copies behind (an 80-column terminal filled with demo's progress).
// Each line is cut to fit, and the clear moves up exactly over what was drawn.
TEST_F(ToolProgress, LinesAreCutToTheTerminalsWidth) {
  winsize ws{};
  ws.ws_col = 30;
  ws.ws_row = 24;
  ASSERT_EQ(::ioctl(t.slave, TIOCSWINSZ, &ws), 0);
  const std::string wide = "unbounded queue  sent 73.4 MiB / 150.0 MiB  99.1 MiB/s  memory +77.8 MiB";
  {
    sluice::tool::progress p("demo", err);
    ASSERT_TRUE(p.live());
    p.update(wide + "\nshort", true);
    p.finish("");
  }
  close_stream();
  const std::string seen = t.drain();
  EXPECT_NE(seen.find("\x1b[2K" + wide.substr(0, 29) + "\r\n"), std::string::npos) << seen;  // the pty adds \r
  EXPECT_EQ(seen.find(wide.substr(0, 30)), std::string::npos) << seen;
  EXPECT_NE(seen.find("\x1b[2Kshort"), std::string::npos) << seen;
  // Resized wider: the next draw uses the new width.
  ws.ws_col = 200;
  ASSERT_EQ(::ioctl(t.slave, TIOCSWINSZ, &ws), 0);
  err = t.stream();
  ASSERT_NE(err, nullptr);
  {
    sluice::tool::progress p("demo", err);
    p.update(wide, true);
  }
  close_stream();
  EXPECT_NE(t.drain().find(wide), std::string::npos);
}

// TERM=dumb cannot move the cursor: plain lines there, as in a log file.
TEST_F(ToolProgress, ADumbTerminalGetsPlainLines) {
  ::setenv("TERM", "dumb", 1);
  sluice::tool::progress p("bench", err, std::chrono::milliseconds(0));
  EXPECT_FALSE(p.live());
  p.update("sent 1 M", true);
  p.finish("done");
  std::fflush(err);
  const std::string seen = t.drain();
  EXPECT_EQ(seen.find("\x1b["), std::string::npos) << seen;
  EXPECT_NE(seen.find("[bench] sent 1 M"), std::string::npos) << seen;
}

// A block dropped because the terminal had no room was still counted as drawn, so the
// next clear moved up and erased a line of real output. A full pipe stands in for the full
// terminal (SLUICE_PROGRESS=live): its room is exact, where a pseudo-terminal's drains
// in the kernel's own time.
TEST_F(ToolProgress, ABlockTheTerminalHadNoRoomForIsNotErasedLater) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::FILE* out = ::fdopen(fds[1], "w");
  ASSERT_NE(out, nullptr);
  ::setenv("SLUICE_PROGRESS", "live", 1);
  std::string seen;
  {
    sluice::tool::progress p("gunzip", out);
    ::unsetenv("SLUICE_PROGRESS");
    ASSERT_TRUE(p.live());
    const int fill = ::open(("/proc/self/fd/" + std::to_string(fds[1])).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(fill, 0);
    const std::string chunk(1024, 'x');
    std::size_t filled = 0;
    while (filled < (64u << 20) && ::write(fill, chunk.data(), chunk.size()) > 0) filled += chunk.size();
    ::close(fill);
    ASSERT_LT(filled, 64u << 20) << "the pipe never filled";
    p.update("read 1 MiB\nwrote 2 MiB", true);  // dropped: no room
    // The reader catches up: everything in the pipe now is the fill (nothing of the block).
    char buf[4096];
    for (std::size_t got = 0; got < filled;) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      ASSERT_GT(n, 0);
      got += static_cast<std::size_t>(n);
    }
    p.finish("");  // nothing of the block to erase
  }
  std::fclose(out);  // the write end: the read below ends
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) seen.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  EXPECT_EQ(seen.find("\x1b[1A"), std::string::npos) << seen.size() << " bytes after the fill";
  EXPECT_EQ(seen.find("read 1 MiB"), std::string::npos);
}

}  // namespace
