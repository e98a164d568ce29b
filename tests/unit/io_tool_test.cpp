// The `sluice gzip` / `sluice gunzip` commands, run as a user would: output identical to
// gzip -d, one-line errors, exit statuses, and no partial output on any failure.
// The tool is SLUICE_TOOL_PATH (set by tests/CMakeLists.txt) or <build>/tools/sluice
// next to this test binary; without it the tests are skipped (SLUICE_BUILD_TOOLS=OFF).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "support/child_signals.hpp"
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

// Runs the tool through the shell (so tests can use redirections and pipes), killed with
// everything it started after kShellLimitSeconds: a hang fails the test (status 137) instead of
// holding CI until ctest's limit. timeout(1) signals the whole process group it leads.
// (240 s: under ctest's 300 s per test, so the test itself reports the hang.)
constexpr int kShellLimitSeconds = 240;
outcome sh(const std::string& cmd, const io_test::temp_dir& dir) {
  const fs::path err = dir / ".stderr";
  std::string script = "'";  // cmd in single quotes, each ' in it written '\''
  for (const char c : cmd) {
    if (c == '\'') {
      script += "'\\''";
    } else {
      script += c;
    }
  }
  script += "'";
  const int r = std::system(("cd " + quoted(dir.path()) + " && timeout -s KILL " + std::to_string(kShellLimitSeconds) +
                             " sh -c " + script + " 2> " + quoted(err))
                                .c_str());
  outcome o;
  if (WIFEXITED(r)) o.status = WEXITSTATUS(r);
  o.err = fs::exists(err) ? read_string(err) : "";
  fs::remove(err);
  return o;
}

std::vector<std::string> listing(const io_test::temp_dir& dir) { return dir.list(); }

// The exit status of child `pid` (128 + N if signal N killed it), waiting at most
// `limit`; -1 (after killing it) if it is still running then.
int wait_exit(pid_t pid, std::chrono::milliseconds limit) {
  int status = 0;
  pid_t r = 0;
  const bool done = sluice_test::eventually([&] { return (r = ::waitpid(pid, &status, WNOHANG)) != 0; },
                                            limit * sluice_test::kTimeoutScale);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  if (r < 0) return -2;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

// Starts the tool with argv, stdin from in_fd and stdout to out_fd (-1: /dev/null),
// stderr to err_path.
pid_t spawn(const fs::path& sluice, const std::vector<std::string>& args, int in_fd, int out_fd,
            const fs::path& err_path) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    sluice_test::default_stop_signals();
    const int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(in_fd >= 0 ? in_fd : devnull, 0);
    ::dup2(out_fd >= 0 ? out_fd : devnull, 1);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(err, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("sluice"));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(sluice.c_str(), argv.data());
    std::_Exit(127);
  }
  return pid;
}

// Starts `SLUICE gzip FIFO OUT`, stderr to /dev/null. ignoring: with SIGHUP (as nohup
// does) and SIGINT (as a script's `&` job) ignored, else the stop signals' defaults.
pid_t gzip_from_fifo(const fs::path& sluice, const fs::path& fifo, const fs::path& out, bool ignoring) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    sluice_test::default_stop_signals();
    if (ignoring) {
      ::signal(SIGHUP, SIG_IGN);
      ::signal(SIGINT, SIG_IGN);
    }
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execl(sluice.c_str(), "sluice", "gzip", fifo.c_str(), out.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  return pid;
}

// Whether process `pid` holds its output temporary open in `dir` (an O_TMPFILE shows as
// "DIR/#INODE (deleted)"; the fallback is named OUT.XXXXXXXX.partial).
bool writes_a_temporary_in(pid_t pid, const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (ec || target.rfind(dir.string() + "/", 0) != 0) continue;
    if (target.find("/#") != std::string::npos || target.find(".partial") != std::string::npos) return true;
  }
  return false;
}

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
  EXPECT_EQ(o.err, "sluice gzip: cannot open missing.log: No such file or directory\n");
  EXPECT_TRUE(listing(dir).empty());
}

// A file name with control bytes (an escape sequence, a newline) is shown as \xNN: the
// message stays one line, and nothing in a name reaches the terminal as a command. They
// were printed raw: `sluice gzip "$(printf 'x\033[2J')"` cleared the screen.
TEST(io_tool, control_bytes_in_a_file_name_are_shown_escaped_on_one_line) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string odd = (dir / "a\x1b[2Jb\nc").string();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"gzip", odd}, std::vector<std::string>{"gunzip", odd + ".gz"},
        std::vector<std::string>{"gunzip", odd}}) {  // the last: no .gz suffix, a usage error
    const pid_t pid = spawn(sluice, args, -1, -1, dir / "err");
    const int status = wait_exit(pid, std::chrono::seconds(60));
    EXPECT_TRUE(status == 1 || status == 2) << status;
    const std::string err = read_string(dir / "err");
    SCOPED_TRACE(err);
    EXPECT_EQ(err.find('\x1b'), std::string::npos);
    EXPECT_EQ(err.find('\n'), err.size() - 1);
    EXPECT_NE(err.find("a\\x1b[2Jb\\x0ac"), std::string::npos);
  }
}

// An output name too long for its directory (over 255 bytes) fails at the start, naming
// the output. It failed only after the whole input was compressed, naming the temporary
// file (".sluice-XXXX.partial") the user never saw; from endless input, never.
TEST(io_tool, an_output_name_too_long_for_its_directory_fails_at_the_start) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string name(256, 'b');
  const outcome r = sh("timeout -s KILL 60 " + quoted(sluice) + " gzip - " + name + ".gz < /dev/zero", dir);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find(name + ".gz: its name is too long"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(".partial"), std::string::npos) << r.err;
  EXPECT_EQ(listing(dir), std::vector<std::string>{});
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
  EXPECT_EQ(cut.err.rfind("sluice gunzip: cut.gz: truncated gzip stream: input ends at byte offset " +
                              std::to_string(gz.size() / 2),
                          0),
            0u)
      << cut.err;
  EXPECT_EQ(std::count(cut.err.begin(), cut.err.end(), '\n'), 1);
  const outcome corrupt = sh(quoted(sluice) + " gunzip --force bad.gz old", dir);
  EXPECT_EQ(corrupt.status, 1);
  EXPECT_EQ(corrupt.err.rfind("sluice gunzip: bad.gz: corrupt gzip data at byte offset", 0), 0u) << corrupt.err;
  EXPECT_EQ(read_string(dir / "old"), "previous contents");  // replaced only by a complete result
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"bad.gz", "cut.gz", "in", "in.gz", "old"}));
}

