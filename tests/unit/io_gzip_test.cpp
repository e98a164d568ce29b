// io::gzip / gunzip / parallel_gzip and their codecs: round trips against the gzip
// program in both directions, concatenated members, corrupt and truncated input.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;
using io_test::quoted;
using io_test::read_string;
using io_test::runner;
using io_test::shell;
using io_test::write_string;
using sluice::buffer;

#ifdef SLUICE_SANITIZER_BUILD
constexpr std::size_t kBig = std::size_t{3} << 20;
#else
constexpr std::size_t kBig = std::size_t{24} << 20;
#endif

// Sizes around the 64 KiB chunk and the 128 KiB block.
std::vector<std::size_t> edge_sizes() {
  return {0, 1, 2, 1000, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, (128 << 10) - 1, 128 << 10,
          (128 << 10) + 1, (3 << 20) + 7};
}

std::string encode(std::string_view data, int level = 6, std::size_t out_room = 4096) {
  io::gzip_encoder enc(level);
  std::string result;
  buffer out(out_room);
  std::string_view in = data;
  while (!in.empty()) {
    enc.write(in, out);
    if (out.full()) {
      result.append(out.view());
      out.clear();
    }
  }
  while (!enc.finish(out)) {
    result.append(out.view());
    out.clear();
  }
  result.append(out.view());
  return result;
}

// Decodes `gz` fed in pieces of `piece` bytes into output buffers of `room` bytes.
std::string decode(std::string_view gz, std::size_t piece = 7000, std::size_t room = 3000) {
  io::gzip_decoder dec;
  std::string result;
  buffer out(room);
  for (std::size_t i = 0; i < gz.size() || i == 0; i += piece) {
    std::string_view in = gz.substr(std::min(i, gz.size()), piece);
    for (;;) {
      const bool more = dec.write(in, out);
      if (out.full()) {
        result.append(out.view());
        out.clear();
      }
      if (!more && in.empty()) break;
    }
    if (gz.empty()) break;
  }
  dec.finish();
  result.append(out.view());
  return result;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const io::error& e) {
    return e.what();
  }
  return "(no io::error)";
}

TEST(io_gzip, codec_round_trips_every_edge_size_in_small_pieces) {
  for (const std::size_t n : edge_sizes()) {
    const std::string data = io_test::log_text(n, n);
    EXPECT_EQ(decode(encode(data)), data) << "size " << n;
  }
  const std::string noise = io_test::random_bytes(300 << 10, 3);
  EXPECT_EQ(decode(encode(noise, 1, 100), 1, 17), noise);  // byte-at-a-time input
  EXPECT_EQ(decode(encode(noise, 0)), noise);              // stored blocks
}

TEST(io_gzip, gzip_program_reads_what_the_stage_writes_at_every_size) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "gzip stage sizes");
  io_test::temp_dir dir;
  std::vector<std::size_t> sizes = edge_sizes();
  sizes.push_back(kBig);
  for (const std::size_t n : sizes) {
    const std::string data = io_test::log_text(n, n + 1);
    std::string gz;
    runner::run(io_test::string_source(data, 50'000), io::gzip({.level = 6}), io_test::string_sink(&gz));
    write_string(dir / "a.gz", gz);
    ASSERT_EQ(shell("gzip -dc " + quoted(dir / "a.gz") + " > " + quoted(dir / "a")), 0) << "size " << n;
    EXPECT_EQ(read_string(dir / "a"), data) << "size " << n;
  }
}

TEST(io_gzip, gunzip_stage_reads_what_the_gzip_program_writes_at_every_size) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "gunzip stage sizes");
  io_test::temp_dir dir;
  std::vector<std::size_t> sizes = edge_sizes();
  sizes.push_back(kBig);
  for (const std::size_t n : sizes) {
    const std::string data = io_test::log_text(n, n + 2);
    write_string(dir / "a", data);
    ASSERT_EQ(shell("gzip -c -6 " + quoted(dir / "a") + " > " + quoted(dir / "a.gz")), 0);
    std::string back;
    runner::run(io::read_file(dir / "a.gz"), io::gunzip(), io_test::string_sink(&back));
    EXPECT_EQ(back, data) << "size " << n;
  }
}

