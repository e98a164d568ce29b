// tests/support/tracked.hpp — an item type that counts its own lifetime.
//
//   const auto before = sluice_test::tracked::counters().snapshot();
//   {
//     auto [tx, rx] = sluice::bounded<sluice_test::tracked>(4);
//     (void)tx.try_push(sluice_test::tracked(1));
//   }                                             // the channel destroys what it holds
//   EXPECT_EQ(sluice_test::tracked::counters().live_since(before), 0);
//   EXPECT_EQ(sluice_test::tracked::counters().bad_destroys(), 0);
//
// Requires: nothing; any thread may construct, move and destroy tracked values.
// Guarantees:
//   - Every constructor (value, copy, move) adds one to constructed(); the destructor
//     adds one to destroyed(). live_since(snapshot) is the number of objects made since
//     the snapshot and not yet destroyed, so a leak or a double destruction shows as a
//     non-zero value. A destructor that runs on an object that is not alive (destroyed
//     twice, or never constructed) is counted in bad_destroys() instead of crashing.
//   - throwing_tracked's move constructor is not noexcept (so a channel takes its locked
//     path) and throws tracked_move_error on the move chosen with throw_on_move(n): the
//     n-th move from now (0: the next one). It throws once; the moved-from object keeps
//     its value, and the throw is counted in move_throws().
// Non-guarantees: the counters are per type (tracked and throwing_tracked each have
//   their own), process-wide and never reset: compare against a snapshot, and do not
//   run two tests that use the same type at once.
// Lifetime: the counters are function-local statics (they outlive every test).
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

namespace sluice_test {

// The exception a throwing_tracked move throws when told to.
struct tracked_move_error : std::runtime_error {
  tracked_move_error() : std::runtime_error("throwing_tracked: move constructor told to throw") {}
};

struct lifetime_snapshot {
  std::int64_t constructed = 0;
  std::int64_t destroyed = 0;
};

// relaxed everywhere: these are statistics read after the threads that touched the
// items were joined (the join is the happens-before edge that makes them exact).
class lifetime_counters {
 public:
  [[nodiscard]] std::int64_t constructed() const noexcept { return constructed_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t destroyed() const noexcept { return destroyed_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t moves() const noexcept { return moves_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t copies() const noexcept { return copies_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t move_throws() const noexcept { return move_throws_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t bad_destroys() const noexcept { return bad_destroys_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t live() const noexcept { return constructed() - destroyed(); }

  [[nodiscard]] lifetime_snapshot snapshot() const noexcept { return {constructed(), destroyed()}; }
  // Objects constructed since s and not yet destroyed (0: nothing leaked, nothing freed twice).
  [[nodiscard]] std::int64_t live_since(const lifetime_snapshot& s) const noexcept {
    return (constructed() - s.constructed) - (destroyed() - s.destroyed);
  }

  void on_construct() noexcept { constructed_.fetch_add(1, std::memory_order_relaxed); }
  void on_move() noexcept { moves_.fetch_add(1, std::memory_order_relaxed); }
  void on_copy() noexcept { copies_.fetch_add(1, std::memory_order_relaxed); }
  void on_move_throw() noexcept { move_throws_.fetch_add(1, std::memory_order_relaxed); }
  void on_destroy(bool was_alive) noexcept {
    if (was_alive) {
      destroyed_.fetch_add(1, std::memory_order_relaxed);
    } else {
      bad_destroys_.fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  std::atomic<std::int64_t> constructed_{0};
  std::atomic<std::int64_t> destroyed_{0};
  std::atomic<std::int64_t> moves_{0};
  std::atomic<std::int64_t> copies_{0};
  std::atomic<std::int64_t> move_throws_{0};
  std::atomic<std::int64_t> bad_destroys_{0};
};

// NothrowMove = true: `tracked`, a ring-capable item. false: `throwing_tracked`.
template <bool NothrowMove>
class basic_tracked {
 public:
  static lifetime_counters& counters() noexcept {
    static lifetime_counters c;
    return c;
  }

  basic_tracked() noexcept : basic_tracked(0) {}
  explicit basic_tracked(std::uint64_t value) noexcept : value_(value) { counters().on_construct(); }
  basic_tracked(const basic_tracked& o) noexcept : value_(o.value_), throw_in_(o.throw_in_) {
    counters().on_construct();
    counters().on_copy();
  }
  basic_tracked(basic_tracked&& o) noexcept(NothrowMove) : value_(o.value_) {
    if constexpr (!NothrowMove) {
      if (o.throw_in_ == 0) {
        o.throw_in_ = -1;  // throw once; the source keeps its value
        counters().on_move_throw();
        throw tracked_move_error();
      }
      throw_in_ = o.throw_in_ > 0 ? o.throw_in_ - 1 : -1;
      o.throw_in_ = -1;
    }
    o.moved_from_ = true;
    counters().on_construct();
    counters().on_move();
  }
  basic_tracked& operator=(const basic_tracked& o) noexcept {
    value_ = o.value_;
    throw_in_ = o.throw_in_;
    moved_from_ = o.moved_from_;
    return *this;
  }
  basic_tracked& operator=(basic_tracked&& o) noexcept {
    value_ = o.value_;
    throw_in_ = o.throw_in_;
    moved_from_ = o.moved_from_;
    o.moved_from_ = true;
    o.throw_in_ = -1;
    return *this;
  }
  ~basic_tracked() {
    counters().on_destroy(alive_ == kAlive);
    alive_ = kDead;
  }

  // The n-th move constructor from now (counting along the chain of moved-to objects)
  // throws; 0 is the next one. Only for throwing_tracked.
  basic_tracked& throw_on_move(int n = 0) noexcept {
    static_assert(!NothrowMove, "only throwing_tracked may throw on move");
    throw_in_ = n;
    return *this;
  }

  [[nodiscard]] std::uint64_t value() const noexcept { return value_; }
  [[nodiscard]] bool moved_from() const noexcept { return moved_from_; }
  friend bool operator==(const basic_tracked& a, const basic_tracked& b) noexcept {
    return a.value_ == b.value_;
  }

 private:
  static constexpr std::uint32_t kAlive = 0xA11CE5u;
  static constexpr std::uint32_t kDead = 0xDEADu;

  std::uint64_t value_ = 0;
  int throw_in_ = -1;  // moves left before one throws; -1: never
  bool moved_from_ = false;
  std::uint32_t alive_ = kAlive;
};

using tracked = basic_tracked<true>;
using throwing_tracked = basic_tracked<false>;

static_assert(std::is_nothrow_move_constructible_v<tracked>);
static_assert(!std::is_nothrow_move_constructible_v<throwing_tracked>);

}  // namespace sluice_test