TEST(io_tool, a_full_disk_and_a_closed_pipe_are_errors) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::random_bytes(1 << 20, 4));
  const outcome full = sh(quoted(sluice) + " gzip in /dev/full", dir);
  EXPECT_EQ(full.status, 1);
  EXPECT_EQ(full.err, "sluice gzip: cannot write /dev/full at byte offset 0: No space left on device\n");
  // The reader of the pipe goes away after 10 bytes (1 MiB cannot fit in the pipe).
  std::string cmd = "(";  // built with append: GCC 12 at -O3 warns falsely about "(" + s, -Wrestrict
  cmd += quoted(sluice);
  cmd += " gzip --level 0 in - ; echo $? > status) | head -c 10 > /dev/null";
  const outcome closed = sh(cmd, dir);
  EXPECT_EQ(read_string(dir / "status"), "1\n");
  fs::remove(dir / "status");
  EXPECT_NE(closed.err.find("sluice gzip: cannot write stdout at byte offset"), std::string::npos)
      << closed.err;
  EXPECT_NE(closed.err.find("Broken pipe"), std::string::npos) << closed.err;
}

// A file size limit (ulimit -f): the write fails with EFBIG, reported like a full disk;
// SIGXFSZ killed the tool with no message (status 153), in the library too.
TEST(io_tool, a_file_size_limit_is_an_error_naming_the_file_not_a_silent_death) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::random_bytes(1 << 20, 5));
  const outcome r = sh("ulimit -f 100 && " + quoted(sluice) + " gzip --level 0 in out", dir);
  EXPECT_EQ(r.status, 1) << r.err;
  // At the limit, not where the failed batch began: 100 blocks (of 512 bytes in dash's
  // ulimit, 1 KiB in bash's) went in one short write, then EFBIG.
  const bool at_limit = r.err == "sluice gzip: cannot write out at byte offset 51200: File too large\n" ||
                        r.err == "sluice gzip: cannot write out at byte offset 102400: File too large\n";
  EXPECT_TRUE(at_limit) << r.err;
  EXPECT_EQ(dir.list(), std::vector<std::string>{"in"});  // no OUT, no temporary
}

// Out of memory (an address-space limit under a 1 GiB --block) names the input, the
// stage and what to change; it said only "std::bad_alloc". Not under sanitizers: their
// shadow memory cannot be mapped under such a limit.
TEST(io_tool, running_out_of_memory_says_so_and_what_to_change) {
  REQUIRE_TOOL();
#if defined(SLUICE_SANITIZER_BUILD)
  GTEST_SKIP() << "an address-space limit breaks the sanitizer's own mappings";
#endif
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::random_bytes(3 << 20, 6));
  // Which allocation fails first depends on the limit (reading a 1 GiB chunk, or the
  // splitter's block); under the smallest, one always does.
  int failed = 0;
  for (const char* kib : {"700000", "1000000", "1200000", "1500000"}) {
    SCOPED_TRACE(kib);
    fs::remove(dir / "out");  // a run that fitted left one
    const outcome r = sh(std::string("ulimit -v ") + kib + " && " + quoted(sluice) + " gzip --force --block 1GiB in out", dir);
    if (r.status == 0) continue;  // it fitted
    ++failed;
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(r.err.rfind("sluice gzip: ", 0), 0U) << r.err;
    EXPECT_EQ(r.err.find("bad_alloc"), std::string::npos) << r.err;
    const bool says = r.err.find("in: out of memory") != std::string::npos ||
                      r.err.find("cannot allocate a chunk of 1073741824 bytes to read in") != std::string::npos;
    EXPECT_TRUE(says) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_EQ(dir.list(), std::vector<std::string>{"in"});  // no OUT, no temporary
  }
  EXPECT_GT(failed, 0);
}

// A small --block reads no smaller chunks than the default: the read budget (1 MiB)
// counts the bytes its chunks hold, and each chunk's storage is at least 256 bytes, so
// `--block 8` read 8 bytes per system call and held 131072 of them: 62 MB resident for a
// 1 MiB input (--block 1: 430 MB), now about 11 MB, as at the default block. Not under
// sanitizers, whose own memory would be measured.
TEST(io_tool, a_tiny_block_keeps_memory_within_the_read_budget) {
  REQUIRE_TOOL();
#if defined(SLUICE_SANITIZER_BUILD)
  GTEST_SKIP() << "resident memory under a sanitizer is mostly its own";
#endif
  constexpr long kLimitKib = 32 << 10;
  rusage before{};
  ::getrusage(RUSAGE_CHILDREN, &before);
  if (before.ru_maxrss >= kLimitKib) GTEST_SKIP() << "an earlier child of this process was larger already";
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::log_text(1 << 20, 11));
  const outcome r = sh(quoted(sluice) + " gzip --block 8 in out", dir);
  ASSERT_EQ(r.status, 0) << r.err;
  rusage after{};
  ::getrusage(RUSAGE_CHILDREN, &after);  // the largest child waited for: the tool
  EXPECT_LT(after.ru_maxrss, kLimitKib) << "KiB resident at the peak";
  EXPECT_EQ(io_test::shell("gzip -dc " + quoted(dir / "out") + " | cmp -s - " + quoted(dir / "in")), 0);
}

