// The tool's value parsers (tools/common/args.hpp): what a user types on a command line
// is the number the tool uses, exactly, or a usage error.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <optional>

#include "bench/ring_memory.hpp"
#include "common/args.hpp"

namespace {

using sluice::tool::parse_count;
using sluice::tool::parse_size;
using sluice::tool::parse_duration;

// A double holds integers exactly only up to 2^53: 9007199254740993 read through one
// became 9007199254740992. Whole numbers are now read as integers.
TEST(ToolArgs, WholeNumbersAboveTwoToThe53AreExact) {
  EXPECT_EQ(parse_count("9007199254740993"), std::optional<std::uint64_t>(9007199254740993ULL));
  EXPECT_EQ(parse_size("9007199254740993"), std::optional<std::uint64_t>(9007199254740993ULL));
  EXPECT_EQ(parse_count("9223372036854776k"), std::nullopt);  // above 2^63
  EXPECT_EQ(parse_count("9223372036854775k"), std::optional<std::uint64_t>(9223372036854775000ULL));
  EXPECT_EQ(parse_size("8589934591G"), std::optional<std::uint64_t>(8589934591ULL << 30));
  EXPECT_EQ(parse_size("8589934592G"), std::nullopt);  // 2^63: does not fit an int64
  EXPECT_EQ(parse_size("9223372036854775807"), std::optional<std::uint64_t>(9223372036854775807ULL));
  EXPECT_EQ(parse_count("18446744073709551616"), std::nullopt);  // above 2^64: no wrap
}

TEST(ToolArgs, FractionsAndSuffixesStillParse) {
  EXPECT_EQ(parse_count("2.5k"), std::optional<std::uint64_t>(2500));
  EXPECT_EQ(parse_count("2.5"), std::nullopt);  // a count is whole
  EXPECT_EQ(parse_count("10M"), std::optional<std::uint64_t>(10'000'000));
  EXPECT_EQ(parse_size("1.5KiB"), std::optional<std::uint64_t>(1536));
  EXPECT_EQ(parse_size("64MiB"), std::optional<std::uint64_t>(64ULL << 20));
  EXPECT_EQ(parse_size("0"), std::optional<std::uint64_t>(0));
  EXPECT_EQ(parse_count("12x"), std::nullopt);
  EXPECT_EQ(parse_count("-1"), std::nullopt);
  EXPECT_EQ(parse_count(""), std::nullopt);
}

// A duration that is not zero never becomes zero (0 means "no limit" to --duration).
TEST(ToolArgs, ADurationUnderHalfANanosecondIsRefusedNotRoundedToZero) {
  EXPECT_EQ(parse_duration("0.1ns"), std::nullopt);
  EXPECT_EQ(parse_duration("0.0001us"), std::nullopt);
  EXPECT_EQ(parse_duration("0"), std::optional<std::chrono::nanoseconds>(0));
  EXPECT_EQ(parse_duration("0s"), std::optional<std::chrono::nanoseconds>(0));
  EXPECT_EQ(parse_duration("1ns"), std::optional<std::chrono::nanoseconds>(1));
  EXPECT_EQ(parse_duration("2.5ms"), std::optional<std::chrono::nanoseconds>(2'500'000));
}

// A --capacity whose rings cannot fit is a usage error before anything is allocated; where
// the system will not say what is free (0), a need past what a process can address (here
// 4 rings of 2^62 slots of 24 bytes) is still refused, and one that can be is left to run.
TEST(ToolArgs, RingsPastFreeMemoryAreRefusedEvenWhereFreeMemoryIsUnknown) {
  using sluice::tool::usage_error;
  using sluice::tool::bench::refuse_rings_past_free_memory;
  constexpr std::uint64_t GiB = 1ULL << 30;
  EXPECT_NO_THROW(refuse_rings_past_free_memory("1M", 1'000'000, 4, 24, "the graph's", 8 * GiB));
  try {
    refuse_rings_past_free_memory("100M", 100'000'000, 4, 24, "the graph's", 8 * GiB);
    ADD_FAILURE() << "9.6 GB of rings with 8 GiB free was not refused";
  } catch (const usage_error& e) {
    EXPECT_NE(std::string(e.what()).find("is free now"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(refuse_rings_past_free_memory("100M", 100'000'000, 4, 24, "the graph's", 0));
  try {
    refuse_rings_past_free_memory("4611686018427387904", 1ULL << 62, 4, 24, "a side's", 0);
    ADD_FAILURE() << "rings past the address space were not refused with free memory unknown";
  } catch (const usage_error& e) {
    EXPECT_NE(std::string(e.what()).find("more than this process can address"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a side's 4 channels"), std::string::npos) << e.what();
  }
}

}  // namespace
