// io::read_file / write_file / read_fd / write_fd: chunking, the partial-file rule on a
// failure in every stage, and clear errors for a missing file, a full disk, a closed pipe.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "sluice/pipeline.hpp"
#include "support/graph_support.hpp"
#include "support/no_new_descriptors.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;
namespace fs = std::filesystem;
using io_test::runner;
using sluice::buffer;

// Runs a source's function on this thread into a big channel; returns the chunks.
template <class Desc>
std::vector<std::string> chunks_of(Desc d) {
  auto [tx, rx] = sluice::bounded<buffer>(1 << 16);
  d.fn(tx, std::stop_token{});
  tx.reset();
  std::vector<std::string> out;
  for (buffer& b : rx) out.emplace_back(b.view());
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(io_file, read_file_pushes_full_chunks_and_never_an_empty_one) {
  io_test::temp_dir dir;
  constexpr std::size_t kChunk = 4096;
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, kChunk - 1, kChunk, kChunk + 1, 3 * kChunk,
                              3 * kChunk + 5}) {
    const std::string data = io_test::random_bytes(n, n);
    io_test::write_string(dir / "f", data);
    const auto chunks = chunks_of(io::read_file(dir / "f", {.chunk = kChunk}));
    std::string joined;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      EXPECT_FALSE(chunks[i].empty());
      if (i + 1 < chunks.size()) {
        EXPECT_EQ(chunks[i].size(), kChunk);
      }
      joined += chunks[i];
    }
    EXPECT_EQ(chunks.size(), (n + kChunk - 1) / kChunk) << n;
    EXPECT_EQ(joined, data) << n;
  }
}

TEST(io_file, descriptors_default_to_a_64k_byte_budget_and_their_names) {
  EXPECT_EQ(io::read_file("x").options.capacity, io::kByteBudget);
  EXPECT_EQ(io::read_file("x").options.name, "read_file");
  EXPECT_EQ(io::write_file("x").options.name, "write_file");
  EXPECT_EQ(io::write_fd(1).options.capacity, io::kByteBudget);
  EXPECT_EQ(io::read_file("x", {}, {.capacity = 1 << 20, .name = "in"}).options.capacity, std::size_t{1} << 20);
  EXPECT_EQ(io::read_file("x", {}, {.capacity = 1 << 20, .name = "in"}).options.name, "in");
}

TEST(io_file, a_missing_file_is_an_error_naming_the_path) {
  io_test::temp_dir dir;
  const fs::path p = dir / "missing.log";
  try {
    chunks_of(io::read_file(p));
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_EQ(std::string(e.what()), "read_file: cannot open " + p.string() + ": No such file or directory");
    EXPECT_EQ(e.errno_value(), ENOENT);
  }
  EXPECT_NE(error_of([&] { chunks_of(io::read_file(dir.path())); }).find("is a directory"), std::string::npos);
}

TEST(io_file, write_file_commits_by_rename_and_counts_progress) {
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(1 << 20, 1);
  io_test::write_string(dir / "in", data);
  std::atomic<std::uint64_t> read{0};
  std::atomic<std::uint64_t> written{0};
  runner::run(io::read_file(dir / "in", {.progress = &read}),
              io::write_file(dir / "out", {.fsync = true, .progress = &written}));
  EXPECT_EQ(io_test::read_string(dir / "out"), data);
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"in", "out"}));
  EXPECT_EQ(read.load(), data.size());
  EXPECT_EQ(written.load(), data.size());
}

// A through stage that passes `ok` buffers on, then throws.
auto failing_stage(int ok) {
  return sluice::through<buffer>(
      [ok](sluice::receiver<buffer>& in, sluice::sender<buffer>& out) {
        int n = 0;
        for (buffer& b : in) {
          if (n++ == ok) throw std::runtime_error("injected failure");
          if (!out.push(std::move(b))) return;
        }
      },
      io::byte_stage_options({}, "failing"));
}