// OUT that is IN itself (the same name, a symlink IN pointing at OUT, a hard link) is
// refused even with --force: the input would be swapped for its own output.
TEST(io_tool, an_output_that_is_the_input_is_refused_even_with_force) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string data = io_test::random_bytes(100000, 9);
  write_string(dir / "in", data);
  fs::create_symlink("in", dir / "via-link");
  fs::create_hard_link(dir / "in", dir / "hard");
  const std::string s = quoted(sluice);
  // Also a descriptor written in place that is the input's file: stdout opened on it, a
  // /dev/fd/N, stdin as the input (they overwrote the input while reading it).
  for (const char* cmd : {" gzip --force in in", " gzip --force via-link in", " gzip --force in hard",
                          " gunzip --force in in", " gzip --force ./in in", " gzip in - 1<>in",
                          " gzip in /dev/fd/3 3<>in", " gzip - - <in 1<>hard"}) {
    SCOPED_TRACE(cmd);
    const outcome o = sh(s + cmd, dir);
    EXPECT_EQ(o.status, 1);
    EXPECT_NE(o.err.find(" is the input "), std::string::npos) << o.err;
    EXPECT_EQ(read_string(dir / "in"), data);
  }
  // A symlink OUT is replaced, not followed: that leaves its target (the input) alone.
  fs::create_symlink("in", dir / "out-link");
  EXPECT_EQ(sh(s + " gzip --force in out-link", dir).status, 0);
  EXPECT_EQ(read_string(dir / "in"), data);
  EXPECT_FALSE(fs::is_symlink(dir / "out-link"));
}

// Started with stdin or stdout closed: a clear error, at once. (The tool's signalfd used
// to take the free descriptor 0, and the input stage read signals as data: a hang that
// ignored Ctrl-C, or "not in gzip format"; with stdout closed, output went to it.)
TEST(io_tool, a_closed_stdin_or_stdout_is_a_clear_error_not_a_hang) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", "hello\n");
  const std::string s = quoted(sluice);
  struct c {
    const char* cmd;
    const char* says;
  };
  for (const c& k : {c{" gzip - out.gz <&-", "stdin: Bad file descriptor (standard input is closed)"},
                     c{" gunzip - out <&-", "stdin: Bad file descriptor (standard input is closed)"},
                     c{" gzip in - >&-", "stdout: Bad file descriptor (standard output is closed)"},
                     c{" bench --topology chain:1 --items 100 >&-", "cannot write to standard output: Bad file descriptor"},
                     // Named by path: reopening them would reach the /dev/null the tool
                     // puts on a closed stream (an empty input, a lost output, exit 0).
                     c{" gzip /dev/stdin out.gz <&-", "/dev/stdin: Bad file descriptor (it names a standard stream that is closed)"},
                     c{" gzip in /dev/stdout >&-", "stdout: Bad file descriptor (standard output is closed)"}}) {
    SCOPED_TRACE(k.cmd);
    const outcome o = sh(s + k.cmd, dir);
    EXPECT_EQ(o.status, 1);
    EXPECT_NE(o.err.find(k.says), std::string::npos) << o.err;
  }
  EXPECT_EQ(listing(dir), std::vector<std::string>{"in"});
}

// Without OUT the output is named after IN, which only works for a regular file:
// "gzip /dev/stdin" wrote /dev/stdin.gz into /dev, and "gzip /dev/zero" filled /dev.
TEST(io_tool, an_input_that_is_not_a_regular_file_needs_an_output_name) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  ASSERT_EQ(::mkfifo((dir / "pipe.gz").c_str(), 0600), 0);
  write_string(dir / "in", "x\n");
  fs::create_symlink("in", dir / "link");
  const std::string s = quoted(sluice);
  struct c {
    const char* cmd;
    const char* says;
  };
  for (const c& k : {c{" gzip /dev/zero", "sluice gzip: /dev/zero is not a regular file, so no output name comes from it; give OUT (- for stdout)\n"},
                     c{" gzip /dev/stdin < /dev/null", "sluice gzip: /dev/stdin is not a regular file, so no output name comes from it; give OUT (- for stdout)\n"},
                     c{" gunzip pipe.gz", "sluice gunzip: pipe.gz is not a regular file, so no output name comes from it; give OUT (- for stdout)\n"},
                     // /proc files say "regular"; /dev/stdin is a link to the file redirected in.
                     c{" gzip /proc/self/status", "sluice gzip: /proc/self/status is not a regular file, so no output name comes from it; give OUT (- for stdout)\n"},
                     c{" gzip /dev/stdin < in", "sluice gzip: /dev/stdin is a symbolic link, so no output name comes from it; give OUT (- for stdout)\n"},
                     c{" gzip link", "sluice gzip: link is a symbolic link, so no output name comes from it; give OUT (- for stdout)\n"}}) {
    SCOPED_TRACE(k.cmd);
    const outcome o = sh(s + k.cmd, dir);
    EXPECT_EQ(o.status, 2);
    EXPECT_EQ(o.err, k.says);
  }
  EXPECT_FALSE(fs::exists("/dev/zero.gz"));
  EXPECT_FALSE(fs::exists("/dev/stdin.gz"));
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"in", "link", "pipe.gz"}));
  // Given OUT, a device is an input like any other.
  const outcome named = sh(s + " gzip /dev/null out.gz", dir);
  EXPECT_EQ(named.status, 0) << named.err;
  EXPECT_TRUE(fs::exists(dir / "out.gz"));
  const outcome linked = sh(s + " gzip link link-out.gz", dir);  // so is a link
  EXPECT_EQ(linked.status, 0) << linked.err;
  EXPECT_TRUE(fs::exists(dir / "link-out.gz"));
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
  // OUT a socket file: said so, --force or not (it said "No such device or address"),
  // and the socket stays.
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un at{};
  at.sun_family = AF_UNIX;
  const std::string sock_path = (dir / "sock").string();
  ASSERT_LT(sock_path.size(), sizeof at.sun_path);
  std::memcpy(at.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  for (const char* force : {"", "--force "}) {
    const outcome to_socket = sh(s + " gzip " + force + "in sock", dir);
    EXPECT_EQ(to_socket.status, 1);
    EXPECT_EQ(to_socket.err, "sluice gzip: sock is a socket, not a file; it is not replaced\n");
  }
  struct stat st{};
  EXPECT_TRUE(::lstat(sock_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode));
  ::close(sock);
}