TEST(io_gzip, parallel_gzip_output_is_one_file_that_gzip_and_gunzip_read) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "parallel_gzip");
  io_test::temp_dir dir;
  struct config {
    std::size_t jobs;
    std::size_t block;
    io::deflate_engine engine;
    int level;
  };
  const config configs[] = {{1, 128 << 10, io::deflate_engine::automatic, 6},
                            {2, 128 << 10, io::deflate_engine::libdeflate, 6},
                            {4, 1000, io::deflate_engine::zlib, 6},
                            {3, 64 << 10, io::deflate_engine::automatic, 9},
                            {2, 128 << 10, io::deflate_engine::automatic, 1}};
  std::vector<std::size_t> sizes = edge_sizes();
  sizes.push_back(kBig);
  for (const config& c : configs) {
    for (const std::size_t n : sizes) {
      if (c.block < 4096 && n > (1 << 20)) continue;  // tiny blocks: keep it short
      const std::string data = io_test::log_text(n, n + 3);
      std::string gz;
      runner::run(io_test::string_source(data, 40'000),
                  io::parallel_gzip({.level = c.level, .jobs = c.jobs, .block = c.block, .engine = c.engine}),
                  io_test::string_sink(&gz));
      write_string(dir / "p.gz", gz);
      ASSERT_EQ(shell("gzip -dc " + quoted(dir / "p.gz") + " > " + quoted(dir / "p")), 0)
          << "jobs " << c.jobs << " block " << c.block << " size " << n;
      EXPECT_EQ(read_string(dir / "p"), data) << "jobs " << c.jobs << " size " << n;
      EXPECT_EQ(decode(gz), data);
    }
  }
}

TEST(io_gzip, empty_input_compresses_to_a_valid_empty_gzip_file) {
  io_test::temp_dir dir;
  for (int parallel = 0; parallel < 2; ++parallel) {
    std::string gz;
    if (parallel != 0) {
      runner::run(io_test::chunks_source({}), io::parallel_gzip({.jobs = 2}), io_test::string_sink(&gz));
    } else {
      runner::run(io_test::chunks_source({}), io::gzip(), io_test::string_sink(&gz));
    }
    write_string(dir / "e.gz", gz);
    EXPECT_EQ(shell("gzip -t " + quoted(dir / "e.gz")), 0);
    EXPECT_EQ(decode(gz), "");
  }
}

TEST(io_gzip, engines_resolve_as_measured) {
  EXPECT_EQ(io::resolve_engine(6, io::deflate_engine::automatic), io::deflate_engine::libdeflate);
  EXPECT_EQ(io::resolve_engine(9, io::deflate_engine::automatic), io::deflate_engine::zlib);
  EXPECT_EQ(io::resolve_engine(9, io::deflate_engine::libdeflate), io::deflate_engine::libdeflate);
  EXPECT_EQ(io::gzip_block_compressor(1).engine(), io::deflate_engine::libdeflate);
}

