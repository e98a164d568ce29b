// parallel_gzip's graph stages under sluice::testing's faults (sluice/testing.hpp):
// injected failures at every channel operation of gzip.split and gzip.deflate, delays,
// a random cancel or request_stop. Every run must pass stress's own checks (teardown in
// time, accounting, cleanup, no thread left), and its output must be right for how it
// ended: the whole input when it ended normally, a valid gzip of a prefix of the input
// after a request_stop, nothing checked after a failure or a cancel.
//
// Seeded (SLUICE_SEED=N replays); fewer runs under sanitizers.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "sluice/graph.hpp"
#include "sluice/io/gzip.hpp"
#include "sluice/testing.hpp"
#include "support/seed.hpp"

namespace {

using namespace std::chrono_literals;
namespace io = sluice::io;
namespace st = sluice::testing;
using sluice::buffer;

#if defined(SLUICE_SANITIZER_BUILD)
constexpr std::size_t kRuns = 25;
#else
constexpr std::size_t kRuns = 120;
#endif

// Decodes a whole gzip stream; false when it is not one (corrupt, truncated, empty).
bool gunzip(std::string_view gz, std::string& out) {
  try {
    io::gzip_decoder dec;
    buffer b(1 << 16);
    for (;;) {
      const bool more = dec.write(gz, b);
      out.append(b.view());
      b.clear();
      if (!more && gz.empty()) break;
    }
    dec.finish();
    return true;
  } catch (const io::error&) {
    return false;
  }
}

struct run_data {
  std::string input;   // what the source pushed
  std::string output;  // what the sink received
};

TEST(io_gzip_stress, parallel_gzip_stages_survive_faults_and_write_what_they_read) {
  std::mt19937_64 rng(sluice_test::test_seed());
  st::stress_options o;
  o.fail_probability = 0.004;
  o.delay_probability = 0.05;
  o.max_delay = 1ms;
  o.cancel_probability = 0.1;
  o.stop_probability = 0.15;
  o.deadline = 10s;
  std::size_t whole = 0, stopped = 0, failed = 0;
  // A sanitizer starts a thread of its own at the process's first thread creation: let
  // that happen before run 0 counts the threads that exist.
  std::thread([] {}).join();
  for (std::size_t run = 0; run < kRuns; ++run) {
    const std::uint64_t seed = rng();
    std::mt19937_64 shape(seed);
    const std::size_t jobs = 1 + shape() % 3;
    const std::size_t block = std::size_t{1000} << (shape() % 7);  // 1000 .. 64000 bytes
    const std::size_t pieces = shape() % 40;                       // 0: an empty input
    const std::size_t piece = 1 + shape() % 20'000;
    auto data = std::make_shared<run_data>();
    auto build = [&, data](sluice::graph& g) {
      auto src = g.source<buffer>(
          "src",
          [data, pieces, piece, seed](sluice::sender<buffer>& out, std::stop_token stop) {
            std::mt19937_64 bytes(seed);
            for (std::size_t i = 0; i < pieces && !stop.stop_requested(); ++i) {
              std::string s(piece, '\0');
              for (char& c : s) c = "abcdefgh \n"[bytes() % 10];
              if (!out.push(buffer::copy_of(s))) return;
              data->input += s;
            }
          },
          io::byte_stage_options({}, "src"));
      auto gz = io::parallel_gzip(g, src, {.level = 1, .jobs = jobs, .block = block});
      g.sink("sink", gz, [data](buffer b) { data->output.append(b.view()); }, {.capacity = 1 << 16});
    };
    const st::run_result r = st::run_one(build, seed, o);
    for (const st::violation& v : r.violations) ADD_FAILURE() << v;
    ASSERT_FALSE(r.abandoned) << "seed " << seed;
    if (r.error || r.cancelled) {
      ++failed;
      continue;
    }
    std::string back;
    ASSERT_TRUE(gunzip(data->output, back)) << "seed " << seed << ": not a whole gzip stream";
    EXPECT_EQ(back, data->input) << "seed " << seed << " jobs " << jobs << " block " << block;
    ++(r.stopped ? stopped : whole);
  }
  std::printf("[io_gzip_stress] %zu runs: %zu whole, %zu stopped, %zu failed or cancelled\n", kRuns, whole, stopped,
              failed);
  EXPECT_GT(whole, 0u);
  EXPECT_GT(failed, 0u);
}

}  // namespace