TEST(io_tool, an_interrupt_cancels_the_run_and_leaves_no_output) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "tool interrupt");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  // Input from a FIFO we hold open: the tool is mid-run (output partial file open, input
  // not ended) for as long as we like, with no timing games.
  const fs::path fifo = dir / "in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t pid = gzip_from_fifo(sluice, fifo, dir / "out.gz", false);
  const int w = ::open(fifo.c_str(), O_WRONLY);  // blocks until the tool opened it
  ASSERT_GE(w, 0);
  const std::string data = io_test::log_text(1 << 20, 5);
  ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(sluice_test::eventually([&] { return writes_a_temporary_in(pid, dir.path()); }));
  ::kill(pid, SIGINT);
  const int status = wait_exit(pid, std::chrono::seconds(10));
  ::close(w);
  EXPECT_EQ(status, 128 + SIGINT);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"in.fifo"});
}

// A stop signal the tool was started with ignored stays ignored, as gzip(1) leaves it:
// `nohup sluice gzip big &` then a logout (SIGHUP), or a script's `&` job (SIGINT
// ignored), used to cancel the run and lose its output. Mid-run as in the test above (the
// input a FIFO we hold open), both signals sent, then the input ends: the run completes.
TEST(io_tool, a_signal_ignored_at_start_stays_ignored_and_the_run_completes) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "tool ignored signals");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const fs::path fifo = dir / "in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t pid = gzip_from_fifo(sluice, fifo, dir / "out.gz", true);
  const int w = ::open(fifo.c_str(), O_WRONLY);  // blocks until the tool opened it
  ASSERT_GE(w, 0);
  const std::string data = io_test::log_text(1 << 20, 6);
  ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(sluice_test::eventually([&] { return writes_a_temporary_in(pid, dir.path()); }));
  ::kill(pid, SIGHUP);
  ::kill(pid, SIGINT);
  // A tool that took the signal has gone: the write then fails (EPIPE) instead of killing
  // this test with SIGPIPE.
  const auto old_pipe = ::signal(SIGPIPE, SIG_IGN);
  const ssize_t more = ::write(w, data.data(), data.size());
  ::signal(SIGPIPE, old_pipe);
  EXPECT_EQ(more, static_cast<ssize_t>(data.size())) << "the tool stopped reading: it took an ignored signal";
  ::close(w);
  EXPECT_EQ(wait_exit(pid, std::chrono::seconds(30)), 0);
  write_string(dir / "want", data + data);
  EXPECT_EQ(io_test::shell("gzip -dc " + quoted(dir / "out.gz") + " | cmp -s - " + quoted(dir / "want")), 0);
}

// ---- issue 9: signals, the temporary file, modes, trailing garbage, messages --------

// `sluice gzip - out.gz < FIFO` while the FIFO's writer is open and silent: a signal
// ends it at once (it used to wait for the writer), exit 128 + N, nothing left on disk.
TEST(io_tool, a_signal_ends_a_run_waiting_on_a_silent_stdin_pipe) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "signal on silent stdin");
  REQUIRE_TOOL();
  for (const int sig : {SIGINT, SIGTERM}) {
    io_test::temp_dir dir;
    int p[2];
    ASSERT_EQ(::pipe(p), 0);  // a blocking pipe, like the shell's `< fifo`
    const pid_t pid = spawn(sluice, {"gzip", "-", (dir / "out.gz").string()}, p[0], -1, dir / "err");
    ::close(p[0]);
    ASSERT_TRUE(sluice_test::eventually([&] { return writes_a_temporary_in(pid, dir.path()); }));
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(pid, sig);
    const int status = wait_exit(pid, std::chrono::seconds(5));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    ::close(p[1]);
    EXPECT_EQ(status, 128 + sig) << strsignal(sig);
    // Issue 9 asks for 100 ms (release: ~10 ms measured). A sanitizer build's process exit
    // alone can take a second on a loaded machine; before the fix it never ended.
    EXPECT_LT(ms.count(), sluice_test::kTimeoutScale == 1 ? 100 : 3000) << "ms from the signal to the exit";
    std::printf("[ info ] %s ended the run in %lld ms\n", strsignal(sig), static_cast<long long>(ms.count()));
    EXPECT_EQ(read_string(dir / "err"), "sluice gzip: interrupted by " + std::string(strsignal(sig)) + "; no output kept\n");
    EXPECT_EQ(listing(dir), std::vector<std::string>{"err"});
  }
}

// Stdout is a pipe nobody reads: the writer waits for room; a signal ends it.
TEST(io_tool, a_signal_ends_a_run_blocked_on_a_stdout_pipe_nobody_reads) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "signal on full stdout");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", io_test::random_bytes(4 << 20, 9));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t pid = spawn(sluice, {"gzip", "--level", "1", (dir / "in").string(), "-"}, -1, p[1], dir / "err");
  ::close(p[1]);
  int queued = 0;
  ASSERT_TRUE(sluice_test::eventually([&] { return ::ioctl(p[0], FIONREAD, &queued) == 0 && queued >= 60 << 10; }));
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid, std::chrono::seconds(5)), 128 + SIGTERM);
  ::close(p[0]);
  // What was written to stdout stays written: the message says so ("no output kept" is for
  // a file output, which is removed).
  EXPECT_EQ(read_string(dir / "err"), "sluice gzip: interrupted by " + std::string(strsignal(SIGTERM)) +
                                          "; the output on stdout is incomplete\n");
  // A second signal right after the first also ends it, with the same status.
  ASSERT_EQ(::pipe(p), 0);
  const pid_t again = spawn(sluice, {"gzip", "--level", "1", (dir / "in").string(), "-"}, -1, p[1], dir / "err");
  ::close(p[1]);
  ASSERT_TRUE(sluice_test::eventually([&] { return ::ioctl(p[0], FIONREAD, &queued) == 0 && queued >= 60 << 10; }));
  ::kill(again, SIGINT);
  ::kill(again, SIGINT);
  EXPECT_EQ(wait_exit(again, std::chrono::seconds(5)), 128 + SIGINT);
  ::close(p[0]);
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"err", "in"}));
}

