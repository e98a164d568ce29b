// sluice::buffer and sluice::buffer_pool: content, growth, recycling, bounds, threads,
// and channels of buffers weighed in bytes.
#include "sluice/buffer.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>

#include <cstdint>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "sluice/channel.hpp"
#include "support/watchdog.hpp"

namespace {

using sluice::buffer;
using sluice::buffer_pool;

TEST(buffer, default_is_empty_without_storage) {
  buffer b;
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_TRUE(b.view().empty());
}

TEST(buffer, capacity_is_at_least_what_was_asked_and_spare_commit_fill_it) {
  buffer_pool pool;
  buffer b(1000, pool);
  EXPECT_GE(b.capacity(), 1000u);
  EXPECT_EQ(b.size(), 0u);
  auto room = b.spare();
  ASSERT_EQ(room.size(), b.capacity());
  std::memcpy(room.data(), "hello", 5);
  b.commit(5);
  EXPECT_EQ(b.view(), "hello");
  EXPECT_EQ(b.span().size(), 5u);
  EXPECT_EQ(b.bytes().size(), 5u);
}

// A capacity no block can have is std::bad_alloc. Within 63 of SIZE_MAX the aligned
// operator new wrapped its rounded-up size to 0 and returned a tiny block for a buffer that
// claimed SIZE_MAX bytes of room: the first append corrupted the heap.
TEST(buffer, an_impossible_capacity_is_bad_alloc_not_a_tiny_block) {
  for (const std::size_t n : {SIZE_MAX, SIZE_MAX - 62, static_cast<std::size_t>(PTRDIFF_MAX) + 1}) {
    EXPECT_THROW(sluice::buffer b(n), std::bad_alloc) << n;
    sluice::buffer grow(16);
    EXPECT_THROW(grow.reserve(n), std::bad_alloc) << n;
  }
}

TEST(buffer, append_reserve_resize_keep_content_across_growth) {
  buffer_pool pool;
  buffer b(16, pool);
  std::string expect;
  for (int i = 0; i < 1000; ++i) {
    const std::string piece = std::to_string(i) + ",";
    b.append(piece);
    expect += piece;
  }
  EXPECT_EQ(b.view(), expect);
  b.reserve(1 << 20);
  EXPECT_GE(b.capacity(), std::size_t{1} << 20);
  EXPECT_EQ(b.view(), expect);
  b.resize(3);
  EXPECT_EQ(b.view(), expect.substr(0, 3));
  b.clear();
  EXPECT_TRUE(b.empty());
  EXPECT_GE(b.capacity(), std::size_t{1} << 20);
}

TEST(buffer, move_transfers_storage_and_empties_the_source) {
  buffer_pool pool;
  buffer a = buffer::copy_of("abc", pool);
  const char* p = a.data();
  buffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.view(), "abc");
  EXPECT_EQ(a.capacity(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(a.size(), 0u);
  buffer c = buffer::copy_of("xyz", pool);
  c = std::move(b);
  EXPECT_EQ(c.view(), "abc");
  EXPECT_EQ(pool.stats().live_bytes, c.capacity());  // "xyz"'s block went back
}

TEST(buffer_pool, size_classes_are_two_per_octave) {
  buffer_pool pool;
  EXPECT_EQ(pool.class_capacity(1), 256u);
  EXPECT_EQ(pool.class_capacity(256), 256u);
  EXPECT_EQ(pool.class_capacity(257), 384u);
  EXPECT_EQ(pool.class_capacity(385), 512u);
  EXPECT_EQ(pool.class_capacity(64 << 10), std::size_t{64} << 10);
  EXPECT_EQ(pool.class_capacity((64 << 10) + 1), std::size_t{96} << 10);
  EXPECT_EQ(pool.class_capacity(std::size_t{5} << 20), std::size_t{5} << 20);  // above the pooled range: exact
}

TEST(buffer_pool, a_steady_stream_allocates_nothing_per_chunk) {
  buffer_pool pool;
  for (int i = 0; i < 4; ++i) buffer warm(64 << 10, pool);
  const auto before = pool.stats();
  for (int i = 0; i < 10000; ++i) {
    buffer b(64 << 10, pool);
    b.commit(100);
  }
  const auto after = pool.stats();
  EXPECT_EQ(after.fresh_allocations, before.fresh_allocations);
  EXPECT_EQ(after.reuses - before.reuses, 10000u);
  EXPECT_EQ(after.live_bytes, 0u);
}

TEST(buffer_pool, retains_at_most_its_bound_and_trim_frees_everything) {
  buffer_pool pool({.max_retained_bytes = 256 << 10, .max_pooled_capacity = 4 << 20});
  {
    std::vector<buffer> many;
    for (int i = 0; i < 16; ++i) many.emplace_back(64 << 10, pool);
    EXPECT_EQ(pool.stats().live_bytes, std::size_t{16} * (64 << 10));
    EXPECT_EQ(pool.stats().peak_live_bytes, std::size_t{16} * (64 << 10));
  }
  EXPECT_EQ(pool.stats().live_bytes, 0u);
  EXPECT_LE(pool.stats().retained_bytes, std::size_t{256} << 10);
  EXPECT_GT(pool.stats().retained_bytes, 0u);
  pool.trim();
  EXPECT_EQ(pool.stats().retained_bytes, 0u);
  pool.reset_peak();
  EXPECT_EQ(pool.stats().peak_live_bytes, 0u);
}

TEST(buffer_pool, blocks_above_the_pooled_range_are_not_kept) {
  buffer_pool pool({.max_retained_bytes = 64 << 20, .max_pooled_capacity = 1 << 20});
  { buffer big(2 << 20, pool); }
  EXPECT_EQ(pool.stats().retained_bytes, 0u);
}

// Appending a buffer's own bytes to it, as std::string allows: on the growth path the old
// block went back to the pool before its bytes were copied (a free list's link over the
// first 8 bytes; a use after free above the pooled range).
TEST(buffer, appending_its_own_content_copies_it_whatever_the_growth) {
  for (const std::size_t n : {std::size_t{200}, std::size_t{5} << 20}) {
    SCOPED_TRACE(n);
    buffer_pool pool;
    buffer b(n, pool);
    b.resize(n);
    for (std::size_t i = 0; i < n; ++i) b.span()[i] = static_cast<char>('a' + i % 26);
    const std::string before(b.view());
    b.append(b.view());  // needs a larger block
    ASSERT_EQ(b.size(), 2 * n);
    EXPECT_TRUE(b.view() == before + before);
    b.append(b.view().substr(3, 10));  // a part of itself, fitting or not
    EXPECT_TRUE(b.view().substr(2 * n) == before.substr(3, 10));
  }
}

TEST(buffer, an_append_whose_size_overflows_is_length_error) {
  buffer b(16);
  b.append("abc");
  // volatile: a constant size would have the compiler warn about the (unreached) copy
  static volatile std::size_t huge = std::numeric_limits<std::size_t>::max();
  const std::size_t n = huge;
  EXPECT_THROW(b.append(b.data(), n), std::length_error);
  EXPECT_EQ(b.view(), "abc");
}

// A pool told to keep every size: a huge request is still bad_alloc, not a block of 0
// bytes (the class of a request over 3 x 2^62 doubled to 0), and resize() does not claim a
// size over a tiny block.
TEST(buffer_pool, pooling_every_size_still_refuses_impossible_ones) {
  buffer_pool pool({.max_retained_bytes = 64 << 20, .max_pooled_capacity = std::numeric_limits<std::size_t>::max()});
  const std::size_t huge = std::numeric_limits<std::size_t>::max();
  EXPECT_GE(pool.class_capacity(huge - 1), huge - 1);
  EXPECT_THROW((void)pool.get(huge), std::bad_alloc);
  EXPECT_THROW((void)pool.get((std::size_t{3} << 62) + 1), std::bad_alloc);
  buffer b(16, pool);
  b.append("x");
  EXPECT_THROW(b.resize(huge - 1), std::bad_alloc);
  EXPECT_EQ(b.view(), "x");
  { buffer big(std::size_t{1} << 20, pool); }
  EXPECT_GT(pool.stats().retained_bytes, 0u) << "a 1 MiB block is pooled";
}

// A max_pooled_capacity that is not a size class (5 MiB; 1000 bytes): requests up to it
// are pooled still. They rounded up to a class past it and were allocated every time.
TEST(buffer_pool, requests_up_to_the_pooled_limit_are_recycled_when_it_is_not_a_class) {
  for (const std::size_t limit : {std::size_t{5} << 20, std::size_t{1000}, std::size_t{100}}) {
    SCOPED_TRACE(limit);
    buffer_pool pool({.max_retained_bytes = 64 << 20, .max_pooled_capacity = limit});
    for (int i = 0; i < 100; ++i) buffer b(limit, pool);
    EXPECT_EQ(pool.stats().fresh_allocations, 1u);
    EXPECT_EQ(pool.stats().reuses, 99u);
    { buffer over(limit * 2 + 1000, pool); }
    const auto st = pool.stats();
    EXPECT_EQ(st.retained_bytes, pool.class_capacity(limit)) << "a block over the limit was kept";
  }
}

TEST(buffer_pool, concurrent_get_and_release_keep_the_books) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "pool threads");
  buffer_pool pool;
#ifdef SLUICE_TSAN_BUILD
  constexpr int kRounds = 2000;
#else
  constexpr int kRounds = 50000;
#endif
  std::vector<std::thread> ts;
  std::atomic<bool> go{false};
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      std::vector<buffer> held;
      for (int i = 0; i < kRounds; ++i) {
        buffer b(static_cast<std::size_t>(256 << ((i + t) % 9)), pool);
        b.append("x", 1);
        held.push_back(std::move(b));
        if (held.size() > 8) held.erase(held.begin());
      }
    });
  }
  go.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  EXPECT_EQ(pool.stats().live_bytes, 0u);
}

