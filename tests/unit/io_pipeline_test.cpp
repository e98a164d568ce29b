// io stages inside sluice::pipeline: the DESIGN.md example end to end, byte budgets on
// the channels, and the partial-file rule when a stage of a real graph fails.
#include "sluice/pipeline.hpp"

#include <gtest/gtest.h>

#include <string>

#include "io_test_util.hpp"
#include "sluice/io/all.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;
using io_test::quoted;
using io_test::read_string;
using io_test::shell;
using io_test::write_string;

#ifdef SLUICE_SANITIZER_BUILD
constexpr std::size_t kSize = std::size_t{2} << 20;
#else
constexpr std::size_t kSize = std::size_t{20} << 20;
#endif

TEST(io_pipeline, read_gzip_write_as_in_the_design) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "read-gzip-write");
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(kSize, 1);
  write_string(dir / "a", data);
  const auto a = dir / "a";
  const auto b = dir / "a.gz";
  sluice::report r = sluice::pipeline(io::read_file(a), io::gzip(), io::write_file(b)).run();
  EXPECT_TRUE(r.balanced());
  ASSERT_EQ(shell("gzip -dc " + quoted(b) + " > " + quoted(dir / "back")), 0);
  EXPECT_EQ(read_string(dir / "back"), data);
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"a", "a.gz", "back"}));
  // Channels of buffers are byte budgets of 64 KiB.
  ASSERT_FALSE(r.metrics.channels.empty());
  for (const auto& c : r.metrics.channels) {
    EXPECT_TRUE(c.weighted) << c.name;
    EXPECT_EQ(c.stats.capacity, io::kByteBudget) << c.name;
  }
}

TEST(io_pipeline, gunzip_and_parallel_gzip_round_trip) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "round trip");
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(kSize, 2);
  write_string(dir / "a", data);
  sluice::pipeline(io::read_file(dir / "a", {.chunk = 128 << 10}), io::parallel_gzip({.level = 6, .jobs = 2}),
                   io::write_file(dir / "a.gz"))
      .run();
  sluice::pipeline(io::read_file(dir / "a.gz"), io::gunzip(), io::write_file(dir / "b")).run();
  EXPECT_EQ(read_string(dir / "b"), data);
  ASSERT_EQ(shell("gzip -dc " + quoted(dir / "a.gz") + " | cmp -s - " + quoted(dir / "a")), 0);
}

TEST(io_pipeline, parallel_gzip_reblocks_chunks_of_another_size) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "parallel_gzip, 100 kB chunks");
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(kSize / 2, 5);
  write_string(dir / "a", data);
  sluice::pipeline(io::read_file(dir / "a", {.chunk = 100'000}), io::parallel_gzip({.level = 6, .jobs = 3}),
                   io::write_file(dir / "a.gz"))
      .run();
  ASSERT_EQ(shell("gzip -dc " + quoted(dir / "a.gz") + " | cmp -s - " + quoted(dir / "a")), 0);
  std::string back;
  sluice::pipeline(io::read_file(dir / "a.gz"), io::gunzip(), io_test::string_sink(&back)).run();
  EXPECT_EQ(back, data);
  sluice::pipeline(io::read_file(dir / "a"), io::gzip(1), io::write_file(dir / "b.gz")).run();
  ASSERT_EQ(shell("gzip -dc " + quoted(dir / "b.gz") + " | cmp -s - " + quoted(dir / "a")), 0);
}

TEST(io_pipeline, lines_count_matches_wc) {
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(kSize, 3);
  write_string(dir / "a", data);
  std::uint64_t n = 0;
  sluice::pipeline(io::read_file(dir / "a"), io::lines(), sluice::into([&](const io::line&) { ++n; })).run();
  // log_text cuts its last line: wc -l counts newlines, lines() also the unterminated tail.
  EXPECT_EQ(n, static_cast<std::uint64_t>(std::count(data.begin(), data.end(), '\n')) + (data.back() != '\n'));
}

TEST(io_pipeline, a_failing_stage_fails_the_run_and_leaves_no_output_file) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "failing stage");
  io_test::temp_dir dir;
  write_string(dir / "a", io_test::log_text(kSize, 4));
  write_string(dir / "out", "previous");
  auto failing = sluice::through<sluice::buffer>(
      [](sluice::receiver<sluice::buffer>& in, sluice::sender<sluice::buffer>& out) {
        int n = 0;
        for (sluice::buffer& b : in) {
          if (++n == 20) throw std::runtime_error("injected failure");
          if (!out.push(std::move(b))) return;
        }
      },
      io::byte_stage_options({.name = "failing"}, "failing"));
  try {
    sluice::pipeline(io::read_file(dir / "a", {.chunk = 4096}), std::move(failing), io::gzip(),
                     io::write_file(dir / "out"))
        .run();
    FAIL() << "no error";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "failing");
    EXPECT_EQ(io_test::message_of(e.cause()), "injected failure");
  }
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"a", "out"}));
  EXPECT_EQ(read_string(dir / "out"), "previous");
}

TEST(io_pipeline, a_missing_input_fails_the_run_with_a_clear_error) {
  io_test::temp_dir dir;
  try {
    sluice::pipeline(io::read_file(dir / "nope"), io::gzip(), io::write_file(dir / "out")).run();
    FAIL() << "no error";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "read_file");
    EXPECT_EQ(io_test::message_of(e.cause()),
              "read_file: cannot open " + (dir / "nope").string() + ": No such file or directory");
  }
  EXPECT_TRUE(dir.list().empty());
}

}  // namespace
