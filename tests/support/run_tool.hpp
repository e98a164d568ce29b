// tests/support/run_tool.hpp — runs the built `sluice` tool from a test, bounded.
//
//   if (sluice_test::tool_path().empty()) GTEST_SKIP() << "built without the sluice tool";
//   const sluice_test::tool_result r = sluice_test::run_tool({"bench", "--items", "1000"}, 60);
//   EXPECT_EQ(r.status, 0) << r.err;
//
// Requires: the test target defines SLUICE_TOOL_PATH (the tool's path, from the build);
//   without it tool_path() is empty and tests skip. A shell with `timeout` (coreutils).
// Guarantees: run_tool returns once the tool has exited; a tool still running after
//   `limit_s` seconds is killed (SIGKILL), so a hang fails the test instead of blocking
//   it. status is the exit code, 128+N for signal N (137 for the kill). The tool's
//   progress lines follow options.progress (SLUICE_PROGRESS); under AddressSanitizer its
//   quarantine is cut to 1 MiB, which would otherwise show up as resident memory in the
//   tool's own measurements. Arguments are passed to the shell single-quoted, as given.
// Non-guarantees: out and err are read only after the tool ends (not streamed).
// Lifetime: the stderr file is removed before run_tool returns.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace sluice_test {

struct tool_result {
  int status = -1;  // exit code; 128+N for a signal
  std::string out;  // stdout (and stderr, with merge_stderr)
  std::string err;  // stderr
};

struct tool_options {
  const char* progress = "plain";  // SLUICE_PROGRESS: plain | live | off
  bool merge_stderr = false;       // stderr into out (2>&1), err left empty
};

// The built tool, or "" when the build has none.
inline std::string tool_path() {
#ifdef SLUICE_TOOL_PATH
  return SLUICE_TOOL_PATH;
#else
  return {};
#endif
}

// s as one single-quoted shell word.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

inline std::string read_whole_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `cmd` with sh; out is its stdout, status its exit code (128+N for signal N; -1 if
// it could not be started). The command line must bound itself (timeout -s KILL ...).
inline tool_result run_shell(const std::string& cmd) {
  tool_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  if (WIFEXITED(st)) {
    r.status = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    r.status = 128 + WTERMSIG(st);
  }
  return r;
}

// Runs the tool with `args` under a hard time limit (a hang fails instead of blocking).
inline tool_result run_tool(const std::vector<std::string>& args, int limit_s = 240, tool_options o = {}) {
  static std::atomic<unsigned> serial{0};
  tool_result r;
  const std::string err_path = ::testing::TempDir() + "sluice_tool_stderr_" + std::to_string(::getpid()) + "_" +
                               std::to_string(serial.fetch_add(1));
  std::string cmd = std::string("SLUICE_PROGRESS=") + o.progress + " ";
#if defined(SLUICE_SANITIZER_BUILD) && !defined(SLUICE_TSAN_BUILD)
  // AddressSanitizer keeps freed memory in a quarantine (256 MiB by default), which would
  // show up as resident memory in the demo's and stress's measurements.
  const char* asan = std::getenv("ASAN_OPTIONS");
  cmd += "ASAN_OPTIONS=" +
         shell_quote(std::string(asan ? asan : "") + ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64") + " ";
#endif
  cmd += "timeout -s KILL " + std::to_string(limit_s) + " " + shell_quote(tool_path());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += o.merge_stderr ? std::string(" 2>&1") : " 2>" + shell_quote(err_path);
  r = run_shell(cmd);
  if (r.status == -1) return r;
  if (!o.merge_stderr) {
    r.err = read_whole_file(err_path);
    std::remove(err_path.c_str());
  }
  return r;
}

}  // namespace sluice_test
