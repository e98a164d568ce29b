// io::lines / join_lines and the line splitter: terminators, chunk boundaries, the
// length limit, line numbers and shared storage.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "sluice/graph.hpp"
#include "sluice/pipeline.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;
using io_test::runner;
using sluice::buffer;

// Splits `text` fed in pieces of `piece` bytes.
std::vector<std::string> split(std::string_view text, std::size_t piece, std::size_t max_line = 1 << 20) {
  io::line_splitter s(max_line);
  std::vector<io::line> out;
  for (std::size_t i = 0; i < text.size(); i += piece) s.feed(buffer::copy_of(text.substr(i, piece)), out);
  s.finish(out);
  std::vector<std::string> r;
  std::uint64_t expect_number = 1;
  for (const auto& l : out) {
    EXPECT_EQ(l.number(), expect_number++);
    r.push_back(l.str());
  }
  return r;
}

using lines_t = std::vector<std::string>;

TEST(io_lines, terminators_and_edge_cases) {
  for (const std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{1000}}) {
    EXPECT_EQ(split("", piece), lines_t{}) << piece;
    EXPECT_EQ(split("\n", piece), lines_t{""}) << piece;
    EXPECT_EQ(split("\n\n", piece), (lines_t{"", ""})) << piece;
    EXPECT_EQ(split("a", piece), lines_t{"a"}) << piece;
    EXPECT_EQ(split("a\n", piece), lines_t{"a"}) << piece;
    EXPECT_EQ(split("a\nb", piece), (lines_t{"a", "b"})) << piece;
    EXPECT_EQ(split("a\r\nb\r\n", piece), (lines_t{"a", "b"})) << piece;
    EXPECT_EQ(split("a\r\n\r\nb", piece), (lines_t{"a", "", "b"})) << piece;
    EXPECT_EQ(split("a\rb\n", piece), lines_t{"a\rb"}) << piece;  // a lone CR is a character
    EXPECT_EQ(split("\r\n", piece), lines_t{""}) << piece;
    EXPECT_EQ(split("last\r", piece), lines_t{"last"}) << piece;  // as Node's readline
    EXPECT_EQ(split("x\n\r", piece), (lines_t{"x", ""})) << piece;
  }
}

TEST(io_lines, every_split_point_gives_the_same_lines) {
  const std::string text = io_test::log_text(5000, 1) + "\r\nend\r\n\nno newline";
  const lines_t whole = split(text, text.size());
  for (std::size_t piece = 1; piece < 400; piece += 7) EXPECT_EQ(split(text, piece), whole) << piece;
}

TEST(io_lines, a_line_at_the_limit_passes_and_one_byte_more_is_an_error_with_its_number_and_offset) {
  const std::string ok_line(100, 'x');
  EXPECT_EQ(split("a\n" + ok_line + "\r\nb\n", 7, 100), (lines_t{"a", ok_line, "b"}));
  EXPECT_EQ(split("a\n" + ok_line, 7, 100), (lines_t{"a", ok_line}));
  for (const std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
    try {
      split("a\nb\n" + std::string(101, 'x') + "\nc\n", piece, 100);
      FAIL() << "no error, piece " << piece;
    } catch (const io::error& e) {
      EXPECT_STREQ(e.what(), "lines: line 3 (starting at byte 4 of the input) is longer than the limit of 100 bytes")
          << piece;
    }
  }
  // Also without a final newline (the last line, found too long only at the end when it
  // is one byte over and may still lose a '\r'), whatever the split.
  for (const std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{10}, std::size_t{1000}}) {
    try {
      split("ab\r\n" + std::string(101, 'x'), piece, 100);
      FAIL() << "no error, piece " << piece;
    } catch (const io::error& e) {
      EXPECT_STREQ(e.what(), "lines: line 2 (starting at byte 4 of the input) is longer than the limit of 100 bytes")
          << piece;
    }
  }
}

TEST(io_lines, a_huge_line_fails_before_it_is_buffered) {
  // 64 MiB without a newline against a 1 MiB limit: the splitter gives up after about
  // 1 MiB, holding no more than the limit.
  sluice::buffer_pool pool;
  io::line_splitter s(1 << 20);
  std::vector<io::line> out;
  std::size_t fed = 0;
  const std::string chunk(64 << 10, 'y');
  try {
    for (; fed < (std::size_t{64} << 20); fed += chunk.size()) s.feed(buffer::copy_of(chunk, pool), out);
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_NE(std::string(e.what()).find("line 1 (starting at byte 0 of the input) is longer"), std::string::npos);
  }
  EXPECT_LE(fed, (std::size_t{1} << 20) + chunk.size());
  EXPECT_LE(pool.stats().peak_live_bytes, std::size_t{4} << 20);
}