TEST(io_tool, the_output_gets_the_inputs_mode_and_mtime_and_stdin_the_default) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  write_string(dir / "s", io_test::log_text(100'000, 6));
  ASSERT_EQ(::chmod((dir / "s").c_str(), 0600), 0);
  const timespec times[2] = {{1'500'000'000, 0}, {1'600'000'000, 500}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir / "s").c_str(), times, 0), 0);
  ASSERT_EQ(sh("umask 022 && " + s + " gzip s", dir).status, 0);
  struct stat st{};
  ASSERT_EQ(::stat((dir / "s.gz").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 500);
  fs::rename(dir / "s", dir / "orig");
  ASSERT_EQ(sh("umask 022 && " + s + " gunzip s.gz", dir).status, 0);
  ASSERT_EQ(::stat((dir / "s").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'000);
  EXPECT_EQ(read_string(dir / "s"), read_string(dir / "orig"));
  ASSERT_EQ(sh("umask 027 && " + s + " gzip - fromstdin.gz < orig", dir).status, 0);
  ASSERT_EQ(::stat((dir / "fromstdin.gz").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u) << std::oct << (st.st_mode & 07777);
}

// Why the tool cannot be run as `nobody` (setpriv) here, or "" when it can: needs root,
// setpriv(1), and an optimised build (as `nobody` a sanitized tool cannot read its
// suppressions file in the build tree: exit 66).
std::string cannot_run_as_nobody() {
  if (::geteuid() != 0) return "needs root to run the tool as another user";
#if defined(SLUICE_SANITIZER_BUILD)
  return "a sanitized tool run as another user cannot read its suppressions";
#endif
  if (io_test::shell("command -v setpriv > /dev/null") != 0) return "no setpriv";
  return "";
}
#define REQUIRE_NOBODY()                                                   \
  if (const std::string why = cannot_run_as_nobody(); !why.empty()) GTEST_SKIP() << why

// A user who cannot give OUT IN's group (not a member of it) gets a file whose group (the
// user's own) has no more than everyone else: 0644 stays 0644, 0640 becomes 0600. Before,
// every group bit was dropped, so 0644 became 0604 (the group was the one set of users
// that could not read it). Needs root, to run the tool as `nobody` with setpriv(1).
TEST(io_tool, an_output_whose_group_cannot_be_kept_gives_that_group_no_more_than_others) {
  REQUIRE_TOOL();
  REQUIRE_NOBODY();
  io_test::temp_dir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  fs::create_directory(dir / "nb");
  ASSERT_EQ(::chown((dir / "nb").c_str(), 65534, 65534), 0);
  write_string(dir / "in", io_test::log_text(10'000, 3));
  ASSERT_EQ(::chown((dir / "in").c_str(), 65534, 0), 0);  // nobody's, group root: nobody reads it as its owner
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups " + quoted(sluice);
  const std::pair<mode_t, mode_t> cases[] = {{0644, 0644}, {0664, 0644}, {0640, 0600}, {0775, 0755}, {0666, 0666}};
  for (const auto& [in_mode, want] : cases) {
    ASSERT_EQ(::chmod((dir / "in").c_str(), in_mode), 0);
    const outcome o = sh(as_nobody + " gzip --force in nb/out.gz", dir);
    ASSERT_EQ(o.status, 0) << o.err;
    struct stat st{};
    ASSERT_EQ(::stat((dir / "nb/out.gz").c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, 65534u);
    EXPECT_EQ(st.st_mode & 07777, want) << std::oct << "in " << in_mode << ": out " << (st.st_mode & 07777);
  }
}

// A report file the user may not write (0444, their own, in their own directory) is not
// replaced, as `> file` would not write it: refused before the run, the file kept. The
// rename needs only the directory's permission, and replaced it without a word.
TEST(io_tool, a_write_protected_report_is_refused_before_the_run_and_kept) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  std::string tool = quoted(sluice);
  fs::create_directory(dir / "nb");
  write_string(dir / "nb/ro.html", "keep");
  if (::geteuid() == 0) {  // root may write anything: run as nobody
    REQUIRE_NOBODY();
    ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
    ASSERT_EQ(::chown((dir / "nb").c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chown((dir / "nb/ro.html").c_str(), 65534, 65534), 0);
    tool = "setpriv --reuid=65534 --regid=65534 --clear-groups " + tool;
  }
  ASSERT_EQ(::chmod((dir / "nb/ro.html").c_str(), 0444), 0);
  const outcome o = sh(tool + " bench --topology chain:1 --items 1000 --report nb/ro.html > out", dir);
  EXPECT_EQ(o.status, 1) << o.err;
  EXPECT_EQ(o.err, "sluice bench: error: cannot write report nb/ro.html: it is write-protected: Permission denied\n");
  EXPECT_EQ(read_string(dir / "out"), "") << "the run happened first";
  EXPECT_EQ(read_string(dir / "nb/ro.html"), "keep");
}

// Run as root, OUT keeps IN's owner as well as its group, as gzip(1) does: a user's 0600
// file came back root's (they could no longer read their own .gz).
TEST(io_tool, run_as_root_the_output_keeps_the_inputs_owner) {
  REQUIRE_TOOL();
  if (::geteuid() != 0) GTEST_SKIP() << "only root can give a file to another user";
  io_test::temp_dir dir;
  write_string(dir / "o.txt", io_test::log_text(1000, 1));
  ASSERT_EQ(::chown((dir / "o.txt").c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod((dir / "o.txt").c_str(), 0600), 0);
  const std::string s = quoted(sluice);
  ASSERT_EQ(sh(s + " gzip o.txt && " + s + " gunzip o.txt.gz back.txt", dir).status, 0);
  for (const char* name : {"o.txt.gz", "back.txt"}) {
    struct stat st{};
    ASSERT_EQ(::stat((dir / name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_uid, 65534u) << name;
    EXPECT_EQ(st.st_gid, 65534u) << name;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
  }
}

// A replacement the system will refuse (another user's file in a sticky directory such as
// /tmp) fails at the start, naming why, and the file is untouched. It failed only after
// the whole run ("cannot rename ....partial to ...: Operation not permitted").
TEST(io_tool, replacing_another_users_file_in_a_sticky_directory_fails_at_once) {
  REQUIRE_TOOL();
  REQUIRE_NOBODY();
  io_test::temp_dir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);  // sticky, like /tmp
  write_string(dir / "in", io_test::log_text(10'000, 2));
  ASSERT_EQ(::chmod((dir / "in").c_str(), 0644), 0);
  write_string(dir / "x.gz", "root's");
  write_string(dir / "x.html", "root's");
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups " + quoted(sluice);
  const outcome gz = sh(as_nobody + " gzip --force in x.gz", dir);
  EXPECT_EQ(gz.status, 1) << gz.err;
  EXPECT_NE(gz.err.find("sticky directory"), std::string::npos) << gz.err;
  EXPECT_EQ(read_string(dir / "x.gz"), "root's");
  const outcome demo = sh(as_nobody + " demo --bytes 1M --report x.html", dir);
  EXPECT_NE(demo.status, 0) << demo.err;
  EXPECT_NE(demo.err.find("sticky directory"), std::string::npos) << demo.err;
  EXPECT_EQ(read_string(dir / "x.html"), "root's");
  std::vector<std::string> left = listing(dir);
  EXPECT_EQ(left, (std::vector<std::string>{"in", "x.gz", "x.html"}));
}

// A pseudo-terminal's master, its slave ready to open (ptsname), or -1 where there is none.
int open_pty_master() {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master >= 0 && (::grantpt(master) != 0 || ::unlockpt(master) != 0)) {
    ::close(master);
    return -1;
  }
  return master;
}

// Compressed data never goes to a terminal without --force, however OUT names it (it was
// refused only as stdout: /dev/tty, /dev/stderr or a pts path got the binary bytes).
TEST(io_tool, compressed_data_is_not_written_to_a_terminal_named_as_out) {
  REQUIRE_TOOL();
  const int master = open_pty_master();
  if (master < 0) GTEST_SKIP() << "no pseudo-terminal here";
  const std::string pts = ::ptsname(master);
  io_test::temp_dir dir;
  write_string(dir / "a", "hello\n");
  const std::string s = quoted(sluice);
  const outcome o = sh(s + " gzip a " + quoted(fs::path(pts)), dir);
  EXPECT_EQ(o.status, 1) << o.err;
  EXPECT_NE(o.err.find("compressed data not written to a terminal (" + pts + " is one"), std::string::npos) << o.err;
  const outcome via_fd = sh(s + " gzip a /dev/fd/2 2>" + quoted(fs::path(pts)), dir);
  EXPECT_EQ(via_fd.status, 1);
  // With --force it is written (and gunzip to a terminal is fine).
  EXPECT_EQ(sh(s + " gzip --force a " + quoted(fs::path(pts)), dir).status, 0);
  ::close(master);
}

// OUT spelled as another name of stdout is stdout, as /dev/stdout is: "/dev/fd/./1" and
// the like were taken for a file to replace, and the error named a temporary
// ("cannot create /dev/fd/./1.zUgx6rf2.partial: No such file or directory"; a probe).
TEST(io_tool, out_spelled_as_another_name_of_stdout_is_written_to_stdout) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string data = io_test::random_bytes(50000, 3);
  write_string(dir / "a", data);
  const std::string s = quoted(sluice);
  for (const char* out : {"/dev/fd/./1", "/proc/self/fd/../fd/1", "/proc/thread-self/fd/1", "/dev//stdout"}) {
    SCOPED_TRACE(out);
    fs::remove(dir / "a.gz");
    const outcome o = sh(s + " gzip --force a " + out + " > a.gz", dir);
    EXPECT_EQ(o.status, 0) << o.err;
    const outcome back = sh(s + " gunzip a.gz - > a.back", dir);
    EXPECT_EQ(back.status, 0) << back.err;
    const std::string got = read_string(dir / "a.back");
    EXPECT_TRUE(got == data) << got.size() << " bytes back of " << data.size();
  }
}

// Nor is compressed data read from a terminal without --force, as gzip -d refuses:
// `sluice gunzip - out` at a prompt waited for gzip bytes typed by hand.
TEST(io_tool, compressed_data_is_not_read_from_a_terminal) {
  REQUIRE_TOOL();
  const int master = open_pty_master();
  if (master < 0) GTEST_SKIP() << "no pseudo-terminal here";
  const std::string pts = ::ptsname(master);
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  const outcome from_stdin = sh(s + " gunzip - out < " + quoted(fs::path(pts)), dir);
  EXPECT_EQ(from_stdin.status, 1) << from_stdin.err;
  EXPECT_EQ(from_stdin.err, "sluice gunzip: compressed data not read from a terminal (stdin is one; use --force, or redirect)\n");
  const outcome named = sh(s + " gunzip " + quoted(fs::path(pts)) + " out", dir);
  EXPECT_EQ(named.status, 1) << named.err;
  EXPECT_NE(named.err.find("compressed data not read from a terminal (" + pts + " is one"), std::string::npos) << named.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  // With --force it is read: what the terminal gives (here an end of input, ^D queued by
  // the line discipline) is then judged as gzip data.
  ASSERT_EQ(::write(master, "\x04", 1), 1);
  const outcome forced = sh(s + " gunzip --force - out < " + quoted(fs::path(pts)), dir);
  EXPECT_EQ(forced.status, 1) << forced.err;
  EXPECT_EQ(forced.err, "sluice gunzip: stdin: not in gzip format: the input is empty (byte offset 0)\n");
  ::close(master);
}

TEST(io_tool, a_hostile_directory_is_never_followed_or_clobbered) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  write_string(dir / "a", "data\n");
  write_string(dir / "victim", "victim");
  write_string(dir / "a.gz.partial", "a user's file");
  fs::create_symlink(dir / "victim", dir / "b.gz.partial");
  fs::copy_file(dir / "a", dir / "b");
  ASSERT_EQ(sh(s + " gzip a && " + s + " gzip b", dir).status, 0);
  EXPECT_EQ(read_string(dir / "a.gz.partial"), "a user's file");
  EXPECT_EQ(read_string(dir / "victim"), "victim");
  EXPECT_EQ(io_test::shell("gzip -t " + quoted(dir / "a.gz") + " " + quoted(dir / "b.gz")), 0);
  // OUT is a symlink: refused without --force; with it, the link is replaced, not followed.
  fs::create_symlink(dir / "victim", dir / "c.gz");
  const outcome link = sh(s + " gzip a c.gz", dir);
  EXPECT_EQ(link.status, 1);
  EXPECT_EQ(link.err, "sluice gzip: c.gz already exists (use --force to overwrite)\n");
  ASSERT_EQ(sh(s + " gzip --force a c.gz", dir).status, 0);
  EXPECT_FALSE(fs::is_symlink(dir / "c.gz"));
  EXPECT_EQ(read_string(dir / "victim"), "victim");
  // OUT is a directory; IN is a directory.
  fs::create_directory(dir / "d");
  EXPECT_EQ(sh(s + " gzip --force a d", dir).err, "sluice gzip: d is a directory\n");
  EXPECT_EQ(sh(s + " gzip d x.gz", dir).err, "sluice gzip: d is a directory\n");
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"a", "a.gz", "a.gz.partial", "b", "b.gz", "b.gz.partial", "c.gz",
                                                   "d", "victim"}));
}

// OUT a FIFO that nobody reads yet: the tool says it waits for a reader and writes once one
// comes, as gzip and cat do (it used to fail at once: "No such device or address").
TEST(io_tool, an_output_fifo_without_a_reader_yet_is_waited_for) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "fifo reader");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string text = io_test::log_text(200'000, 7);
  write_string(dir / "in", text);
  const fs::path fifo = dir / "out.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const fs::path err = dir / ".err";
  const pid_t pid = spawn(sluice, {"gzip", (dir / "in").string(), fifo.string()}, -1, -1, err);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(sluice_test::eventually(
      [&] { return fs::exists(err) && read_string(err).find("waiting for a reader") != std::string::npos; },
      std::chrono::seconds(20)));
  // Now a reader: everything comes through it.
  const int rd = ::open(fifo.c_str(), O_RDONLY);
  ASSERT_GE(rd, 0);
  std::string gz;
  char buf[65536];
  ssize_t n = 0;
  while ((n = ::read(rd, buf, sizeof buf)) > 0) gz.append(buf, static_cast<std::size_t>(n));
  ::close(rd);
  EXPECT_EQ(wait_exit(pid, std::chrono::seconds(20)), 0) << read_string(err);
  write_string(dir / "got.gz", gz);
  ASSERT_EQ(io_test::shell("gzip -dc " + quoted(dir / "got.gz") + " > " + quoted(dir / "back")), 0);
  EXPECT_EQ(read_string(dir / "back"), text);
  EXPECT_EQ(read_string(err), "sluice gzip: waiting for a reader of " + fifo.string() + "\n");
}

TEST(io_tool, a_read_only_directory_is_a_clear_error) {
  REQUIRE_TOOL();
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only directories";
  io_test::temp_dir dir;
  write_string(dir / "a", "data\n");
  fs::create_directory(dir / "ro");
  ASSERT_EQ(::chmod((dir / "ro").c_str(), 0555), 0);
  const outcome o = sh(quoted(sluice) + " gzip a ro/a.gz", dir);
  ::chmod((dir / "ro").c_str(), 0755);
  EXPECT_EQ(o.status, 1);
  // The output's name too (it named only the directory).
  EXPECT_EQ(o.err, "sluice gzip: cannot create a temporary file in ro (for a.gz): Permission denied\n");
  EXPECT_TRUE(fs::is_empty(dir / "ro"));
}

TEST(io_tool, two_concurrent_runs_writing_one_output_each_write_a_whole_file) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "concurrent tools");
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "x", io_test::log_text(3 << 20, 10));
  write_string(dir / "y", io_test::log_text(2 << 20, 11));
  const std::string s = quoted(sluice);
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(sh("(" + s + " gzip --force x out.gz & " + s + " gzip --force y out.gz & wait)", dir).status, 0);
    ASSERT_EQ(io_test::shell("gzip -dc " + quoted(dir / "out.gz") + " > " + quoted(dir / "back")), 0);
    const std::string back = read_string(dir / "back");
    EXPECT_TRUE(back == read_string(dir / "x") || back == read_string(dir / "y")) << round;
    EXPECT_EQ(listing(dir), (std::vector<std::string>{"back", "out.gz", "x", "y"}));
  }
}

