// The `sluice gzip` / `sluice gunzip` commands, run as a user would: output identical to
// gzip -d, one-line errors, exit statuses, and no partial output on any failure.
// The tool is SLUICE_TOOL_PATH (set by tests/CMakeLists.txt) or <build>/tools/sluice
// next to this test binary; without it the tests are skipped (SLUICE_BUILD_TOOLS=OFF).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "support/watchdog.hpp"

namespace {

namespace fs = std::filesystem;
using io_test::quoted;
using io_test::read_string;
using io_test::write_string;

fs::path tool() {
#ifdef SLUICE_TOOL_PATH
  if (fs::exists(SLUICE_TOOL_PATH)) return SLUICE_TOOL_PATH;
#endif
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  const fs::path p = self.parent_path().parent_path() / "tools" / "sluice";
  return fs::exists(p) ? p : fs::path();
}

#define REQUIRE_TOOL()                                                   \
  const fs::path sluice = tool();                                        \
  if (sluice.empty()) GTEST_SKIP() << "no sluice tool next to the tests"

struct outcome {
  int status = -1;   // exit status, or 128 + signal
  std::string err;   // stderr
};

// Runs the tool through the shell (so tests can use redirections and pipes).
outcome sh(const std::string& cmd, const io_test::temp_dir& dir) {
  const fs::path err = dir / ".stderr";
  const int r = std::system(("cd " + quoted(dir.path()) + " && { " + cmd + " ; } 2> " + quoted(err)).c_str());
  outcome o;
  if (WIFEXITED(r)) o.status = WEXITSTATUS(r);
  o.err = fs::exists(err) ? read_string(err) : "";
  fs::remove(err);
  return o;
}

std::vector<std::string> listing(const io_test::temp_dir& dir) { return dir.list(); }

TEST(io_tool, gzip_output_is_what_gzip_d_turns_back_into_the_input) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "tool gzip");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{128} << 10, (std::size_t{5} << 20) + 3}) {
    write_string(dir / "in.log", io_test::log_text(n, n));
    for (const char* jobs : {"1", "2", "3"}) {
      ASSERT_EQ(sh(s + " gzip --force --jobs " + jobs + " in.log", dir).status, 0);
      ASSERT_EQ(io_test::shell("gzip -dc " + quoted(dir / "in.log.gz") + " | cmp -s - " + quoted(dir / "in.log")), 0)
          << n << " bytes, jobs " << jobs;
    }
    // And back with sluice gunzip, to a named file and through stdin/stdout.
    ASSERT_EQ(sh(s + " gunzip in.log.gz back.log", dir).status, 0);
    EXPECT_EQ(read_string(dir / "back.log"), read_string(dir / "in.log"));
    ASSERT_EQ(sh("cat in.log | " + s + " gzip --level 1 - - | " + s + " gunzip - - > piped.log", dir).status, 0);
    EXPECT_EQ(read_string(dir / "piped.log"), read_string(dir / "in.log"));
    fs::remove(dir / "back.log");
  }
}

TEST(io_tool, gunzip_reads_what_gzip_and_pigz_write_including_concatenated_members) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "a", io_test::log_text(300'000, 1));
  write_string(dir / "b", io_test::log_text(1000, 2));
  ASSERT_EQ(io_test::shell("cd " + quoted(dir.path()) + " && (gzip -c a; pigz -c b) > ab.gz && cat a b > ab"), 0);
  ASSERT_EQ(sh(quoted(sluice) + " gunzip ab.gz out", dir).status, 0);
  EXPECT_EQ(read_string(dir / "out"), read_string(dir / "ab"));
}

TEST(io_tool, a_missing_input_is_one_line_exit_1_and_no_output) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const outcome o = sh(quoted(sluice) + " gzip missing.log", dir);
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "sluice gzip: read_file: cannot open missing.log: No such file or directory\n");
  EXPECT_TRUE(listing(dir).empty());
}

