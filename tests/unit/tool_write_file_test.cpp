// The tool's report writer (tools/common/write_file.hpp): a report is never visible under
// any name half-written or more readable than its final mode, and a failure leaves no file.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/write_file.hpp"
#include "support/watchdog.hpp"

namespace {

struct seen_entry {
  std::string name;
  off_t size = 0;
  mode_t mode = 0;
};

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

// While a large report replaces a private (0600) one, a second thread lists the directory
// as fast as it can: every file it sees is whole and 0600. The old writer made a named
// temporary file with the umask's mode (0644) and filled it in place, so this thread saw
// it half-written and readable by others.
TEST(ToolWriteFile, AReportIsNeverVisibleHalfWrittenOrMoreReadableThanItsFinalMode) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "write_whole_file");
  char tmpl[] = "/tmp/sluice_write_file_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/private.html";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("old\n", f);
    std::fclose(f);
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  const mode_t old_umask = ::umask(022);
  const std::string content(32u << 20, 'r');
  std::atomic<bool> done{false};
  std::vector<seen_entry> seen;
  std::thread watcher([&] {
    while (!done.load()) {
      for (const std::string& n : names_in(dir)) {
        struct stat st{};
        if (::lstat((dir + "/" + n).c_str(), &st) != 0) continue;  // gone meanwhile
        seen.push_back({n, st.st_size, static_cast<mode_t>(st.st_mode & 07777)});
      }
    }
  });
  sluice::tool::write_whole_file(path, content);
  done.store(true);
  watcher.join();
  ::umask(old_umask);
  std::size_t looks = 0;
  for (const seen_entry& e : seen) {
    if (e.name == "private.html" && e.size == 4) continue;  // the old report
    ++looks;
    EXPECT_EQ(e.size, static_cast<off_t>(content.size())) << e.name << " seen half-written";
    EXPECT_EQ(e.mode, 0600u) << e.name << " seen with mode " << std::oct << e.mode;
  }
  std::printf("the watcher looked %zu times at a new file beside the report\n", looks);
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(content.size()));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(names_in(dir), std::vector<std::string>{"private.html"}) << "a temporary file was left";
  std::remove(path.c_str());
  ::rmdir(dir.c_str());
}

// A new report gets 0666 less the umask; one that cannot be written (its directory is
// gone) is an error naming it and leaves nothing.
TEST(ToolWriteFile, ANewReportFollowsTheUmaskAndAFailureLeavesNothing) {
  char tmpl[] = "/tmp/sluice_write_file_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/new.html";
  const mode_t old_umask = ::umask(027);
  sluice::tool::write_whole_file(path, "<html></html>\n");
  ::umask(old_umask);
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  std::remove(path.c_str());
  const std::string missing = dir + "/no/such/dir/r.html";
  try {
    sluice::tool::write_whole_file(missing, "x");
    ADD_FAILURE() << "writing into a missing directory did not fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write report " + missing), std::string::npos) << e.what();
  }
  EXPECT_TRUE(names_in(dir).empty());
  ::rmdir(dir.c_str());
}

}  // namespace