TEST(io_lines, lines_share_their_chunk_and_free_it_with_the_last_copy) {
  sluice::buffer_pool pool;
  std::vector<io::line> out;
  {
    io::line_splitter s;
    s.feed(buffer::copy_of("one\ntwo\nthr", pool), out);
    s.feed(buffer::copy_of("ee\n", pool), out);
    s.finish(out);
  }
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2], "three");
  EXPECT_GT(pool.stats().live_bytes, 0u);
  io::line keep = out[1];  // a copy keeps the first chunk alive
  out.clear();
  EXPECT_GT(pool.stats().live_bytes, 0u);
  EXPECT_EQ(keep.view(), "two");
  EXPECT_EQ(keep.number(), 2u);
  // The copy may die on another thread.
  std::thread([k = std::move(keep)] { EXPECT_EQ(k.str(), "two"); }).join();
  EXPECT_EQ(pool.stats().live_bytes, 0u);
}

TEST(io_lines, the_stage_and_join_lines_round_trip_a_file) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "lines round trip");
  io_test::temp_dir dir;
  const std::string text = io_test::log_text(3 << 20, 2) + "\n";
  io_test::write_string(dir / "in", text);
  std::uint64_t count = 0;
  std::uint64_t last_number = 0;
  runner::run(io::read_file(dir / "in", {.chunk = 10'000}), io::lines(), sluice::into([&](io::line l) {
                ++count;
                EXPECT_EQ(l.number(), last_number + 1);
                last_number = l.number();
              }));
  EXPECT_EQ(count, static_cast<std::uint64_t>(std::count(text.begin(), text.end(), '\n')));

  runner::run(io::read_file(dir / "in"), io::lines(), io::join_lines(), io::write_file(dir / "out"));
  EXPECT_EQ(io_test::read_string(dir / "out"), text);
}

TEST(io_lines, join_lines_accepts_strings_and_gives_long_lines_their_own_buffer) {
  std::string out;
  auto src = sluice::from<std::string>([](sluice::sender<std::string>& tx) {
    tx.push("short");
    tx.push(std::string(200'000, 'z'));
    tx.push("");
  });
  runner::run(src, io::join_lines<std::string>({.chunk = 1000}), io_test::string_sink(&out));
  EXPECT_EQ(out, "short\n" + std::string(200'000, 'z') + "\n\n");
}

TEST(io_lines, an_over_long_line_fails_the_stage_with_its_line_number_and_offset) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "in", "ok\nok\nok\n" + std::string(5000, 'q') + "\n");
  try {
    runner::run(io::read_file(dir / "in", {.chunk = 1024}), io::lines({.max_line = 4096}),
                sluice::into([](io::line) {}));
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_STREQ(e.what(), "lines: line 4 (starting at byte 9 of the input) is longer than the limit of 4096 bytes");
  }
}

// The lines before an over-long one are pushed on before the stage fails, however the
// input is cut into chunks: delivered, or (the failure cancels every channel) dead
// letters. They were dropped with no trace when they came in the chunk of the bad line,
// so a 64 KiB read lost them and a 4-byte one did not (DESIGN 3: nothing lost silently).
TEST(io_lines, the_lines_before_an_over_long_one_are_delivered_or_dead_letters_whatever_the_chunking) {
  io_test::temp_dir dir;
  io_test::write_string(dir / "in", "a\nb\n" + std::string(100, 'x') + "\nc\n");
  for (const std::size_t chunk : {std::size_t{4}, std::size_t{7}, std::size_t{65536}}) {
    SCOPED_TRACE(chunk);
    std::mutex mu;
    std::vector<std::string> got;
    std::vector<std::string> dead;
    sluice::graph_options go;
    go.on_discard = [&](const sluice::dead_letter& d) {
      std::lock_guard lock(mu);
      if (const auto* l = d.get<io::line>()) dead.push_back(l->str());
    };
    try {
      sluice::pipeline(go, io::read_file(dir / "in", {.chunk = chunk}), io::lines({.max_line = 10}),
                       sluice::into([&](io::line l) {
                         std::lock_guard lock(mu);
                         got.push_back(l.str());
                       }))
          .run();
      ADD_FAILURE() << "no error";
    } catch (const sluice::stage_error& e) {
      EXPECT_EQ(e.stage(), "lines");
    }
    std::vector<std::string> both = got;
    both.insert(both.end(), dead.begin(), dead.end());
    std::sort(both.begin(), both.end());
    EXPECT_EQ(both, (std::vector<std::string>{"a", "b"})) << got.size() << " delivered";
  }
}

}  // namespace