// The sink must have started writing before the failure for the test to mean anything:
// a source that waits for the writer's temporary file to exist, then fails.
auto source_failing_after_partial_exists(io::file_writer w) {
  return sluice::from<buffer>([w](sluice::sender<buffer>& out) {
    for (int i = 0; i < 4; ++i) out.push(buffer::copy_of(io_test::log_text(50'000, i)));
    EXPECT_TRUE(sluice_test::eventually([&] { return w.writing(); }));
    throw std::runtime_error("source failed");
  }, io::byte_stage_options({}, "src"));
}

TEST(io_file, a_failure_in_the_source_leaves_no_file_and_keeps_an_older_one) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "source failure");
  io_test::temp_dir dir;
  io_test::write_string(dir / "out", "older contents");
  auto sink = io::write_file(dir / "out");
  EXPECT_EQ(error_of([&] {
              runner::run(source_failing_after_partial_exists(sink.fn), io::gzip(), sink);
            }),
            "source failed");
  EXPECT_EQ(dir.list(), std::vector<std::string>{"out"});
  EXPECT_EQ(io_test::read_string(dir / "out"), "older contents");
}

TEST(io_file, a_failure_in_a_middle_stage_leaves_no_file) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "middle failure");
  io_test::temp_dir dir;
  io_test::write_string(dir / "in", io_test::log_text(1 << 20, 2));
  for (const int ok : {0, 3}) {
    EXPECT_EQ(error_of([&] {
                runner::run(io::read_file(dir / "in", {.chunk = 4096}), failing_stage(ok),
                            io::write_file(dir / "out"));
              }),
              "injected failure");
    EXPECT_EQ(dir.list(), std::vector<std::string>{"in"}) << ok;
  }
}

TEST(io_file, a_corrupt_stream_in_gunzip_leaves_no_file) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "in", io_test::log_text(2 << 20, 3));
  ASSERT_EQ(io_test::shell("gzip -c " + io_test::quoted(dir / "in") + " > " + io_test::quoted(dir / "in.gz")), 0);
  std::string gz = io_test::read_string(dir / "in.gz");
  gz[gz.size() * 3 / 4] = static_cast<char>(gz[gz.size() * 3 / 4] ^ 0x40);
  io_test::write_string(dir / "in.gz", gz);
  const std::string msg = error_of([&] {
    runner::run(io::read_file(dir / "in.gz", {.chunk = 4096}), io::gunzip(), io::write_file(dir / "out"));
  });
  EXPECT_NE(msg.find("gunzip: corrupt gzip data at byte offset"), std::string::npos) << msg;
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"in", "in.gz"}));
}

TEST(io_file, a_failure_of_the_writer_itself_removes_its_partial_file) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "failed commit");
  io_test::temp_dir dir;
  io::file_writer w(dir / "out", {});
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::string msg = "no error";
  std::thread t([&, rx = std::move(rx)]() mutable {
    try {
      w(rx, std::stop_token{});
    } catch (const io::error& e) {
      msg = e.what();
    }
  });
  ASSERT_TRUE(tx.push(buffer::copy_of("data\n")));
  ASSERT_TRUE(sluice_test::eventually([&] { return w.writing(); }));
  // A directory appears at the path after the start's check: rename(file, non-empty
  // directory) fails at the commit.
  fs::create_directory(dir / "out");
  io_test::write_string(dir / "out" / "x", "x");
  tx.close();
  t.join();
  EXPECT_NE(msg.find("write_file: cannot rename " + (dir / "out.").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find(".partial to " + (dir / "out").string() + ": Is a directory"), std::string::npos) << msg;
  EXPECT_EQ(dir.list(), std::vector<std::string>{"out"});
  const std::string missing =
      error_of([&] { runner::run(io_test::string_source("x"), io::write_file(dir / "no" / "such" / "dir")); });
  EXPECT_EQ(missing, "write_file: cannot create a temporary file in " + (dir / "no" / "such").string() +
                         " (for dir): No such file or directory");
}

TEST(io_file, a_cancelled_or_stopped_input_is_not_committed) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "cancel/stop");
  io_test::temp_dir dir;
  for (int stop_instead = 0; stop_instead < 2; ++stop_instead) {
    io::file_writer w(dir / "out", {});
    auto [tx, rx] = sluice::bounded<buffer>(16);
    std::stop_source stop;
    std::thread t([&, rx = std::move(rx)]() mutable { w(rx, stop.get_token()); });
    ASSERT_TRUE(tx.push(buffer::copy_of("some bytes")));
    ASSERT_TRUE(sluice_test::eventually([&] { return w.writing(); }));
    if (stop_instead != 0) {
      stop.request_stop();
      tx.reset();  // an end that a teardown stop request turns into an abort
    } else {
      tx.cancel();
    }
    t.join();
    EXPECT_FALSE(w.committed());
    EXPECT_TRUE(dir.list().empty()) << stop_instead;
  }
}

