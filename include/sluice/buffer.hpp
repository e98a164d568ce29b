// sluice/buffer.hpp — a move-only chunk of bytes from a recycling pool.
//
//   sluice::buffer b(64 * 1024);                 // capacity from buffer_pool::global()
//   std::span<char> room = b.spare();            // [size, capacity): fill it ...
//   b.commit(static_cast<std::size_t>(::read(fd, room.data(), room.size())));  // ... and claim it
//   std::string_view text = b.view();            // [data, data + size)
//   auto [tx, rx] = sluice::bounded<sluice::buffer>(
//       {.capacity = 64 * 1024, .weigh = sluice::channel_traits<sluice::buffer>::weigh});
//   tx.push(std::move(b));                       // the storage goes back to the pool when
//                                                // the last owner drops the buffer
//
// Requires: a buffer is used by one thread at a time (it may move between threads, for
//   example through a channel). A pool outlives every buffer drawn from it (the global
//   pool is never destroyed).
// Guarantees:
//   - Storage comes from a buffer_pool in size classes (two per octave, 256 B .. the
//     class of the pool's max_pooled_capacity: a request of up to max_pooled_capacity
//     bytes is pooled, whatever its class). A released block goes back to its class's
//     free list unless the pool already retains max_retained_bytes, so a steady stream
//     of chunks of one size allocates nothing per chunk after the first few.
//   - buffer_pool is thread safe: get() and release may run on any threads at once
//     (one mutex per size class, held for a pointer swap).
//   - channel_traits<buffer> is weighted: a channel of buffers is a budget in bytes
//     (weight = size(), at least 1 so that an empty buffer is never free).
//   - Contents [0, size()) survive reserve()/resize() growth; bytes past size() are
//     unspecified (storage is not zeroed). append() may take bytes of the buffer itself
//     (b.append(b.view())), as std::string::append may.
//   - A capacity no block can have (over PTRDIFF_MAX) is std::bad_alloc, never a
//     smaller block; a size that overflows is std::length_error.
// Non-guarantees: capacity() may exceed the requested capacity (rounded up to the size
//   class). Requests over max_pooled_capacity are allocated and freed each time.
// Lifetime: a moved-from buffer is empty (size and capacity 0) and may be reused.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "sluice/stage.hpp"

namespace sluice {

class buffer;

// Counters of one pool; a momentary snapshot.
struct buffer_pool_stats {
  std::size_t live_bytes = 0;       // capacity of buffers handed out and not yet released
  std::size_t peak_live_bytes = 0;  // the highest live_bytes seen (see reset_peak())
  std::size_t retained_bytes = 0;   // capacity parked in the free lists
  std::uint64_t fresh_allocations = 0;  // blocks obtained from the system allocator
  std::uint64_t reuses = 0;             // blocks taken from a free list
};

struct buffer_pool_options {
  std::size_t max_retained_bytes = std::size_t{8} << 20;  // free-list bound, all classes together
  std::size_t max_pooled_capacity = std::size_t{4} << 20;  // larger blocks are not recycled
};

// A thread-safe recycler of byte blocks in size classes.
class buffer_pool {
 public:
  explicit buffer_pool(buffer_pool_options o = {});
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;
  // Requires: no buffer drawn from this pool is alive. Frees the retained blocks.
  ~buffer_pool();

  // The process-wide pool; never destroyed, so buffers in static objects are safe.
  static buffer_pool& global();

  // A buffer with capacity() >= capacity and size() == 0.
  [[nodiscard]] buffer get(std::size_t capacity);

  [[nodiscard]] buffer_pool_stats stats() const noexcept;
  // Starts a new peak_live_bytes measurement from the current live_bytes.
  void reset_peak() noexcept;
  // Frees every retained block now.
  void trim() noexcept;

  // The capacity a request for n bytes is rounded up to (n itself above
  // max_pooled_capacity).
  [[nodiscard]] std::size_t class_capacity(std::size_t n) const noexcept;

 private:
  friend class buffer;
  static constexpr std::size_t kMinClass = 256;
  static constexpr int kClasses = 64;  // upper bound; the options cap the range actually used

  struct free_block {
    free_block* next;
  };
  struct alignas(64) size_class {
    std::mutex mu;
    free_block* head = nullptr;  // guarded by mu
  };

