// The cheap clock of detail/ticks.hpp: whether it reads the TSC, and its calibration.
#include "sluice/detail/ticks.hpp"

#include "sluice/detail/cache_padded.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace sluice::detail {
namespace {

bool tsc_is_invariant() noexcept {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0x80000000u, nullptr) < 0x80000007u) return false;
  __cpuid(0x80000007u, a, b, c, d);
  return (d & (1u << 8)) != 0;  // "invariant TSC": constant rate, runs in every C-state
#else
  return false;
#endif
}

// Decided once, before main() and before any channel can exist; never changes after.
// SLUICE_TICKS=steady forces steady_clock (to compare the two, or on a doubtful host).
const bool g_tsc = [] {
  const char* mode = std::getenv("SLUICE_TICKS");
  if (mode != nullptr && std::strcmp(mode, "steady") == 0) return false;
  return tsc_is_invariant();
}();

struct anchor {
  std::uint64_t ticks;
  std::chrono::steady_clock::time_point time;
};
// Taken at load time: the longer the span a calibration measures, the finer it is.
const anchor g_anchor{ticks(), std::chrono::steady_clock::now()};

}  // namespace

bool ticks_use_tsc() noexcept { return g_tsc; }

extern const std::uint64_t g_ticks_per_64_pauses = [] {
  std::uint64_t best = ~std::uint64_t{0};
  for (int run = 0; run < 5; ++run) {
    const std::uint64_t t0 = ticks();
    for (int i = 0; i < 64; ++i) spin_pause();
    const std::uint64_t t = ticks() - t0;
    if (t < best) best = t;  // the least disturbed run (an interrupt only adds)
  }
  return best;
}();

extern const bool g_channel_timing = [] {
  const char* mode = std::getenv("SLUICE_CHANNEL_TIMING");
  return !(mode != nullptr && (std::strcmp(mode, "off") == 0 || std::strcmp(mode, "0") == 0));
}();

double ns_per_tick() noexcept {
  if (!g_tsc) return 1.0;
  // relaxed: every thread that calibrates computes nearly the same value; any will do.
  static std::atomic<double> cached{0.0};
  double r = cached.load(std::memory_order_relaxed);
  if (r != 0.0) return r;
  // Ticks against steady_clock since load. Never waits for a long span: a caller in the
  // first moments of the process (a park's spin tuning, an early stats()) gets a rougher
  // figure (30 ns of jitter over 100 us is 0.03%); the first call after 10 ms fixes the
  // value for good.
  constexpr auto kMinSpan = std::chrono::microseconds(1);
  constexpr auto kFixSpan = std::chrono::milliseconds(10);
  std::chrono::steady_clock::time_point now;
  std::uint64_t t;
  do {
    now = std::chrono::steady_clock::now();
    t = ticks();
  } while (now - g_anchor.time < kMinSpan || t == g_anchor.ticks);
  const auto span = now - g_anchor.time;
  r = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(span).count()) /
      static_cast<double>(t - g_anchor.ticks);
  if (span >= kFixSpan) cached.store(r, std::memory_order_relaxed);
  return r;
}

}  // namespace sluice::detail