TEST(io_file, the_last_copy_of_an_unfinished_writer_removes_the_partial_file) {
  io_test::temp_dir dir;
  {
    io::file_writer w(dir / "out", {});
    auto [tx, rx] = sluice::bounded<buffer>(16);
    // Run the writer to the point where the partial file exists and the input ended by
    // a close, but make the commit fail: the directory path is taken.
    fs::create_directory(dir / "out");
    io_test::write_string(dir / "out" / "keep", "k");
    tx.push(buffer::copy_of("abc"));
    tx.reset();
    EXPECT_THROW(w(rx, std::stop_token{}), io::error);
    EXPECT_FALSE(w.writing());
    EXPECT_EQ(dir.list(), std::vector<std::string>{"out"});
  }
  EXPECT_EQ(dir.list(), std::vector<std::string>{"out"});
}

TEST(io_file, read_fd_and_write_fd_move_bytes_through_pipes) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "pipes");
  int in_pipe[2];
  int out_pipe[2];
  ASSERT_EQ(::pipe(in_pipe), 0);
  ASSERT_EQ(::pipe(out_pipe), 0);
  const std::string data = io_test::random_bytes(3 << 20, 5);
  std::thread feeder([&] {
    std::size_t off = 0;
    while (off < data.size()) {
      const ssize_t w = ::write(in_pipe[1], data.data() + off, std::min<std::size_t>(10'000, data.size() - off));
      ASSERT_GT(w, 0);
      off += static_cast<std::size_t>(w);
    }
    ::close(in_pipe[1]);
  });
  std::string got;
  std::thread drain([&] {
    char buf[8192];
    ssize_t r;
    while ((r = ::read(out_pipe[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(r));
  });
  runner::run(io::read_fd(in_pipe[0]), io::write_fd(out_pipe[1]));
  ::close(out_pipe[1]);
  feeder.join();
  drain.join();
  ::close(in_pipe[0]);
  ::close(out_pipe[0]);
  EXPECT_EQ(got, data);
}

// A descriptor not open for writing (a pipe's read end; stdin given as stdout) fails
// with EBADF, as write(2) on it does. It was opened again through /proc/self/fd for
// writing, which a pipe allows: the bytes went into the pipe and run() succeeded (a probe;
// the tool's `1<&0` hung writing into its own stdin).
TEST(io_file, write_fd_on_a_descriptor_not_open_for_writing_fails_with_ebadf) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "read end");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  try {
    runner::run(sluice::from<buffer>([](sluice::sender<buffer>& out) { out.push(buffer::copy_of("hello\n")); }),
                io::write_fd(p[0], {}, {}, "the read end"));
    ADD_FAILURE() << "write_fd on a pipe's read end succeeded";
  } catch (const io::error& e) {
    EXPECT_EQ(e.errno_value(), EBADF) << e.what();
    EXPECT_NE(std::string(e.what()).find("the read end"), std::string::npos) << e.what();
  }
  int queued = -1;
  ASSERT_EQ(::ioctl(p[0], FIONREAD, &queued), 0);
  EXPECT_EQ(queued, 0) << "bytes went into the pipe";
  ::close(p[0]);
  ::close(p[1]);
}

// Out of descriptors, the eventfd a read of a pipe waits with cannot be made: the error
// names the stage and what it reads ("io: cannot create an eventfd" named neither).
TEST(io_file, out_of_descriptors_a_pipe_reader_names_itself_and_its_input) {
#ifdef SLUICE_SANITIZER_BUILD
  GTEST_SKIP() << "a sanitizer's runtime needs descriptors of its own (UBSan's checks failed with none)";
#endif
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  auto d = io::read_fd(p[0]);
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::stop_source stop;
  std::string msg;
  {
    sluice_test::no_new_descriptors full;
    ASSERT_TRUE(full.ok());
    msg = error_of([&] { d.fn(tx, stop.get_token()); });
  }
  EXPECT_NE(msg.find("read_fd: cannot create an eventfd to wait on fd " + std::to_string(p[0])), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("Too many open files"), std::string::npos) << msg;
  ::close(p[0]);
  ::close(p[1]);
}

TEST(io_file, a_stop_request_wakes_read_fd_blocked_on_a_quiet_pipe) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "quiet pipe");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  auto d = io::read_fd(p[0]);
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::stop_source stop;
  std::thread t([&, tx = std::move(tx)]() mutable { d.fn(tx, stop.get_token()); });
  ASSERT_EQ(::write(p[1], "abc", 3), 3);
  auto first = rx.pop();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->view(), "abc");
  stop.request_stop();  // the reader is (or will be) blocked in poll on a quiet pipe
  t.join();
  EXPECT_FALSE(rx.pop().has_value());  // it ended, closing its output
  ::close(p[0]);
  ::close(p[1]);
}