  // Returns storage of capacity cap (already rounded by class_capacity()).
  char* acquire(std::size_t cap);
  void release(char* p, std::size_t cap) noexcept;
  [[nodiscard]] int class_index(std::size_t cap) const noexcept;
  // Blocks of capacity cap have a free list: cap is a class, at most pooled_limit_.
  [[nodiscard]] bool pooled(std::size_t cap) const noexcept;

  const buffer_pool_options options_;
  const std::size_t pooled_limit_;  // the class of max_pooled_capacity (0: none pooled)
  std::unique_ptr<size_class[]> classes_;
  // All relaxed: statistics and a soft bound. retained_ may briefly overshoot
  // max_retained_bytes by one block per racing releaser, which is harmless.
  std::atomic<std::size_t> live_{0};
  std::atomic<std::size_t> peak_{0};
  std::atomic<std::size_t> retained_{0};
  std::atomic<std::uint64_t> fresh_{0};
  std::atomic<std::uint64_t> reuses_{0};
};

// A move-only chunk of bytes: [data(), data() + size()) is the content, up to capacity().
class buffer {
 public:
  buffer() noexcept = default;
  // An empty buffer with room for at least `capacity` bytes.
  explicit buffer(std::size_t capacity, buffer_pool& pool = buffer_pool::global());
  // A buffer holding a copy of s.
  static buffer copy_of(std::string_view s, buffer_pool& pool = buffer_pool::global());

  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  buffer(buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        cap_(std::exchange(o.cap_, 0)),
        pool_(std::exchange(o.pool_, nullptr)) {}
  buffer& operator=(buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      cap_ = std::exchange(o.cap_, 0);
      pool_ = std::exchange(o.pool_, nullptr);
    }
    return *this;
  }
  ~buffer() { release(); }

  [[nodiscard]] char* data() noexcept { return data_; }
  [[nodiscard]] const char* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] bool full() const noexcept { return size_ == cap_; }

  [[nodiscard]] std::span<char> span() noexcept { return {data_, size_}; }
  [[nodiscard]] std::span<const char> span() const noexcept { return {data_, size_}; }
  [[nodiscard]] std::span<std::byte> bytes() noexcept { return std::as_writable_bytes(span()); }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return std::as_bytes(span()); }
  [[nodiscard]] std::string_view view() const noexcept { return {data_, size_}; }

  // The writable room past the content: [data() + size(), data() + capacity()).
  [[nodiscard]] std::span<char> spare() noexcept { return {data_ + size_, cap_ - size_}; }
  // Claims n bytes written into spare(). Requires n <= spare().size().
  void commit(std::size_t n) noexcept { size_ += n; }

  // Capacity at least n, keeping the content (may move it to a larger block).
  void reserve(std::size_t n);
  // Size n; growing keeps the content and leaves the new bytes unspecified.
  void resize(std::size_t n) {
    if (n > cap_) reserve(n);
    size_ = n;
  }
  void append(const void* p, std::size_t n) {
    if (n == 0) return;
    if (n > cap_ - size_) {
      grow_append(p, n);  // p may point into this buffer: copied before the old block goes
      return;
    }
    std::memcpy(data_ + size_, p, n);
    size_ += n;
  }
  void append(std::string_view s) { append(s.data(), s.size()); }
  // Size 0; the storage stays.
  void clear() noexcept { size_ = 0; }
  // Gives the storage back to its pool now; the buffer becomes empty with capacity 0.
  void release() noexcept {
    if (data_ != nullptr) pool_->release(data_, cap_);
    data_ = nullptr;
    size_ = cap_ = 0;
    pool_ = nullptr;
  }
  [[nodiscard]] buffer_pool* pool() const noexcept { return pool_; }

 private:
  friend class buffer_pool;
  buffer(char* d, std::size_t cap, buffer_pool* pool) noexcept : data_(d), cap_(cap), pool_(pool) {}
  buffer bigger_copy(std::size_t n) const;  // a block of at least n from the same pool, holding this content
  void grow_append(const void* p, std::size_t n);

  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
  buffer_pool* pool_ = nullptr;
};

static_assert(std::is_nothrow_move_constructible_v<buffer>, "buffer moves through lock-free slots");

// A channel (or graph stage output) of buffers is budgeted in bytes.
template <>
struct channel_traits<buffer> {
  static constexpr bool weighted = true;
  static std::size_t weigh(const buffer& b) noexcept { return b.size() != 0 ? b.size() : 1; }
};

}  // namespace sluice
