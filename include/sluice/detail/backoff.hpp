// sluice/detail/backoff.hpp — how a blocked channel operation waits: spin, yield, park.
//
// Every blocking push or pop is "try, spin, yield, register, re-check, park":
//   s = op(); if (s != full) return s;                   // fast path, no system call
//   spin with pause, then sched_yield, re-trying          // the other side is usually near
//   key = waker.prepare_wait(); s = op();                // re-check after registering
//   if (s != full) cancel_wait(); else commit_wait(key)  // park; loop on wake-up
// op() is the operation's try form: it returns full while it must wait, anything else
// ends the wait. The notifier's half (make the condition true, light_fence(), notify if
// has_waiters()) is the caller's; detail/waker.hpp says why no wake-up is lost.
//
// The spin is adaptive per side of each channel (backoff): a wait that spinning
// satisfied lets the next one spin a round longer, up to the start budget. A wait that
// parked and was woken within kLongWait lengthens it by what it slept: a side fed at a
// steady pace (an item every 100 us) learns to spin across the gap instead of paying a
// futex wake per item. A park longer than that halves the part past the start budget,
// so a side whose partner is descheduled or idle for long (a slow stage, a quiet input)
// stops burning a core. The part past the start budget runs only while no thread waits
// for a core (runnable_exceeds_cpus(), detail/platform.hpp, asked again every 16 rounds):
// it spends a core that is idle, never one the thread we wait for may need.
//
// A spin also stops early when the other side has stalled while threads wait for a core
// ("crowded": more stage threads than cores, the normal case on small machines). The
// caller's peer() reads the other side's progress (the ring's pop position, for a push
// waiting for room). Once a crowded spin is kStallPauses old, a round that ends with it
// unchanged ends the spin: the side we wait for is then most likely not running at all,
// and every pause spent on it is a pause of a core it needs. A peer that moves keeps the
// spin going (a shared side's partners on another core), and uncrowded the spin runs its
// whole budget as before. Each wait decides afresh; the budget learns nothing from it
// (letting a stopped spin shorten the next ones made the 2x2 MPMC rows bimodal).
// A futex wake of a thread on an idle core costs tens of microseconds, so a short spin
// that finds the other side already moving wins; the yields let a thread that shares
// our core (more stage threads than cores is normal) run instead of us.
//
// A caller may gate the spin's re-tries with ready(): a push on a full ring re-tries only
// once an eighth of the ring is free (ring_flavour::push_worth_retrying), so that the two
// sides do not take turns on the same slot lines item by item. The yields and the park
// re-try op() on every wake-up whatever ready() says, so a gate can delay a wait by at
// most the spin, never hold it.
//
// Requires: op(), ready() and peer() are safe to call repeatedly from the waiting thread. The waker is the
//   one the notifiers of op()'s condition notify.
// Guarantees: block() returns op()'s first non-full status, or timeout once the deadline
//   passed (after one last op(), so a wake-up meant for this waiter is never swallowed).
//   It adds the wait's time to the side's wait_clock when `timing` is on.
// Non-guarantees: fairness between waiters; the deadline's precision. A timed wait looks
//   at the clock at every spin round's end (a round is at most 64 pauses, ~2 us), parks
//   only until kParkEarly before its deadline (a futex timeout ends late by the kernel's
//   timer slack, 50 us by default, and ~110 us was seen on the 2-core VM), and yields,
//   re-trying, through the rest: it ends a few microseconds late on an idle core, later
//   when the thread waits for a core.
// Lifetime: a backoff is a member of its channel side; block() keeps no state.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/detail/wait_clock.hpp"
#include "sluice/detail/waker.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

// Round r of a spin is 2^min(r,6) pauses (a pause is ~20 ns on x86). A side starts at
// kSpinRounds (319 pauses) and spins succeeding lengthen it no further. Parks that end
// within kLongWait lengthen it up to kMaxSpinRounds (11199 pauses, ~200 us, as long as
// the longest park that may teach it): an idle core then waits for the next item instead
// of a futex wake of ~11-40 us per item. (The cap was 1215 pauses, ~25 us, until a fused
// chain fed 10 k items/s, 100 us apart, was measured parking for every one: p50 37-43 us
// against oneTBB's 1.7-2.2, then 1.0-1.3 us; benchmarks/README.md.)
inline constexpr int kSpinRounds = 10;
inline constexpr int kMaxSpinRounds = 180;
inline constexpr int kMinSpinRounds = 3;
inline constexpr int kYieldRounds = 4;
// A wait that parked and was woken within kLongWait of parking lengthens the spin by what
// it slept; one parked longer shortens it.
inline constexpr std::chrono::microseconds kLongWait{200};