// gzip(1): the data, "decompression OK, trailing garbage ignored", status 2.
TEST(io_tool, trailing_garbage_is_data_then_one_warning_and_status_2_like_gzip) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  ASSERT_EQ(sh("printf 'hello\\n' | gzip -n > g.gz", dir).status, 0);
  const std::string gz = read_string(dir / "g.gz");
  const std::vector<std::string> junk = {"GARBAGE\n", std::string("\x1f\x00" "abc", 5), std::string("\0\0abc", 5),
                                         "PK\x03\x04"};
  for (const std::string& j : junk) {
    write_string(dir / "j.gz", gz + j);
    const outcome file = sh(s + " gunzip --force j.gz out", dir);
    EXPECT_EQ(file.status, 2) << testing::PrintToString(j);
    EXPECT_EQ(file.err, "sluice gunzip: j.gz: decompression OK, trailing garbage ignored (from byte offset " +
                            std::to_string(gz.size()) + ")\n");
    EXPECT_EQ(read_string(dir / "out"), "hello\n");
    const outcome piped = sh(s + " gunzip - - < j.gz > piped", dir);
    EXPECT_EQ(piped.status, 2);
    EXPECT_EQ(piped.err, "sluice gunzip: stdin: decompression OK, trailing garbage ignored (from byte offset " +
                             std::to_string(gz.size()) + ")\n");
    EXPECT_EQ(read_string(dir / "piped"), "hello\n");
    // gzip(1) agrees on the status.
    EXPECT_EQ(io_test::shell("gzip -dc " + quoted(dir / "j.gz") + " > /dev/null 2>&1"), 2);
  }
  write_string(dir / "z.gz", gz + std::string(1024, '\0'));  // zero padding: silent
  const outcome padded = sh(s + " gunzip --force z.gz out", dir);
  EXPECT_EQ(padded.status, 0);
  EXPECT_EQ(padded.err, "");
}

