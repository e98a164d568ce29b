// sluice/detail/cache_padded.hpp — one padding type for everything shared between cores.
//
// Guarantees: a cache_padded<T> starts on its own cache line and no other object
// shares the line(s) it occupies, so two of them written by different threads never
// false-share.
// Non-guarantees: nothing about T's own thread safety.
#pragma once

#include <cstddef>
#include <new>
#include <utility>

namespace sluice::detail {

// 64 bytes is the line on every x86-64 and most arm64 parts; adjacent-line
// prefetching on Intel pulls pairs, so we pad to 128 as crossbeam and folly do.
inline constexpr std::size_t kCacheLine = 128;

template <class T>
struct alignas(kCacheLine) cache_padded {
  T value;

  cache_padded() = default;
  template <class... Args>
  explicit cache_padded(Args&&... args) : value(std::forward<Args>(args)...) {}

  T& operator*() noexcept { return value; }
  const T& operator*() const noexcept { return value; }
  T* operator->() noexcept { return &value; }
  const T* operator->() const noexcept { return &value; }
};

static_assert(alignof(cache_padded<char>) == kCacheLine, "cache_padded must start a cache line");
static_assert(sizeof(cache_padded<char>) == kCacheLine, "cache_padded must fill its cache line");

// One call to tell the core we are spinning (x86 `pause`, arm `yield`).
// (Not named cpu_relax: Boost.Fiber defines a macro of that name.)
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace sluice::detail