// One side's spin budget, in rounds. relaxed throughout: the budget is a tuning hint; a
// stale value only changes how long a wait spins.
class backoff {
 public:
  [[nodiscard]] int rounds() const noexcept { return rounds_.load(std::memory_order_relaxed); }
  // A spin of `rounds` (the budget read when it began) was enough: spin a round longer.
  void spin_was_enough(int rounds) noexcept {
    if (rounds < kSpinRounds) rounds_.store(rounds + 1, std::memory_order_relaxed);
  }
  // A wait parked for `slept`. A park that ended within kLongWait would have been cheaper
  // as a spin that long: the next spin adds as many 64-pause rounds as it slept (the next
  // item of a steady feed comes about as late). A longer one means spinning is waste:
  // the part past the start budget halves (a round less, under it).
  void parked_for(std::chrono::nanoseconds slept) noexcept {
    const int rounds = rounds_.load(std::memory_order_relaxed);
    if (slept <= kLongWait) {
      if (rounds >= kMaxSpinRounds) return;
      const auto round_ns = static_cast<std::int64_t>(std::max<std::uint64_t>(1, ticks_to_ns(ticks_per_64_pauses())));
      const std::int64_t more = slept.count() / round_ns + 1;
      rounds_.store(static_cast<int>(std::min<std::int64_t>(kMaxSpinRounds, rounds + more)), std::memory_order_relaxed);
    } else if (rounds > kSpinRounds) {
      rounds_.store(rounds - std::max(1, (rounds - kSpinRounds) / 2), std::memory_order_relaxed);
    } else if (rounds > kMinSpinRounds) {
      rounds_.store(rounds - 1, std::memory_order_relaxed);
    }
  }

 private:
  std::atomic<int> rounds_{kSpinRounds};
};

// The default `ready` of wait_loop(): every spin round re-tries op().
struct always_ready {
  bool operator()() const noexcept { return true; }
};

// What a peer() returns when the other side's progress cannot be read: the spin then
// never stops early. The default peer of wait_loop() and block().
inline constexpr std::uint64_t kUnknownPeer = ~std::uint64_t{0};
struct no_peer {
  std::uint64_t operator()() const noexcept { return kUnknownPeer; }
};
// A crowded spin first reads the other side's progress after this many pauses (rounds
// 0-4, ~0.6 us at ~20 ns a pause), then again at the end of every later round (32, then
// 64 pauses apart), and stops at the first read that finds it unchanged. Looking sooner
// (7 pauses) slowed the cap-1 ping-pong: the read takes the line the other side writes.
inline constexpr std::uint64_t kStallPauses = 31;

// How long before its deadline a timed wait stops parking and yields instead (above the
// kernel's default timer slack of 50 us, by which a futex timeout ends late).
inline constexpr auto kParkEarly = std::chrono::microseconds(100);

// What one wait_loop() did, for the caller's accounting.
struct wait_result {
  status s = status::full;      // op()'s last status, or timeout
  std::uint64_t pauses = 0;     // spin_pause() calls made
  bool spun_out = false;        // the spin gave up: the wait yielded, maybe parked
  bool stalled = false;         // it gave up early: crowded, and the other side stood still
  std::uint64_t slow_t0 = 0;    // ticks when the spin gave up (if spun_out)
  bool parked = false;          // the wait registered with the waker at least once
  std::uint64_t park_t0 = 0;    // ticks when it first did (if parked)
};