TEST(io_file, a_full_disk_is_an_error_naming_the_fd_and_offset) {
  const int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string msg = error_of([&] {
    runner::run(io_test::string_source(std::string(100'000, 'a')), io::write_fd(fd, {}, {}, "/dev/full"));
  });
  ::close(fd);
  EXPECT_EQ(msg, "write_fd: cannot write /dev/full at byte offset 0: No space left on device");
}

TEST(io_file, a_closed_pipe_is_an_error_not_a_killed_process) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);  // nobody will ever read
  const std::string msg = error_of([&] {
    runner::run(io_test::string_source(std::string(100'000, 'a')), io::write_fd(p[1], {}, {}, "stdout"));
  });
  ::close(p[1]);
  EXPECT_EQ(msg, "write_fd: cannot write stdout at byte offset 0: Broken pipe");
}

// ---- the temporary file (issue 9, items 3 and 6) ------------------------------------

TEST(io_file, write_file_never_touches_a_file_or_symlink_named_like_a_partial_file) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "victim", "the victim's data");
  io_test::write_string(dir / "out.partial", "a user's own file");
  fs::create_symlink(dir / "victim", dir / "out2.partial");
  runner::run(io_test::string_source("new data\n"), io::write_file(dir / "out"));
  runner::run(io_test::string_source("more\n"), io::write_file(dir / "out2"));
  EXPECT_EQ(error_of([&] { runner::run(io_test::string_source("x"), failing_stage(0), io::write_file(dir / "out3")); }),
            "injected failure");
  EXPECT_EQ(io_test::read_string(dir / "out"), "new data\n");
  EXPECT_EQ(io_test::read_string(dir / "out2"), "more\n");
  EXPECT_EQ(io_test::read_string(dir / "out.partial"), "a user's own file");
  EXPECT_EQ(io_test::read_string(dir / "victim"), "the victim's data");
  EXPECT_TRUE(fs::is_symlink(dir / "out2.partial"));
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"out", "out.partial", "out2", "out2.partial", "victim"}));
}

TEST(io_file, a_symlink_at_the_path_is_replaced_not_followed) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "victim", "the victim's data");
  fs::create_symlink(dir / "victim", dir / "out");
  runner::run(io_test::string_source("new\n"), io::write_file(dir / "out"));
  EXPECT_FALSE(fs::is_symlink(dir / "out"));
  EXPECT_EQ(io_test::read_string(dir / "out"), "new\n");
  EXPECT_EQ(io_test::read_string(dir / "victim"), "the victim's data");
}