TEST(io_tool, corrupt_or_truncated_input_is_exit_1_and_leaves_no_output) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::log_text(1 << 20, 3));
  ASSERT_EQ(io_test::shell("gzip -c " + quoted(dir / "in") + " > " + quoted(dir / "in.gz")), 0);
  const std::string gz = read_string(dir / "in.gz");
  write_string(dir / "cut.gz", gz.substr(0, gz.size() / 2));
  std::string bad = gz;
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x21);
  write_string(dir / "bad.gz", bad);
  write_string(dir / "old", "previous contents");
  const outcome cut = sh(quoted(sluice) + " gunzip cut.gz", dir);
  EXPECT_EQ(cut.status, 1);
  EXPECT_EQ(cut.err.rfind("sluice gunzip: gunzip: truncated gzip stream: input ends at byte offset " +
                              std::to_string(gz.size() / 2),
                          0),
            0u)
      << cut.err;
  EXPECT_EQ(std::count(cut.err.begin(), cut.err.end(), '\n'), 1);
  const outcome corrupt = sh(quoted(sluice) + " gunzip --force bad.gz old", dir);
  EXPECT_EQ(corrupt.status, 1);
  EXPECT_NE(corrupt.err.find("corrupt gzip data at byte offset"), std::string::npos) << corrupt.err;
  EXPECT_EQ(read_string(dir / "old"), "previous contents");  // replaced only by a complete result
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"bad.gz", "cut.gz", "in", "in.gz", "old"}));
}

TEST(io_tool, a_full_disk_and_a_closed_pipe_are_errors) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::random_bytes(1 << 20, 4));
  const outcome full = sh(quoted(sluice) + " gzip in /dev/full", dir);
  EXPECT_EQ(full.status, 1);
  EXPECT_EQ(full.err, "sluice gzip: write_fd: cannot write /dev/full at byte offset 0: No space left on device\n");
  // The reader of the pipe goes away after 10 bytes (1 MiB cannot fit in the pipe).
  const outcome closed =
      sh("(" + quoted(sluice) + " gzip --level 0 in - ; echo $? > status) | head -c 10 > /dev/null", dir);
  EXPECT_EQ(read_string(dir / "status"), "1\n");
  fs::remove(dir / "status");
  EXPECT_NE(closed.err.find("sluice gzip: write_fd: cannot write stdout at byte offset"), std::string::npos)
      << closed.err;
  EXPECT_NE(closed.err.find("Broken pipe"), std::string::npos) << closed.err;
}

TEST(io_tool, existing_output_bad_arguments_and_help) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", "x\n");
  write_string(dir / "in.gz", "keep me");
  const std::string s = quoted(sluice);
  const outcome exists = sh(s + " gzip in", dir);
  EXPECT_EQ(exists.status, 1);
  EXPECT_EQ(exists.err, "sluice gzip: in.gz already exists (use --force to overwrite)\n");
  EXPECT_EQ(read_string(dir / "in.gz"), "keep me");
  EXPECT_EQ(sh(s + " gzip --level 10 in x.gz", dir).status, 2);
  EXPECT_EQ(sh(s + " gzip --jobs two in x.gz", dir).status, 2);
  EXPECT_EQ(sh(s + " gzip --nope in", dir).status, 2);
  EXPECT_EQ(sh(s + " gzip", dir).status, 2);
  EXPECT_EQ(sh(s + " gzip a b c", dir).status, 2);
  const outcome noname = sh(s + " gunzip in", dir);
  EXPECT_EQ(noname.status, 2);
  EXPECT_NE(noname.err.find("no .gz suffix"), std::string::npos) << noname.err;
  EXPECT_EQ(sh(s + " gzip --help > help.txt", dir).status, 0);
  EXPECT_NE(read_string(dir / "help.txt").find("usage: sluice gzip"), std::string::npos);
  EXPECT_EQ(sh(s + " gunzip --help > help.txt", dir).status, 0);
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"help.txt", "in", "in.gz"}));
}

TEST(io_tool, an_interrupt_cancels_the_run_and_leaves_no_output) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "tool interrupt");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  // Input from a FIFO we hold open: the tool is mid-run (output partial file open, input
  // not ended) for as long as we like, with no timing games.
  const fs::path fifo = dir / "in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execl(sluice.c_str(), "sluice", "gzip", fifo.c_str(), (dir / "out.gz").c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  const int w = ::open(fifo.c_str(), O_WRONLY);  // blocks until the tool opened it
  ASSERT_GE(w, 0);
  const std::string data = io_test::log_text(1 << 20, 5);
  ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(sluice_test::eventually([&] { return fs::exists(dir / "out.gz.partial"); }));
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(w);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"in.fifo"});
}

}  // namespace