// Spin, yield, park until op() is not full or the deadline (nullptr: none) passes. The
// spin re-tries op() only when ready() is true, and stops early when crowded and peer()
// stands still.
// A wait that spins out is registered with `clock` (begin_slow); the caller ends it when
// wait_loop returns. If op() throws (a move or a weigh of the locked queue), wait_loop
// itself ends it, counting the time waited when `timing`, and leaves the waker as it
// found it (a throw between prepare_wait and commit_wait cancels the registration):
// a throw used to leave the clock's blocked time growing for ever, and a waiter counted
// that no thread was, so every later op on the other side made a futex call.
template <class Op, class Ready, class Peer = no_peer>
wait_result wait_loop(waker& w, Op& op, Ready& ready, const time_point* deadline, backoff& spin, wait_clock& clock,
                      bool timing, bool asym_fences, Peer&& peer = Peer{}) {
  // time_point::max() never passes: no clock reads for it (a graph's pushes wait so).
  if (deadline != nullptr && *deadline == time_point::max()) deadline = nullptr;
  auto expired = [&] { return deadline && std::chrono::steady_clock::now() >= *deadline; };
  wait_result r;
  const int rounds = spin.rounds();
  // Round k spins 2^min(k,6) pauses and re-tries after each one: the budget grows
  // exponentially, but the other side's move is noticed within one pause (~20-40 ns).
  // A failed re-try reads lines already in our cache, so it costs the other side
  // nothing; re-trying only every few pauses made a ping-pong round trip much slower.
  // Rounds past kSpinRounds (a budget that short parks lengthened) run only while no
  // thread waits for a core, asked at the start budget's end and every 16 rounds after
  // (a long spin outlives one answer): with more runnable threads than cores the core we
  // would spin on is one the thread we wait for may need.
  // Crowded only, the channel's progress (the flavour's progress(): both sides' positions)
  // is first read once the spin is kStallPauses old (a wait that ends sooner reads nothing
  // more than op() does), then at each round's end; a round without progress ends the spin.
  std::uint64_t seen = kUnknownPeer;
  for (int round = 0; round < rounds; ++round) {
    if (round >= kSpinRounds && (round - kSpinRounds) % 16 == 0 && runnable_exceeds_cpus()) break;
    for (int i = 0, n = 1 << (round < 6 ? round : 6); i < n; ++i) {
      spin_pause();
      ++r.pauses;
      if (!ready()) continue;
      if ((r.s = op()) != status::full) {
        spin.spin_was_enough(rounds);
        return r;
      }
    }
    if (deadline != nullptr && expired()) {  // ~20 ns a round, timed waits only
      r.s = status::timeout;
      return r;
    }
    if (r.pauses >= kStallPauses && runnable_exceeds_cpus()) {
      const std::uint64_t now = peer();
      if (now != kUnknownPeer && now == seen) {
        r.stalled = true;
        break;
      }
      seen = now;
    }
  }
  r.slow_t0 = ticks();
  r.spun_out = true;
  clock.begin_slow(r.slow_t0);  // block() ends it, or the catch below
  try {
    for (int round = 0; round < kYieldRounds; ++round) {
      if (expired()) {
        r.s = status::timeout;
        return r;
      }
      sched_yield();
      if ((r.s = op()) != status::full) return r;
    }
    for (;;) {
      // A timed wait parks until kParkEarly before its deadline, and yields, re-trying,
      // through the rest.
      time_point wake_at{};
      if (deadline != nullptr) {
        const time_point now = std::chrono::steady_clock::now();
        if (now >= *deadline) {
          r.s = status::timeout;
          return r;
        }
        wake_at = *deadline - kParkEarly;
        if (now >= wake_at) {
          sched_yield();
          if ((r.s = op()) != status::full) return r;
          continue;
        }
      }
      if (!r.parked) {
        r.parked = true;
        r.park_t0 = ticks();
      }
      const std::uint32_t key = w.prepare_wait(asym_fences);
      try {
        r.s = op();
      } catch (...) {
        w.cancel_wait();  // exactly once per prepare_wait (detail/waker.hpp)
        throw;
      }
      if (r.s != status::full) {
        w.cancel_wait();
        return r;
      }
      if (!w.commit_wait(key, deadline != nullptr ? &wake_at : nullptr)) {
        // Timed out. We may have been the one a notify picked, so try once more
        // before going on: a wake-up is never swallowed by a waiter that leaves. The
        // loop then yields until the deadline, and ends with timeout.
        if ((r.s = op()) != status::full) return r;
        continue;
      }
      if ((r.s = op()) != status::full) return r;
    }
  } catch (...) {
    // The op threw (an item's move): a waiter woken by a notify(1) may be leaving with
    // that wake-up, meant for one waiter only, so it passes it on. Kept, a producer parked
    // beside it slept on beside the free slot (or a consumer beside the item). A spare
    // wake-up is harmless: every woken waiter re-checks.
    if (r.parked) {
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (w.has_waiters()) w.notify(1);
    }
    clock.end_slow(r.slow_t0, pause_ticks(r.pauses) + (ticks() - r.slow_t0), timing);
    throw;
  }
}

// try, spin, yield, register, re-check, park. Returns the op's last status, or timeout.
// Time from the first failed try to the end goes to `clock` when `timing`: the spin's
// pauses x their calibrated cost, plus the ticks from the end of the spin to the end of
// the wait if it had to yield or park (two reads of the cheap clock, detail/ticks.hpp).
// alone() says whether the side has one handle (wait_clock::add_spin); it is called
// only for a timed wait that a spin satisfied.
template <class Op, class Ready, class Alone, class Peer = no_peer>
status block(waker& w, Op&& op, Ready&& ready, const time_point* deadline, backoff& spin, wait_clock& clock,
             bool timing, bool asym_fences, Alone&& alone, Peer&& peer = Peer{}) {
  const status s = op();
  if (s != status::full) return s;
  const wait_result r = wait_loop(w, op, ready, deadline, spin, clock, timing, asym_fences, peer);
  if (!r.spun_out) {
    if (timing) clock.add_spin(pause_ticks(r.pauses), alone());
    return r.s;
  }
  const std::uint64_t t1 = ticks();
  clock.end_slow(r.slow_t0, pause_ticks(r.pauses) + (t1 - r.slow_t0), timing);
  // Parks are rare and cost microseconds: converting here is free by comparison.
  if (r.parked) spin.parked_for(std::chrono::nanoseconds(ticks_to_ns(t1 - r.park_t0)));
  return r.s;
}

}  // namespace sluice::detail