TEST(buffer, channels_of_buffers_are_budgets_in_bytes) {
  static_assert(sluice::channel_traits<buffer>::weighted);
  EXPECT_EQ(sluice::channel_traits<buffer>::weigh(buffer::copy_of(std::string(300, 'a'))), 300u);
  EXPECT_EQ(sluice::channel_traits<buffer>::weigh(buffer()), 1u);  // an empty buffer is never free
  auto [tx, rx] = sluice::bounded<buffer>(
      {.capacity = 64 << 10, .weigh = [](const buffer& b) { return sluice::channel_traits<buffer>::weigh(b); }});
  EXPECT_EQ(tx.try_push(buffer::copy_of(std::string(30 << 10, 'a'))), sluice::status::ok);
  EXPECT_EQ(tx.try_push(buffer::copy_of(std::string(30 << 10, 'b'))), sluice::status::ok);
  EXPECT_EQ(tx.try_push(buffer::copy_of(std::string(30 << 10, 'c'))), sluice::status::full);
  EXPECT_EQ(tx.stats().size, std::size_t{60} << 10);
  ASSERT_TRUE(rx.pop().has_value());
  EXPECT_EQ(tx.try_push(buffer::copy_of(std::string(30 << 10, 'c'))), sluice::status::ok);
}

}  // namespace