// seq 1 300000 | gzip, then JUNK: stdout gets all 1,988,895 bytes (it got 1,900,544).
TEST(io_tool, stdout_gets_every_valid_member_in_full_before_a_warning_or_an_error) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  ASSERT_EQ(sh("seq 1 300000 > t && gzip -n -c t > t.gz && cp t.gz junk.gz && printf JUNK >> junk.gz", dir).status, 0);
  const outcome junk = sh(s + " gunzip - - < junk.gz > out", dir);
  EXPECT_EQ(junk.status, 2);
  EXPECT_EQ(read_string(dir / "out"), read_string(dir / "t"));
  // A valid member, then a corrupt one: the first in full on stdout, then the error (1).
  std::string bad = read_string(dir / "t.gz");
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x55);
  write_string(dir / "two.gz", read_string(dir / "t.gz") + bad);
  const outcome two = sh(s + " gunzip - - < two.gz > out", dir);
  EXPECT_EQ(two.status, 1);
  EXPECT_EQ(two.err.rfind("sluice gunzip: stdin: corrupt gzip data at byte offset", 0), 0u) << two.err;
  const std::string out = read_string(dir / "out");
  const std::string t = read_string(dir / "t");
  ASSERT_GE(out.size(), t.size());
  EXPECT_EQ(out.substr(0, t.size()), t);
  // To a file, the same input leaves nothing.
  EXPECT_EQ(sh(s + " gunzip two.gz two", dir).status, 1);
  EXPECT_FALSE(fs::exists(dir / "two"));
}

