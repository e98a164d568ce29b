// The machine facts of detail/platform.hpp, each decided on first use (never before main(),
// never from the environment): the TSC and its calibration, the cost of a spin pause, and
// the fence protocol.
#include "sluice/detail/platform.hpp"

#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/ticks.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

namespace sluice::detail {
namespace {

bool tsc_is_invariant() noexcept {
#if defined(__x86_64__) && !defined(SLUICE_STEADY_TICKS)
  unsigned a = 0, b = 0, c = 0, d = 0;
  // GCC's <cpuid.h> returns unsigned, clang's int: compared as unsigned either way.
  if (static_cast<unsigned>(__get_cpuid_max(0x80000000u, nullptr)) < 0x80000007u) return false;
  __cpuid(0x80000007u, a, b, c, d);
  return (d & (1u << 8)) != 0;  // "invariant TSC": constant rate, runs in every C-state
#else
  return false;
#endif
}

struct clock_facts {
  bool tsc;
  // The calibration anchor: the longer the span ns_per_tick() measures from it, the finer.
  std::uint64_t anchor_ticks;
  std::chrono::steady_clock::time_point anchor_time;
};

std::uint64_t read_ticks(bool tsc) noexcept {
#if defined(__x86_64__)
  if (tsc) return __rdtsc();
#endif
  (void)tsc;
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// Ticks and steady_clock read together: the narrowest of 8 bracketed readings (a few
// hundred ns of reads; a preemption would have to hit all eight to skew it).
// read_ticks(false) is steady_clock's nanoseconds.
tick_pair tsc_and_steady_now(bool tsc) noexcept {
  return tightest_tick_pair([tsc] { return read_ticks(tsc); },
                            [] { return static_cast<std::int64_t>(read_ticks(false)); }, 8);
}

const clock_facts& clock_facts_once() noexcept {
  static const clock_facts facts = [] {
    const bool tsc = tsc_is_invariant();
    const tick_pair p = tsc_and_steady_now(tsc);
    return clock_facts{tsc, p.ticks,
                       std::chrono::steady_clock::time_point(std::chrono::nanoseconds(p.ns))};
  }();
  return facts;
}

bool register_membarrier() noexcept {
#if defined(SLUICE_SYMMETRIC_FENCES)
  return false;
#else
  const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

std::atomic<fence_mode> g_fence_mode{fence_mode::kUnknown};

bool read_runnable_exceeds_cpus() noexcept {
  // Opened on first use and kept: pread() of /proc/loadavg is one system call, and the
  // kernel builds the text afresh for every read.
  // Never on 0, 1 or 2: a process started with those closed would have its "stdin" be
  // this file (io::read_fd(0) read /proc/loadavg), so the descriptor moves above them.
  static const int fd = [] {
    int f = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (f >= 0 && f <= 2) {
      const int high = ::fcntl(f, F_DUPFD_CLOEXEC, 3);
      ::close(f);
      f = high;
    }
    return f;
  }();
  // The CPUs this process may run on (taskset, a container's cpuset), at most those online,
  // read once. The mask is the main thread's (its id is the process id), not the first
  // caller's: a stage thread the user pinned to one CPU must not decide it for the rest.
  static const long cpus = [] {
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(::getpid(), sizeof set, &set) == 0) {
      const long allowed = CPU_COUNT(&set);
      if (allowed > 0 && (n < 1 || allowed < n)) n = allowed;
    }
    return n;
  }();
  // One CPU: whatever we wait for can run only once we stop, so a spin past the start
  // budget never pays (and a waking thread might wait out its ~200 us for the core).
  if (fd < 0 || cpus < 2) return true;
  char buf[128];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return true;
  buf[n] = '\0';
  // "0.52 0.58 0.59 3/412 12345": the fourth field is runnable/total scheduling entities.
  const char* p = buf;
  for (int field = 0; field < 3; ++field) {
    while (*p != '\0' && *p != ' ') ++p;
    while (*p == ' ') ++p;
  }
  long runnable = 0;
  bool digits = false;
  for (; *p >= '0' && *p <= '9'; ++p) {
    runnable = runnable * 10 + (*p - '0');
    digits = true;
  }
  return !digits || *p != '/' || runnable > cpus;
}

}  // namespace

bool ticks_use_tsc() noexcept { return clock_facts_once().tsc; }

double ns_per_tick() noexcept {
  const clock_facts& c = clock_facts_once();
  if (!c.tsc) return 1.0;
  // relaxed: every thread that calibrates computes nearly the same value; any will do.
  static std::atomic<double> cached{0.0};
  double r = cached.load(std::memory_order_relaxed);
  if (r != 0.0) return r;
  // Ticks against steady_clock since the first use. Never waits for a long span: an early
  // caller (a park's spin tuning, an early stats()) gets a rougher figure (30 ns of jitter
  // over 100 us is 0.03%); the first call after 10 ms fixes the value for good.
  constexpr auto kMinSpan = std::chrono::microseconds(1);
  constexpr auto kFixSpan = std::chrono::milliseconds(10);
  std::chrono::steady_clock::time_point now;
  std::uint64_t t;
  do {
    const tick_pair p = tsc_and_steady_now(true);
    now = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(p.ns));
    t = p.ticks;
  } while (now - c.anchor_time < kMinSpan || t <= c.anchor_ticks);
  const auto span = now - c.anchor_time;
  r = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(span).count()) /
      static_cast<double>(t - c.anchor_ticks);
  if (span >= kFixSpan) cached.store(r, std::memory_order_relaxed);
  return r;
}

std::uint64_t ticks_per_64_pauses() noexcept {
  static const std::uint64_t per64 = [] {
    std::uint64_t best = ~std::uint64_t{0};
    for (int run = 0; run < 5; ++run) {
      const std::uint64_t t0 = ticks();
      for (int i = 0; i < 64; ++i) spin_pause();
      const std::uint64_t t = ticks() - t0;
      if (t < best) best = t;  // the least disturbed run (an interrupt only adds)
    }
    return best;
  }();
  return per64;
}

bool runnable_exceeds_cpus() noexcept {
  // One reading serves its thread for a millisecond. A closed loop on few cores reaches
  // the gate in wait after wait, most ending in a park anyway, and a read on each of them
  // showed in the graph benchmark's throughput.
  constexpr std::int64_t kKeepNs = 1'000'000;
  thread_local std::int64_t t_until = 0;
  thread_local bool t_exceeds = true;
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (now < t_until) return t_exceeds;
  t_exceeds = read_runnable_exceeds_cpus();
  t_until = now + kKeepNs;
  return t_exceeds;
}

void nap(unsigned attempt) noexcept {
  std::this_thread::sleep_for(std::chrono::microseconds(20) * (1U << std::min(attempt, 6U)));
}

fence_mode current_fence_mode() noexcept { return g_fence_mode.load(std::memory_order_acquire); }

fence_mode decide_fence_mode() noexcept {
  fence_mode m = g_fence_mode.load(std::memory_order_acquire);
  if (m != fence_mode::kUnknown) return m;
  static std::once_flag once;
  std::call_once(once, [] {
    // Registered before anyone can read kAsymmetric: a membarrier from heavy_fence() is
    // only ever issued by a registered process.
    g_fence_mode.store(register_membarrier() ? fence_mode::kAsymmetric : fence_mode::kSymmetric,
                       std::memory_order_release);
  });
  return g_fence_mode.load(std::memory_order_acquire);
}

}  // namespace sluice::detail
