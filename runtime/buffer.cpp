// sluice::buffer and sluice::buffer_pool: size classes with bounded free lists.
#include "sluice/buffer.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <new>
#include <stdexcept>

namespace sluice {
namespace {

constexpr std::align_val_t kAlign{64};

char* allocate_block(std::size_t cap) {
  // No block can be larger than PTRDIFF_MAX bytes, and the aligned operator new of
  // libstdc++ rounds the size up to the alignment first: within 63 of SIZE_MAX that wraps
  // to 0 and it returned a tiny block for a buffer that claimed SIZE_MAX bytes of room.
  if (cap > static_cast<std::size_t>(PTRDIFF_MAX)) throw std::bad_alloc();
  return static_cast<char*>(::operator new(cap, kAlign));
}
void free_block_storage(char* p, std::size_t cap) noexcept { ::operator delete(p, cap, kAlign); }

}  // namespace

namespace {
constexpr std::size_t kMinSize = 256;  // buffer_pool::kMinClass

// The size class of n: 256 B, then two per octave (1.5 x and 2 x a power of two); n
// itself past PTRDIFF_MAX (no block is that large: allocate_block refuses it; doubling
// the octave's base there wrapped to 0, a class of 0 bytes).
std::size_t size_class_of(std::size_t n) noexcept {
  if (n <= kMinSize) return kMinSize;
  if (n > static_cast<std::size_t>(PTRDIFF_MAX)) return n;
  // n lies in (base, 2*base]; the classes there are 1.5*base and 2*base.
  const std::size_t base = std::bit_floor(n - 1);
  return n <= base + base / 2 ? base + base / 2 : 2 * base;
}
}  // namespace

buffer_pool::buffer_pool(buffer_pool_options o)
    : options_(o),
      // A request of up to max_pooled_capacity rounds up to at most this class: pooling
      // stops there. (It stopped at max_pooled_capacity itself, so where that was not a
      // class, say 5 MiB, requests just under it rounded up past it and were never pooled.)
      pooled_limit_(o.max_pooled_capacity == 0 ? 0 : size_class_of(o.max_pooled_capacity)),
      classes_(std::make_unique<size_class[]>(kClasses)) {
  static_assert(kMinSize == kMinClass);
}

buffer_pool::~buffer_pool() { trim(); }

buffer_pool& buffer_pool::global() {
  // Deliberately never destroyed: buffers may die during static destruction.
  static buffer_pool* const pool = new buffer_pool();
  return *pool;
}

std::size_t buffer_pool::class_capacity(std::size_t n) const noexcept {
  if (n > options_.max_pooled_capacity) return std::max(n, kMinClass);
  return size_class_of(n);
}

bool buffer_pool::pooled(std::size_t cap) const noexcept {
  return cap <= pooled_limit_ && cap == size_class_of(cap) && class_index(cap) < kClasses;
}

int buffer_pool::class_index(std::size_t cap) const noexcept {
  const std::size_t base = std::bit_floor(cap);
  const int octave = std::countr_zero(base) - std::countr_zero(kMinClass);
  return 2 * octave + (cap != base ? 1 : 0);
}

buffer buffer_pool::get(std::size_t capacity) {
  const std::size_t cap = class_capacity(capacity);
  return buffer(acquire(cap), cap, this);
}

char* buffer_pool::acquire(std::size_t cap) {
  char* p = nullptr;
  if (pooled(cap)) {
    size_class& c = classes_[static_cast<std::size_t>(class_index(cap))];
    std::lock_guard lock(c.mu);
    if (c.head != nullptr) {
      p = reinterpret_cast<char*>(std::exchange(c.head, c.head->next));
    }
  }
  if (p != nullptr) {
    // relaxed: statistics; the block itself was handed over under the class mutex.
    retained_.fetch_sub(cap, std::memory_order_relaxed);
    reuses_.fetch_add(1, std::memory_order_relaxed);
  } else {
    p = allocate_block(cap);
    fresh_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics
  }
  // relaxed: statistics only; peak_ is a monotone max kept with a CAS loop.
  const std::size_t live = live_.fetch_add(cap, std::memory_order_relaxed) + cap;
  std::size_t peak = peak_.load(std::memory_order_relaxed);
  while (live > peak && !peak_.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
  return p;
}

void buffer_pool::release(char* p, std::size_t cap) noexcept {
  live_.fetch_sub(cap, std::memory_order_relaxed);  // relaxed: statistics
  if (pooled(cap)) {
    // relaxed: a soft bound (see the field's comment); the block moves under the mutex.
    if (retained_.load(std::memory_order_relaxed) + cap <= options_.max_retained_bytes) {
      retained_.fetch_add(cap, std::memory_order_relaxed);
      size_class& c = classes_[static_cast<std::size_t>(class_index(cap))];
      auto* b = reinterpret_cast<free_block*>(p);
      std::lock_guard lock(c.mu);
      b->next = c.head;
      c.head = b;
      return;
    }
  }
  free_block_storage(p, cap);
}

buffer_pool_stats buffer_pool::stats() const noexcept {
  buffer_pool_stats s;
  s.live_bytes = live_.load(std::memory_order_relaxed);
  s.peak_live_bytes = peak_.load(std::memory_order_relaxed);
  s.retained_bytes = retained_.load(std::memory_order_relaxed);
  s.fresh_allocations = fresh_.load(std::memory_order_relaxed);
  s.reuses = reuses_.load(std::memory_order_relaxed);
  return s;
}

void buffer_pool::reset_peak() noexcept {
  peak_.store(live_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void buffer_pool::trim() noexcept {
  for (int i = 0; i < kClasses; ++i) {
    free_block* head;
    {
      std::lock_guard lock(classes_[static_cast<std::size_t>(i)].mu);
      head = std::exchange(classes_[static_cast<std::size_t>(i)].head, nullptr);
    }
    // Class i holds blocks of one capacity: recompute it from the index.
    const std::size_t base = kMinClass << (i / 2);
    const std::size_t cap = (i % 2 == 0) ? base : base + base / 2;
    while (head != nullptr) {
      free_block* next = head->next;
      retained_.fetch_sub(cap, std::memory_order_relaxed);
      free_block_storage(reinterpret_cast<char*>(head), cap);
      head = next;
    }
  }
}

buffer buffer::copy_of(std::string_view s, buffer_pool& pool) {
  buffer b = pool.get(s.size());
  b.append(s);
  return b;
}

buffer::buffer(std::size_t capacity, buffer_pool& pool) : buffer(pool.get(capacity)) {}

buffer buffer::bigger_copy(std::size_t n) const {
  buffer_pool& pool = pool_ != nullptr ? *pool_ : buffer_pool::global();
  buffer bigger = pool.get(n);
  if (size_ != 0) std::memcpy(bigger.data_, data_, size_);
  bigger.size_ = size_;
  return bigger;
}

void buffer::reserve(std::size_t n) {
  if (n <= cap_) return;
  *this = bigger_copy(n);
}

void buffer::grow_append(const void* p, std::size_t n) {
  if (n > static_cast<std::size_t>(PTRDIFF_MAX) - size_) throw std::length_error("sluice::buffer::append: size overflows");
  buffer bigger = bigger_copy(std::max(size_ + n, cap_ * 2));
  std::memcpy(bigger.data_ + size_, p, n);  // before this buffer's block goes back
  bigger.size_ += n;
  *this = std::move(bigger);
}

}  // namespace sluice