TEST(io_tool, messages_have_one_prefix_and_name_the_input) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  write_string(dir / "plain.gz", "this is not gzip\n");
  const outcome o = sh(s + " gunzip plain.gz", dir);
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "sluice gunzip: plain.gz: not in gzip format: bad header at byte offset 0\n");
  const outcome in = sh(s + " gunzip - - < plain.gz", dir);
  EXPECT_EQ(in.err, "sluice gunzip: stdin: not in gzip format: bad header at byte offset 0\n");
  for (const outcome& x : {o, in}) {
    EXPECT_EQ(x.err.find("gunzip: gunzip:"), std::string::npos) << x.err;
    EXPECT_EQ(x.err.find("read_file:"), std::string::npos) << x.err;
  }
}

// An explicit empty OUT (or IN) is a bad command line naming the argument: `gzip in ""`
// used to take the empty OUT for "not given" and write in.gz.
TEST(io_tool, an_empty_in_or_out_argument_is_a_usage_error_naming_it) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  write_string(dir / "in", "x\n");
  ASSERT_EQ(io_test::shell("gzip -c " + quoted(dir / "in") + " > " + quoted(dir / "z.gz")), 0);
  const std::string s = quoted(sluice);
  struct c {
    const char* cmd;
    const char* says;
  };
  for (const c& k : {c{" gzip in ''", "sluice gzip: OUT is empty (see --help)\n"},
                     c{" gzip --force in ''", "sluice gzip: OUT is empty (see --help)\n"},
                     c{" gunzip z.gz ''", "sluice gunzip: OUT is empty (see --help)\n"},
                     c{" gzip '' out.gz", "sluice gzip: IN is empty (see --help)\n"}}) {
    SCOPED_TRACE(k.cmd);
    const outcome o = sh(s + k.cmd, dir);
    EXPECT_EQ(o.status, 2);
    EXPECT_EQ(o.err, k.says);
    EXPECT_EQ(listing(dir), (std::vector<std::string>{"in", "z.gz"}));
  }
}


// A regular file whose size changes while it is read (here a /proc file: its size is 0,
// its content is not) is compressed as read, kept, with gzip(1)'s warning and the tool's
// warning status, 2 (as gunzip's trailing garbage).
TEST(io_tool, a_file_whose_size_changes_while_read_is_kept_with_a_warning_and_status_2) {
  REQUIRE_TOOL();
  const char* const proc = "/proc/version";
  struct stat st{};
  if (::stat(proc, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 0 || read_string(proc).empty()) {
    GTEST_SKIP() << proc << " is not a regular file of size 0 with content here";
  }
  io_test::temp_dir dir;
  const outcome o = sh(quoted(sluice) + " gzip " + proc + " out.gz", dir);
  EXPECT_EQ(o.status, 2);
  EXPECT_EQ(o.err, std::string("sluice gzip: ") + proc + ": file size changed while zipping\n");
  ASSERT_EQ(listing(dir), std::vector<std::string>{"out.gz"});
  ASSERT_EQ(io_test::shell("gzip -dc " + quoted(dir / "out.gz") + " > " + quoted(dir / "back")), 0);
  EXPECT_EQ(read_string(dir / "back"), read_string(proc));
  // A file that does not change: no warning.
  write_string(dir / "same", io_test::log_text(100'000, 14));
  const outcome same = sh(quoted(sluice) + " gzip same", dir);
  EXPECT_EQ(same.status, 0);
  EXPECT_EQ(same.err, "");
}

TEST(io_tool, level_9_is_never_larger_than_level_1) {
  REQUIRE_TOOL();
  io_test::temp_dir dir;
  const std::string s = quoted(sluice);
  // Words from a small vocabulary (issue 9: 4,952,937 bytes at -9 vs 4,866,263 at -1).
  std::string words;
  io_test::rng r(12);
  static const char* const kWords[] = {"alpha", "beta", "gamma", "delta", "stage", "graph", "the", "of", "sluice"};
  while (words.size() < (std::size_t{3} << 20)) {
    words += kWords[r.next() % std::size(kWords)];
    words += ' ';
  }
  write_string(dir / "words", words);
  std::uintmax_t previous = UINTMAX_MAX;
  for (const char* level : {"1", "3", "6", "8", "9"}) {
    ASSERT_EQ(sh(s + " gzip --force --level " + level + " words w" + level + ".gz", dir).status, 0);
    const std::uintmax_t size = fs::file_size(dir / (std::string("w") + level + ".gz"));
    EXPECT_LE(size, previous) << "level " << level;
    previous = size;
  }
}

}  // namespace
