// Peak memory of large byte-stream runs: the process's resident set may grow by the
// channels' byte budgets, the blocks parallel_gzip keeps in flight and a fixed allowance
// (thread stacks, compressor state, allocator slack), never by the input's size.
// Measured from inside the process: /proc/self/clear_refs resets VmHWM, then VmHWM
// after the run is the peak.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "io_test_util.hpp"
#include "sluice/pipeline.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;

// A field of /proc/self/status in bytes (VmRSS, VmHWM); 0 if unreadable.
[[maybe_unused]] std::size_t status_bytes(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  std::size_t kib = 0;
  const std::size_t len = std::strlen(field);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, field, len) == 0 && line[len] == ':') {
      kib = std::strtoull(line + len + 1, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kib << 10;
}

[[maybe_unused]] bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

// Writes `size` bytes of log text without holding more than 1 MiB of it in memory.
[[maybe_unused]] void write_log_file(const std::filesystem::path& p, std::size_t size) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  for (std::size_t done = 0, i = 0; done < size; ++i) {
    const std::string piece = io_test::log_text(std::min<std::size_t>(1 << 20, size - done), i);
    ASSERT_EQ(std::fwrite(piece.data(), 1, piece.size(), f), piece.size());
    done += piece.size();
  }
  ASSERT_EQ(std::fclose(f), 0);
}

struct peak {
  std::size_t rss_growth;
  std::size_t live_buffers;
};

// Runs f and returns how far the resident set rose above where it started.
template <class F>
peak measure(F&& f) {
  ::malloc_trim(0);  // what earlier tests freed must not hide this run's growth
  sluice::buffer_pool::global().trim();
  sluice::buffer_pool::global().reset_peak();
  const std::size_t live0 = sluice::buffer_pool::global().stats().live_bytes;
  EXPECT_TRUE(reset_peak_rss());
  const std::size_t base = status_bytes("VmRSS");
  f();
  const std::size_t hwm = status_bytes("VmHWM");
  return {hwm > base ? hwm - base : 0, sluice::buffer_pool::global().stats().peak_live_bytes - live0};
}

TEST(io_memory, a_large_gzip_run_stays_within_its_budgets_plus_a_fixed_allowance) {
#ifdef SLUICE_SANITIZER_BUILD
  GTEST_SKIP() << "a sanitizer's own memory would be measured; the optimised build checks this";
#else
  sluice_test::watchdog dog(std::chrono::seconds(240), "large gzip runs");
  io_test::temp_dir dir;
  constexpr std::size_t kSize = std::size_t{256} << 20;
  write_log_file(dir / "big.log", kSize);
  ASSERT_EQ(std::filesystem::file_size(dir / "big.log"), kSize);

  constexpr std::size_t kJobs = 2;
  constexpr std::size_t kBlock = std::size_t{128} << 10;
  // Two channels of 64 KiB; parallel_gzip's blocks in flight (one being cut, two in
  // gzip.split's channel, one per replica, the reorder window's 2 * jobs), each with its
  // compressed copy, and a scratch per replica; the chunk each stage holds.
  constexpr std::size_t kBudgets = 2 * io::kByteBudget + (3 * kJobs + 3) * 2 * kBlock + kJobs * 2 * kBlock +
                                   4 * io::kChunk;
  // Thread stacks, libdeflate/zlib state (about 1 MiB per compressor), malloc arenas.
  constexpr std::size_t kAllowance = std::size_t{16} << 20;

  const peak par = measure([&] {
    sluice::pipeline(io::read_file(dir / "big.log", {.chunk = kBlock}),
                     io::parallel_gzip({.level = 6, .jobs = kJobs, .block = kBlock}),
                     io::write_file(dir / "big.log.gz"))
        .run();
  });
  const peak seq = measure([&] {
    sluice::pipeline(io::read_file(dir / "big.log"), io::gzip({.level = 1}), io::write_file(dir / "big1.log.gz"))
        .run();
  });
  const peak back = measure([&] {
    sluice::pipeline(io::read_file(dir / "big.log.gz"), io::gunzip(), io::write_file(dir / "back.log")).run();
  });
  std::printf("[memory] %zu MiB input: rss growth parallel_gzip %zu KiB, gzip %zu KiB, gunzip %zu KiB; "
              "peak live buffers %zu / %zu / %zu KiB; budgets %zu KiB + allowance %zu KiB\n",
              kSize >> 20, par.rss_growth >> 10, seq.rss_growth >> 10, back.rss_growth >> 10,
              par.live_buffers >> 10, seq.live_buffers >> 10, back.live_buffers >> 10, kBudgets >> 10,
              kAllowance >> 10);
  EXPECT_LE(par.live_buffers, kBudgets);
  EXPECT_LE(seq.live_buffers, 4 * io::kByteBudget + 4 * io::kChunk);
  EXPECT_LE(back.live_buffers, 4 * io::kByteBudget + 4 * io::kChunk);
  EXPECT_LE(par.rss_growth, kBudgets + kAllowance);
  EXPECT_LE(seq.rss_growth, kBudgets + kAllowance);
  EXPECT_LE(back.rss_growth, kBudgets + kAllowance);
  EXPECT_EQ(std::filesystem::file_size(dir / "back.log"), kSize);
  EXPECT_EQ(io_test::shell("cmp -s " + io_test::quoted(dir / "big.log") + " " + io_test::quoted(dir / "back.log")), 0);
#endif
}

}  // namespace