// A path that is a device, FIFO or socket is never replaced by a file (as root, a
// write_file onto /dev/null used to turn /dev/null into a regular file).
TEST(io_file, a_fifo_or_device_at_the_path_is_never_replaced) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "fifo path");
  io_test::temp_dir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  const std::string e = error_of([&] { runner::run(io_test::string_source("x\n"), io::write_file(dir / "fifo")); });
  EXPECT_NE(e.find((dir / "fifo").string() + " is a FIFO, not a file; it is not replaced"), std::string::npos) << e;
  struct stat st{};
  ASSERT_EQ(::lstat((dir / "fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(dir.list(), std::vector<std::string>{"fifo"});  // no temporary left either
  if (::geteuid() == 0) {  // a device node of our own (a copy of /dev/null's numbers)
    ASSERT_EQ(::mknod((dir / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
    const std::string d = error_of([&] { runner::run(io_test::string_source("x\n"), io::write_file(dir / "null")); });
    EXPECT_NE(d.find("is a character device"), std::string::npos) << d;
    ASSERT_EQ(::lstat((dir / "null").c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
  }
}

// A directory at the path is refused when the writer starts, naming the path; it used to
// fail only at the commit, after the whole input, naming the temporary.
TEST(io_file, a_directory_at_the_path_is_refused_at_the_start) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "directory path");
  io_test::temp_dir dir;
  fs::create_directory(dir / "adir");
  try {
    runner::run(io_test::string_source("x\n"), io::write_file(dir / "adir"));
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_EQ(std::string(e.what()), "write_file: cannot write " + (dir / "adir").string() + ": it is a directory");
    EXPECT_EQ(e.errno_value(), EISDIR);
  }
  EXPECT_TRUE(fs::is_directory(dir / "adir"));
  EXPECT_TRUE(fs::is_empty(dir / "adir"));
  EXPECT_EQ(dir.list(), std::vector<std::string>{"adir"});  // no temporary left either
}

// A file truncated by another process while read_file reads it (copytruncate log
// rotation) is an error saying so; it used to end as a short stream, as if complete.
TEST(io_file, a_file_truncated_while_it_is_read_is_an_error_not_a_short_stream) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "truncated while read");
  io_test::temp_dir dir;
  constexpr std::size_t kChunk = 4096;
  io_test::write_string(dir / "f", io_test::random_bytes(64 * kChunk, 3));
  auto d = io::read_file(dir / "f", {.chunk = kChunk});
  auto [tx, rx] = sluice::bounded<buffer>(2);  // the reader is held back a few chunks in
  std::exception_ptr failed;
  std::thread t([&, tx = std::move(tx)]() mutable {
    try {
      d.fn(tx, std::stop_token{});
    } catch (...) {
      failed = std::current_exception();
    }
    tx.close();
  });
  ASSERT_TRUE(rx.pop_for(std::chrono::seconds(10)).has_value());
  ASSERT_EQ(::truncate((dir / "f").c_str(), 8 * kChunk), 0);  // it has read at most 4 chunks
  std::size_t read = kChunk;
  while (auto b = rx.pop_for(std::chrono::seconds(10))) read += b->size();
  t.join();
  ASSERT_TRUE(failed) << "no error; " << read << " bytes read";
  try {
    std::rethrow_exception(failed);
  } catch (const io::error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "f").string() + " shrank while it was read (from " +
                                         std::to_string(64 * kChunk) + " to " + std::to_string(8 * kChunk) + " bytes"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(e.errno_value(), EIO);
  }
}

// Byte stages are one sequence each: replicas are refused by name (two copies of
// write_file shared one temporary and saved part of the stream; two of read_file read it
// twice; two of gzip wrote a corrupt file).
TEST(io_file, byte_stages_refuse_replicas) {
  const sluice::stage_options two{.replicas = 2};
  auto refused = [](const std::function<void()>& f, const std::string& stage) {
    try {
      f();
      ADD_FAILURE() << stage << ": replicas accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("stage '" + stage + "' cannot have replicas"), std::string::npos) << e.what();
    }
  };
  refused([&] { (void)io::read_file("x", {}, two); }, "read_file");
  refused([&] { (void)io::write_file("x", {}, two); }, "write_file");
  refused([&] { (void)io::read_fd(0, {}, two); }, "read_fd");
  refused([&] { (void)io::write_fd(1, {}, two); }, "write_fd");
  refused([&] { (void)io::gzip(6, two); }, "gzip");
  refused([&] { (void)io::gunzip({}, two); }, "gunzip");
  refused([&] { (void)io::lines({}, two); }, "lines");
  refused([&] { (void)io::join_lines({}, two); }, "join_lines");
}

// chunk 0 reads in the default chunks (as the codecs take 0; it used to mean one byte a
// buffer); a chunk too big to allocate is an io::error naming it and the file; an empty
// path is refused when the stage is made.
TEST(io_file, odd_chunks_and_an_empty_path_are_handled_by_name) {
  io_test::temp_dir dir;
  const std::string data = io_test::random_bytes(200'000, 4);
  io_test::write_string(dir / "in", data);
  const auto zero = chunks_of(io::read_file(dir / "in", {.chunk = 0}));
  ASSERT_EQ(zero.size(), 4u);  // 3 x 64 KiB + the rest
  EXPECT_EQ(zero[0].size(), io::kChunk);
#if !defined(SLUICE_SANITIZER_BUILD)  // a sanitizer's allocator aborts on such a size instead of throwing
  const std::string e = error_of([&] { (void)chunks_of(io::read_file(dir / "in", {.chunk = std::size_t{1} << 60})); });
  EXPECT_NE(e.find("cannot allocate a chunk of " + std::to_string(std::size_t{1} << 60) + " bytes to read " +
                   (dir / "in").string()),
            std::string::npos)
      << e;
#endif
  EXPECT_THROW((void)io::read_file(""), std::invalid_argument);
  EXPECT_THROW((void)io::write_file(""), std::invalid_argument);
}

// read_fd of a negative or closed descriptor fails at once with EBADF naming it (a
// negative one used to wait for ever: poll() skips it).
TEST(io_file, read_fd_of_a_bad_descriptor_is_ebadf_at_once) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "bad fd");
  for (const int fd : {-1, -5}) {
    const std::string e = error_of([&] { (void)chunks_of(io::read_fd(fd)); });
    EXPECT_NE(e.find("Bad file descriptor"), std::string::npos) << fd << ": " << e;
  }
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);
  ::close(p[1]);
  const std::string e = error_of([&] { (void)chunks_of(io::read_fd(p[0])); });
  EXPECT_NE(e.find("Bad file descriptor"), std::string::npos) << e;
}

