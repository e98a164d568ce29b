// tests/support/seed.hpp — reproducible randomness for stress tests.
//
//   std::mt19937_64 rng(sluice_test::test_seed());   // prints the seed to replay
//
// Requires: called from inside a running GoogleTest test (it reads the test's name).
// Guarantees:
//   - base_seed(): env SLUICE_SEED (decimal or 0x-hex) if set, otherwise a fresh random
//     value; the same for the whole process, printed once to stdout as
//     "[seed] SLUICE_SEED=<n>" so a failing run can be replayed.
//   - test_seed(salt): base_seed() mixed with the test's full name and salt, so every
//     test draws its own stream, yet SLUICE_SEED=<n> --gtest_filter=<test> replays one
//     test exactly (same name, same salt, same seed). Printed per test and recorded as
//     the test property "seed".
//   - mix(a, b): a splitmix64-style hash for deriving sub-seeds (per thread, per run).
// Non-guarantees: replaying a seed replays the random choices, not the thread
//   interleaving; a race found once may need several runs of the same seed to recur.
// Lifetime: stateless apart from the process-wide base seed.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "support/watchdog.hpp"

namespace sluice_test {

inline std::uint64_t mix(std::uint64_t a, std::uint64_t b = 0) noexcept {
  std::uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline std::uint64_t base_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 0;
    if (const char* env = std::getenv("SLUICE_SEED"); env != nullptr && *env != '\0') {
      s = std::strtoull(env, nullptr, 0);
    } else {
      std::random_device rd;
      s = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }
    std::printf("[seed] SLUICE_SEED=%llu (set it to replay)\n", static_cast<unsigned long long>(s));
    std::fflush(stdout);
    return s;
  }();
  return seed;
}

inline std::uint64_t test_seed(std::uint64_t salt = 0) {
  const std::string name = current_test_name();
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across builds, unlike std::hash
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  const std::uint64_t s = mix(base_seed() ^ h, salt);
  std::printf("[seed] %s: SLUICE_SEED=%llu -> test seed %llu\n", name.c_str(),
              static_cast<unsigned long long>(base_seed()), static_cast<unsigned long long>(s));
  std::fflush(stdout);
  ::testing::Test::RecordProperty("seed", std::to_string(base_seed()));
  return s;
}

}  // namespace sluice_test