TEST(io_gzip, concatenated_members_decode_as_one_stream) {
  io_test::temp_dir dir;
  const std::string a = io_test::log_text(100'000, 10);
  const std::string b = io_test::log_text(5, 11);
  const std::string c = io_test::log_text(70'000, 12);
  write_string(dir / "a", a);
  write_string(dir / "b", b);
  write_string(dir / "c", c);
  ASSERT_EQ(shell("cd " + quoted(dir.path()) + " && (gzip -c a; gzip -c b; gzip -1 -c c) > all.gz"), 0);
  std::string back;
  runner::run(io::read_file(dir / "all.gz", {.chunk = 4096}), io::gunzip(), io_test::string_sink(&back));
  EXPECT_EQ(back, a + b + c);
  const std::string gz = read_string(dir / "all.gz");
  EXPECT_EQ(decode(gz, 1), a + b + c);  // member boundaries inside one-byte pieces
  io::gzip_decoder dec;
  buffer out(1 << 20);
  std::string_view in = gz;
  while (dec.write(in, out)) out.clear();
  dec.finish();
  EXPECT_EQ(dec.members(), 3u);
  EXPECT_EQ(dec.bytes_in(), gz.size());
}

TEST(io_gzip, zero_padding_after_the_last_member_is_ignored_like_gzip_does) {
  const std::string data = "padded\n";
  const std::string gz = encode(data) + std::string(512, '\0');
  EXPECT_EQ(decode(gz), data);
}

TEST(io_gzip, trailing_garbage_is_an_error_with_its_offset) {
  const std::string gz = encode("hello\n");
  const std::string msg = error_of([&] { decode(gz + "garbage"); });
  EXPECT_NE(msg.find("trailing garbage after gzip member 1 at byte offset " + std::to_string(gz.size())),
            std::string::npos)
      << msg;
  const std::string msg2 = error_of([&] { decode(gz + std::string(3, '\0') + "\x1f"); });
  EXPECT_NE(msg2.find("trailing garbage"), std::string::npos) << msg2;
}

TEST(io_gzip, corrupt_data_is_an_error_naming_the_byte_offset_and_member) {
  const std::string data = io_test::log_text(200'000, 20);
  const std::string first = encode(io_test::log_text(1000, 21));
  std::string gz = encode(data);
  gz[gz.size() / 2] = static_cast<char>(gz[gz.size() / 2] ^ 0x55);
  const std::string msg = error_of([&] { decode(first + gz); });
  EXPECT_NE(msg.find("gunzip: corrupt gzip data at byte offset "), std::string::npos) << msg;
  EXPECT_NE(msg.find("member 2, which starts at byte offset " + std::to_string(first.size())),
            std::string::npos)
      << msg;
}

TEST(io_gzip, a_bad_crc_is_an_error) {
  std::string gz = encode(io_test::log_text(5000, 22));
  gz[gz.size() - 6] = static_cast<char>(gz[gz.size() - 6] ^ 1);  // inside the CRC32
  const std::string msg = error_of([&] { decode(gz); });
  EXPECT_NE(msg.find("incorrect data check"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte offset"), std::string::npos) << msg;
}

TEST(io_gzip, truncated_input_is_an_error_naming_where_it_ends) {
  const std::string gz = encode(io_test::log_text(100'000, 23));
  for (const std::size_t cut : {std::size_t{1}, std::size_t{5}, std::size_t{10}, gz.size() / 2, gz.size() - 1}) {
    const std::string msg = error_of([&] { decode(gz.substr(0, cut)); });
    EXPECT_NE(msg.find("truncated gzip stream: input ends at byte offset " + std::to_string(cut)),
              std::string::npos)
        << "cut " << cut << ": " << msg;
  }
}

TEST(io_gzip, empty_and_non_gzip_input_are_errors) {
  EXPECT_NE(error_of([] { decode(""); }).find("not in gzip format: the input is empty"), std::string::npos);
  const std::string msg = error_of([] { decode("this is plain text\n"); });
  EXPECT_NE(msg.find("not in gzip format"), std::string::npos) << msg;
}

TEST(io_gzip, gunzip_stage_failure_reaches_the_runner_with_the_offset) {
  io_test::temp_dir dir;
  std::string gz = encode(io_test::log_text(300'000, 24));
  gz.resize(gz.size() - 100);
  write_string(dir / "t.gz", gz);
  std::string back;
  try {
    runner::run(io::read_file(dir / "t.gz"), io::gunzip(), io_test::string_sink(&back));
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated gzip stream: input ends at byte offset " +
                                         std::to_string(gz.size())),
              std::string::npos)
        << e.what();
  }
}

TEST(io_gzip, bad_levels_are_rejected_when_the_stage_is_described) {
  EXPECT_THROW((void)io::gzip({.level = 10}), std::invalid_argument);
  EXPECT_THROW((void)io::gzip({.level = -1}), std::invalid_argument);
  EXPECT_THROW((void)io::parallel_gzip({.level = 11}), std::invalid_argument);
  EXPECT_THROW((void)io::parallel_gzip({.block = 0}), std::invalid_argument);
  EXPECT_EQ(io::gzip().options.capacity, io::kByteBudget);
  EXPECT_EQ(io::gzip().options.name, "gzip");
  EXPECT_EQ(io::parallel_gzip({}, {.capacity = 5}).options.capacity, 5u);
}

TEST(io_gzip, parallel_gzip_stops_cleanly_when_downstream_finishes_early) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "early consumer");
  const std::string data = io_test::log_text(4 << 20, 30);
  int seen = 0;
  runner::run(io_test::string_source(data), io::parallel_gzip({.jobs = 2, .block = 16 << 10}),
              sluice::into([&](buffer) { return ++seen < 3; }));
  EXPECT_EQ(seen, 3);
}

TEST(io_gzip, an_aborted_input_ends_parallel_gzip_and_cancels_its_output) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "aborted input");
  auto [in_tx, in_rx] = sluice::bounded<buffer>(64);
  auto [out_tx, out_rx] = sluice::bounded<buffer>(1 << 20);
  io::parallel_gzip_stage stage({.jobs = 2, .block = 1000});
  std::stop_source stop;
  std::thread t([&, rx = std::move(in_rx), tx = std::move(out_tx)]() mutable { stage(rx, tx, stop.get_token()); });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(in_tx.push(buffer::copy_of(io_test::log_text(700, i))));
  in_tx.cancel();
  t.join();
  std::size_t got = 0;
  while (out_rx.try_pop()) ++got;
  EXPECT_TRUE(out_rx.cancelled());  // the consumer learns it was an abort, not an end
}

TEST(io_gzip, an_aborted_input_gets_no_gzip_trailer) {
  auto [in_tx, in_rx] = sluice::bounded<buffer>(64);
  auto [out_tx, out_rx] = sluice::bounded<buffer>(1 << 20);
  io::gzip_stage stage({.level = 6});
  std::stop_source stop;
  std::thread t([&, rx = std::move(in_rx), tx = std::move(out_tx)]() mutable { stage(rx, tx, stop.get_token()); });
  ASSERT_TRUE(in_tx.push(buffer::copy_of(io_test::random_bytes(300'000, 1))));
  stop.request_stop();
  in_tx.reset();  // closes: but the stop request says this end is an abort
  t.join();
  std::string gz;
  while (auto b = out_rx.try_pop()) gz.append(b->view());
  EXPECT_GT(gz.size(), 0u);
  EXPECT_NE(error_of([&] { decode(gz); }).find("truncated"), std::string::npos);
}

}  // namespace