// A pipe that trickles: each short read goes on in a buffer of its own size, not in a
// 64 KiB one, so the channel's byte budget bounds the memory behind it too (1-byte reads
// in 64 KiB buffers held gigabytes behind a 64 KiB budget).
TEST(io_file, short_reads_go_on_in_buffers_of_their_own_size) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "trickle");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const std::string data = io_test::random_bytes(200'000, 9);
  std::atomic<std::size_t> received{0};
  std::thread feeder([&] {
    for (std::size_t off = 0; off < data.size();) {  // small writes: the reads come short
      // The first 20 writes wait until the reader has passed on the one before, so those
      // reads are short however the threads are scheduled (on a loaded machine the pipe
      // could fill before the reader ran, and every read came whole). Bounded: a reader
      // that never passes it on fails the test through the watchdog, not here.
      if (off < 2000) (void)sluice_test::eventually([&] { return received.load() >= off; }, std::chrono::seconds(20));
      const ssize_t w = ::write(p[1], data.data() + off, std::min<std::size_t>(100, data.size() - off));
      ASSERT_GT(w, 0);
      off += static_cast<std::size_t>(w);
    }
    ::close(p[1]);
  });
  auto [tx, rx] = sluice::bounded<buffer>(1 << 16);
  std::thread reader([&, tx = std::move(tx)]() mutable { io::read_fd(p[0]).fn(tx, std::stop_token{}); });
  std::string got;
  std::size_t short_ones = 0;
  for (buffer& b : rx) {
    got.append(b.view());
    received.store(got.size());
    if (b.size() < io::kChunk / 4) {
      ++short_ones;
      EXPECT_LT(b.capacity(), io::kChunk / 2) << "a " << b.size() << "-byte read in a " << b.capacity() << "-byte buffer";
    }
  }
  reader.join();
  feeder.join();
  ::close(p[0]);
  EXPECT_EQ(got, data);
  EXPECT_GT(short_ones, 0u);  // the case under test happened
}

TEST(io_file, without_replace_an_existing_path_is_kept_and_the_commit_fails) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "out", "older");
  const std::string msg =
      error_of([&] { runner::run(io_test::string_source("new\n"), io::write_file(dir / "out", {.replace = false})); });
  EXPECT_EQ(msg, "write_file: " + (dir / "out").string() + " already exists; not replaced");
  EXPECT_EQ(io_test::read_string(dir / "out"), "older");
  fs::create_symlink(dir / "nowhere", dir / "dangling");  // a dangling symlink exists too
  EXPECT_NE(error_of([&] {
              runner::run(io_test::string_source("x"), io::write_file(dir / "dangling", {.replace = false}));
            }).find("already exists"),
            std::string::npos);
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"dangling", "out"}));
  runner::run(io_test::string_source("fresh\n"), io::write_file(dir / "fresh", {.replace = false}));
  EXPECT_EQ(io_test::read_string(dir / "fresh"), "fresh\n");
}

TEST(io_file, concurrent_writers_of_one_path_each_write_a_whole_file_and_the_last_wins) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "concurrent writers");
  io_test::temp_dir dir;
  const std::string a = io_test::log_text(300'000, 7);
  const std::string b = io_test::random_bytes(200'000, 8);
  for (int round = 0; round < 10; ++round) {
    std::thread t1([&] { runner::run(io_test::string_source(a, 4096), io::write_file(dir / "out")); });
    std::thread t2([&] { runner::run(io_test::string_source(b, 4096), io::write_file(dir / "out")); });
    t1.join();
    t2.join();
    const std::string got = io_test::read_string(dir / "out");
    EXPECT_TRUE(got == a || got == b) << "round " << round << ": " << got.size() << " bytes, a mix";
    EXPECT_EQ(dir.list(), std::vector<std::string>{"out"});
  }
}

// The mode of the writer's open temporary file, found through /proc/self/fd (an
// O_TMPFILE shows as "DIR/#INODE (deleted)", a named one as DIR/out.XXXXXXXX.partial).
std::optional<mode_t> temporary_mode(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(e.path(), ec);
    if (ec || target.string().rfind(dir.string() + "/", 0) != 0) continue;
    struct stat st{};
    if (::stat(e.path().c_str(), &st) == 0) return st.st_mode & 07777;
  }
  return std::nullopt;
}

// Writes `data` through `w` on a thread and, while it is being written, checks that the
// temporary has no permission bit that `at_most` lacks.
void write_watching_the_temporary(const fs::path& dir, io::file_writer& w, const std::string& data, mode_t at_most) {
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::thread t([&, rx = std::move(rx)]() mutable { w(rx, std::stop_token{}); });
  EXPECT_TRUE(tx.push(buffer::copy_of(data)));
  EXPECT_TRUE(sluice_test::eventually([&] { return w.writing(); }));
  const auto m = temporary_mode(dir);
  EXPECT_TRUE(m.has_value());
  if (m) {
    EXPECT_EQ(*m & ~at_most, 0u) << std::oct << *m << " for " << at_most;
  }
  tx.reset();
  t.join();
}

TEST(io_file, the_new_file_gets_the_mode_and_times_asked_for_and_never_more_permission) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "mode");
  io_test::temp_dir dir;
  const mode_t old_umask = ::umask(022);
  const timespec mtime{1'600'000'000, 123'456'789};
  const timespec atime{1'500'000'000, 0};
  for (const mode_t mode : {mode_t{0600}, mode_t{0640}, mode_t{0400}, mode_t{0666}}) {
    io::file_writer w(dir / "out", {.mode = mode, .group = ::getegid(), .atime = atime, .mtime = mtime});
    write_watching_the_temporary(dir.path(), w, "secret\n", mode);
    ASSERT_TRUE(w.committed());
    struct stat st{};
    ASSERT_EQ(::stat((dir / "out").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, mode) << std::oct << (st.st_mode & 07777);  // exactly, umask or not
    EXPECT_EQ(st.st_mtim.tv_sec, mtime.tv_sec);
    EXPECT_EQ(st.st_mtim.tv_nsec, mtime.tv_nsec);
    EXPECT_EQ(st.st_atim.tv_sec, atime.tv_sec);
    fs::remove(dir / "out");
  }
  // No mode asked: 0666 minus the umask, as before.
  runner::run(io_test::string_source("x"), io::write_file(dir / "plain"));
  struct stat st{};
  ASSERT_EQ(::stat((dir / "plain").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ::umask(old_umask);
}

// Replacing a private file without `mode` kept the umask's 0644: the new content was
// readable by everyone. It now gets the replaced file's bits (and the temporary never
// has more), as an editor's save does.
TEST(io_file, replacing_a_private_file_keeps_it_private) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "private");
  io_test::temp_dir dir;
  const mode_t old_umask = ::umask(022);
  for (const mode_t mode : {mode_t{0600}, mode_t{0640}, mode_t{0755}}) {
    io_test::write_string(dir / "key", "old secret\n");
    ASSERT_EQ(::chmod((dir / "key").c_str(), mode), 0);
    io::file_writer w(dir / "key", {});
    write_watching_the_temporary(dir.path(), w, "new secret\n", mode);
    ASSERT_TRUE(w.committed());
    EXPECT_EQ(io_test::read_string(dir / "key"), "new secret\n");
    struct stat st{};
    ASSERT_EQ(::stat((dir / "key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, mode) << std::oct << (st.st_mode & 07777);
  }
  // Through a link: the link is replaced by a file with its target's bits; the target
  // itself is untouched.
  io_test::write_string(dir / "target", "t\n");
  ASSERT_EQ(::chmod((dir / "target").c_str(), 0600), 0);
  fs::create_symlink("target", dir / "link");
  runner::run(io_test::string_source("x"), io::write_file(dir / "link"));
  struct stat st{};
  ASSERT_EQ(::lstat((dir / "link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(io_test::read_string(dir / "target"), "t\n");
  ::umask(old_umask);
}

// ---- stop requests wake waits on blocking descriptors (issue 9, item 2) ------------

// Runs a read stage that has nothing to read on a thread: it must be waiting (no item,
// not ended), and a stop request must end it promptly.
template <class Descriptor>
void stop_wakes_a_reader_waiting_on(Descriptor d) {
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::stop_source stop;
  std::atomic<bool> ended{false};
  std::thread t([&, tx = std::move(tx)]() mutable {
    d.fn(tx, stop.get_token());
    ended = true;
  });
  EXPECT_FALSE(rx.pop_for(std::chrono::milliseconds(20)).has_value());  // it is waiting
  EXPECT_FALSE(ended.load());
  stop.request_stop();
  EXPECT_TRUE(sluice_test::eventually([&] { return ended.load(); }, std::chrono::seconds(5)));
  t.join();
}

TEST(io_file, a_stop_request_wakes_read_fd_on_a_blocking_pipe_that_never_had_data) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "silent pipe");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);  // blocking; the writer stays open and silent
  stop_wakes_a_reader_waiting_on(io::read_fd(p[0]));
  ::close(p[0]);
  ::close(p[1]);
}

TEST(io_file, a_stop_request_wakes_read_file_on_a_fifo_with_no_writer) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "fifo without writer");
  io_test::temp_dir dir;
  ASSERT_EQ(::mkfifo((dir / "f").c_str(), 0600), 0);
  // No writer yet: it waits (the open did not end it as empty) until the stop.
  stop_wakes_a_reader_waiting_on(io::read_file(dir / "f"));
}

// Fills a blocking descriptor nobody reads through write_fd, then requests stop.
void stop_wakes_a_writer_blocked_on(int wfd, int rfd) {
  auto d = io::write_fd(wfd);
  auto [tx, rx] = sluice::bounded<buffer>(64);
  std::stop_source stop;
  std::atomic<bool> ended{false};
  std::thread t([&, rx = std::move(rx)]() mutable {
    d.fn(rx, stop.get_token());
    ended = true;
  });
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(tx.push(buffer::copy_of(io_test::random_bytes(64 << 10, i))));
  int queued = 0;
  ASSERT_TRUE(sluice_test::eventually([&] {  // the descriptor is full: the writer waits
    return ::ioctl(rfd, FIONREAD, &queued) == 0 && queued >= 32 << 10;
  }));
  EXPECT_FALSE(ended.load());
  stop.request_stop();
  EXPECT_TRUE(sluice_test::eventually([&] { return ended.load(); }, std::chrono::seconds(5)));
  t.join();
  EXPECT_EQ(::fcntl(wfd, F_GETFL) & O_NONBLOCK, 0);  // the caller's descriptor kept its flags
}

TEST(io_file, a_stop_request_wakes_write_fd_on_a_full_blocking_pipe) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "full pipe");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  stop_wakes_a_writer_blocked_on(p[1], p[0]);
  ::close(p[0]);
  ::close(p[1]);
}

// A peer that trickles one byte per segment while the consumer is behind: the bytes join
// one buffer while the channel still holds items, instead of each going in a 256 B buffer
// of its own weighed as 1 byte (a probe: 65,000 such buffers, 15.5 MB, behind a 64 KiB
// budget). Every byte still arrives, in order.
TEST(io_file, a_trickle_behind_a_stalled_consumer_gathers_into_few_buffers) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "trickle");
  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  sluice_test::gate stalled;
  std::string got;
  sluice::pipeline p(io::read_fd(s[1]), sluice::into([&](buffer b) {
                       got.append(b.view());
                       stalled.wait();  // behind from the first buffer on
                     }));
  auto& g = p.get_graph();
  g.start();
  constexpr int kBytes = 3000;
  std::string sent;
  for (int i = 0; i < kBytes; ++i) {
    const char c = static_cast<char>('a' + i % 26);
    ASSERT_EQ(::write(s[0], &c, 1), 1);
    sent.push_back(c);
    // One byte per read: the next goes once the reader took this one.
    ASSERT_TRUE(sluice_test::eventually([&] {
      int queued = -1;
      return ::ioctl(s[0], SIOCOUTQ, &queued) == 0 && queued == 0;
    }));
  }
  std::uint64_t items = 0;
  for (const auto& c : g.snapshot().channels) items += c.stats.items;
  EXPECT_LT(items, 300u) << "the trickle went into " << items << " buffers";
  stalled.open();
  ::shutdown(s[0], SHUT_WR);
  EXPECT_TRUE(g.wait_for(std::chrono::seconds(30)).has_value());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " bytes";
  ::close(s[0]);
  ::close(s[1]);
}

TEST(io_file, a_stop_request_wakes_write_fd_on_a_full_blocking_socket) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "full socket");
  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
  stop_wakes_a_writer_blocked_on(s[0], s[1]);
  ::close(s[0]);
  ::close(s[1]);
}

}  // namespace
