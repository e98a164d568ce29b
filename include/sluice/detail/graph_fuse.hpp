// sluice/detail/graph_fuse.hpp — stage_options::fuse: a map / filter / flat_map / sink
// that runs as a function call on its upstream stage's thread.
//
// The edge from the upstream is still a channel<T>, so the upstream's code is unchanged
// (a source's tx.push(v), a map's push_batch, a flat_map's pushes): the builder turns it
// into a direct channel (detail/direct_flavour.hpp) whose push calls fused_stage::take()
// on the pushing thread. take() runs the stage function on the item, times the call
// (detail/ticks.hpp), counts it, applies the stage's error policy and pushes the results
// into the fused stage's own output sender, which may itself be direct: a chain of fused
// stages runs on one thread.
//
//   host thread i (the first unfused stage upstream, replica i)
//     push(v) -> direct channel -> take(v): instance i: f(v) -> push(out) -> next channel
//
// One instance (a copy of the function and of the output sender) per host thread, picked
// by tls_stage_thread (set by the runtime around each replica), so instances are never
// shared and need no lock. The stage's end (release(): the copies' destructors, then
// on_close, then its output closed or cancelled) runs on the host's last thread to end
// (graph_state::finish_fused), exactly as finish_replica ends an unfused stage.
//
// Requires: built by graph.hpp's builders (add_fused), before start(). Pushes into the
//   fused edge come from the host's own threads.
// Guarantees: each item pushed in is either refused (left with the pusher: the graph is
//   tearing down or the stage finished early) or taken: delivered, dropped by a filter,
//   or a dead letter naming this stage (its function threw, or its output ended). The
//   error policy is the stage's own (skip / restart: a fresh copy / stop: stage_error
//   names this stage). Busy time is the stage's own calls, less what runs after it.
//   A push from a thread the graph did not start (a source's helper thread, with a copy
//   of its sender) is taken too, never at the same time as another call of the same
//   copy of the function:
//   - one host thread (the usual case, and the only one a move-only function may
//     have): on the host's own copy, as an unfused stage of one replica would take it.
//     The first such push waits for the host's call in progress to end (a Dekker
//     handshake: the host's half is a compiler barrier with membarrier,
//     detail/waker.hpp); from then on every call takes a lock. (It ran on a
//     second copy, at the same time as the host's calls: a function's references were
//     raced, and a sink counting to N was called N plus what the other copy counted.)
//   - several host threads (they run copies side by side, one each, as replicas): on a
//     copy of its own, under a lock.
// Non-guarantees: a fused sink that returns false stops upstream at once, but its
//   cleanup runs when the upstream ends, not at that item.
// Lifetime: shared by the graph node (fused_control) and the direct channel
//   (direct_target); release() breaks the cycle through the input receiver (the graph
//   calls it when the host ends, and again, idempotently, when it is destroyed).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/direct_flavour.hpp"
#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_stages.hpp"
#include "sluice/detail/graph_task.hpp"
#include "sluice/detail/platform.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/detail/waker.hpp"

namespace sluice::detail {

enum class fuse_kind { map, filter, flat_map, sink };

template <fuse_kind K, class T, class U, class F>
class fused_stage final : public direct_target<T>, public fused_control {
  static constexpr bool kHasOutput = K != fuse_kind::sink;
  using out_sender = std::conditional_t<kHasOutput, sender<U>, int>;

  // One per host thread: its copy of the function and of the output sender.
  struct instance {
    instance(std::shared_ptr<fn_source<F>> src, const out_sender& tx) : fn(std::move(src)), out(tx) {}
    fn_slot<F> fn;
    out_sender out;
  };
  // Written by one thread each (its instance's), read by snapshot(): relaxed.
  //   clock: the ticks of the finished calls, with the call in progress (if any) counted
  //   up to now, in one word so that a reader never sees a call both open and finished:
  //   (v << 1) | open, v modulo 2^63. A closed word holds the finished calls' ticks; an
  //   open one holds them less the open call's start tick, and a reader adds its now.
  //   Without the open part, a snapshot during a long fused call counted the call as its
  //   host's busy time, and the never-decreasing floor kept it there after the call ended.
  struct counters {
    std::atomic<std::uint64_t> taken{0};
    std::atomic<std::uint64_t> clock{0};
    [[nodiscard]] std::uint64_t ticks_now(std::uint64_t now) const noexcept {
      const std::uint64_t w = clock.load(std::memory_order_relaxed);
      if ((w & 1) == 0) return w >> 1;
      // A start tick read on another core may be a little ahead of `now`: a "negative"
      // open part wraps to near 2^63, and counts as the finished calls' ticks alone (at
      // least 0; a later read has it right).
      const std::uint64_t t = ((w >> 1) + now) & (~std::uint64_t{0} >> 1);
      return t < (std::uint64_t{1} << 62) ? t : 0;
    }
  };

 public:
  fused_stage(graph_core& g, replica_env env, std::size_t in_ch, std::size_t out_ch, const void* self_key,
              const void* host_key, std::size_t threads, std::shared_ptr<fn_source<F>> fn, out_sender tx,
              receiver<T> rx)
      : graph_(&g),
        env_(std::move(env)),
        in_ch_(in_ch),
        out_ch_(out_ch),
        self_key_(self_key),
        host_key_(host_key),
        src_(std::move(fn)),
        tx_(std::move(tx)),
        rx_(std::move(rx)),
        ctr_(std::make_unique<cache_padded<counters>[]>(threads + 1)),
        threads_(threads),
        faults_(g.faults()),
        asym_fences_(decide_fence_mode() == fence_mode::kAsymmetric) {
    if (faults_ != nullptr) name_ = env_.stage_name();  // under sluice::testing::stress only
    inst_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) inst_.push_back(std::make_unique<instance>(src_, tx_));
  }

  direct_result take(T& v) noexcept override {
    const stage_thread me = tls_stage_thread;
    if (me.node == host_key_ && me.replica < threads_) [[likely]] {
      if (threads_ != 1) {  // a copy per host thread (F is copyable: the builder's rule)
        instance* in = inst_[me.replica].get();
        if (in == nullptr) return direct_result::refused;  // released (cannot happen while the host runs)
        return run(*in, *ctr_[me.replica], v, me.inside, me.replica);
      }
      // The one host thread shares its one copy with foreign pushers, once there is one.
      instance* in = inst_[0].get();
      if (in == nullptr) return direct_result::refused;
      host_in_call_.store(true, std::memory_order_relaxed);
      light_fence(asym_fences_);  // pairs with take_foreign()'s heavy_fence
      if (foreign_joined_.load(std::memory_order_relaxed)) [[unlikely]] {
        host_in_call_.store(false, std::memory_order_relaxed);
        std::lock_guard lk(foreign_mu_);
        in = inst_[0].get();
        if (in == nullptr) return direct_result::refused;
        return run(*in, *ctr_[0], v, me.inside, me.replica);
      }
      const direct_result r = run(*in, *ctr_[0], v, me.inside, me.replica);
      host_in_call_.store(false, std::memory_order_release);  // the call's effects, to a joining pusher
      return r;
    }
    return take_foreign(v);
  }

  [[nodiscard]] std::uint64_t taken() const noexcept override {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i <= threads_; ++i) n += ctr_[i]->taken.load(std::memory_order_relaxed);
    return n;
  }
  [[nodiscard]] std::uint64_t total_ticks() const noexcept override {
    const std::uint64_t now = ticks();
    std::uint64_t n = 0;
    for (std::size_t i = 0; i <= threads_; ++i) n += ctr_[i]->ticks_now(now);
    return n;
  }

  // The input's receiver, once the channel is direct (the builder's last step).
  void hold_input(receiver<T> rx) noexcept { rx_ = std::move(rx); }

  void release() noexcept override {
    std::vector<std::unique_ptr<instance>> gone;
    {
      // Under the lock: a foreign pusher (a thread the graph did not start may still hold
      // a sender) either ran before this or finds the stage released. The copies are
      // destroyed after it, so a cleanup that waits for such a pusher cannot deadlock.
      std::lock_guard lk(foreign_mu_);
      released_ = true;
      gone.reserve(inst_.size() + 1);
      for (auto& in : inst_) gone.push_back(std::move(in));
      gone.push_back(std::move(foreign_));
    }
    gone.clear();  // the copies' destructors: the stage's cleanup
    if constexpr (kHasOutput) tx_.reset();
    rx_.reset();
    src_.reset();  // the prototype, once no instance is left
  }

 private:
  direct_result take_foreign(T& v) noexcept {
    std::lock_guard lk(foreign_mu_);
    if (released_) return direct_result::refused;
    if (threads_ == 1) {
      // The host's one copy (a move-only function has no other: the builder allows it
      // with one host thread only). The first foreign push marks the stage shared, then
      // waits for the host's call in progress to end: after the fence pair, the host
      // either sees the mark (and takes this lock from its next call on) or this thread
      // sees its call.
      if (!foreign_joined_.load(std::memory_order_relaxed)) {
        foreign_joined_.store(true, std::memory_order_relaxed);
        heavy_fence(asym_fences_);
        for (unsigned naps = 0; host_in_call_.load(std::memory_order_acquire); ++naps) {
          if (env_.stopping()) return direct_result::refused;
          nap(naps);  // once per stage, for one call: park, not spin
        }
      }
      instance* in = inst_[0].get();
      if (in == nullptr) return direct_result::refused;
      return run(*in, *ctr_[threads_], v);
    } else if constexpr (fn_slot<F>::kCopies) {
      if (!foreign_) {
        try {
          foreign_ = std::make_unique<instance>(src_, tx_);
        } catch (...) {
          env_.fused_fail(std::current_exception());  // the copy threw: the stage fails, loudly
          return direct_result::refused;
        }
      }
      return run(*foreign_, *ctr_[threads_], v);
    }
    return direct_result::refused;  // a move-only function with several host threads: the builder refuses it
  }

  // `inside`: the host thread's "which stage runs now" mark (stage_thread::inside), null on
  // a foreign thread. Set to this stage for the call, so a call stuck past the teardown
  // deadline is named as this stage, not as its host; restored after (nested fused calls).
  // Under stress the fault hook is told likewise (`replica`: the host's), so the call's
  // channel ops, and the faults injected into them, are this stage's.
  direct_result run(instance& in, counters& c, T& v, std::atomic<const void*>* inside = nullptr,
                    std::size_t replica = 0) noexcept {
    if (env_.stopping()) return direct_result::refused;  // teardown, or an early finish
    const std::uint64_t t0 = ticks();
    // relaxed, single writer (this instance's thread): a statistic.
    c.taken.store(c.taken.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    const std::uint64_t done = c.clock.load(std::memory_order_relaxed) >> 1;
    c.clock.store(((done - t0) << 1) | 1, std::memory_order_relaxed);  // open from t0
    const void* const outer = inside != nullptr ? inside->load(std::memory_order_relaxed) : nullptr;
    if (inside != nullptr) inside->store(self_key_, std::memory_order_relaxed);
    const bool hooked = faults_ != nullptr && inside != nullptr;
    void* const hook_outer = hooked ? faults_->on_fused_begin(name_, replica) : nullptr;
    const direct_result r = apply(in, v);
    if (hooked) faults_->on_fused_end(hook_outer);
    if (inside != nullptr) inside->store(outer, std::memory_order_relaxed);
    c.clock.store((done + (ticks() - t0)) << 1, std::memory_order_relaxed);  // closed
    return r;
  }

  direct_result apply(instance& in, T& v) noexcept {
    const std::stop_token& st = env_.stop_token();
    if constexpr (K == fuse_kind::map) {
      std::optional<U> out;
      try {
        out.emplace(call_stage(in.fn.get(), st, std::move(v)));
      } catch (...) {
        return failed(in, v, std::current_exception());
      }
      return deliver(in, *out);
    } else if constexpr (K == fuse_kind::filter) {
      bool keep = false;
      try {
        keep = static_cast<bool>(call_stage(in.fn.get(), st, std::as_const(v)));
      } catch (...) {
        return failed(in, v, std::current_exception());
      }
      return keep ? deliver(in, v) : direct_result::taken;
    } else if constexpr (K == fuse_kind::flat_map) {
      try {
        call_stage(in.fn.get(), st, std::move(v), in.out);
      } catch (...) {
        return failed(in, v, std::current_exception());
      }
      // The output ended (its consumer finished early, or a teardown): nobody will read.
      return in.out.is_closed() ? direct_result::taken_done : direct_result::taken;
    } else {
      using R = stage_result_t<F, T&&>;
      bool more = true;
      try {
        if constexpr (std::is_same_v<R, void>) {
          call_stage(in.fn.get(), st, std::move(v));
        } else {
          more = static_cast<bool>(call_stage(in.fn.get(), st, std::move(v)));
        }
      } catch (...) {
        return failed(in, v, std::current_exception());
      }
      if (!more) {
        env_.finish_stage();  // "enough": not a failure; every host thread stops feeding us
        return direct_result::taken_done;
      }
      return direct_result::taken;
    }
  }

  // Pushes one result on; when the output ended it becomes a dead letter of the output.
  // A push that throws (a fault injected under sluice::testing::stress) is handled as
  // for an unfused stage whose push threw out of its loop: the policy restarts or stops,
  // never skips. A restart keeps the result and pushes it again with the fresh copy in
  // place (an unfused stage re-pushes its batch); a stop makes it a dead letter.
  template <class V>
  direct_result deliver(instance& in, V& out) noexcept {
    if constexpr (kHasOutput) {
      for (;;) {
        std::exception_ptr e;
        try {
          if (push_keep(in.out, out)) return direct_result::taken;
          graph_->discard_held(out_ch_, out);
          return direct_result::taken_done;
        } catch (...) {
          e = std::current_exception();  // push_keep leaves `out` intact when it throws
        }
        const direct_result r = policy(in, std::move(e), false);
        if (r != direct_result::taken) {
          graph_->discard_held(out_ch_, out);
          return r;
        }
        // Renewed (no error goes on without a restart when no item failed): try again.
      }
    } else {
      (void)in;
      (void)out;
      return direct_result::taken;
    }
  }

  // The function threw on v: v is a dead letter naming this stage, then the policy.
  direct_result failed(instance& in, T& v, std::exception_ptr e) noexcept {
    env_.discard_failed(in_ch_, typeid(T), std::addressof(v), e);
    return policy(in, std::move(e), true);
  }
  direct_result policy(instance& in, std::exception_ptr e, bool item) noexcept {
    switch (env_.fused_error(std::move(e), item)) {
      case replica_env::after_error::go_on:
        return direct_result::taken;
      case replica_env::after_error::renew:
        try {
          in.fn.renew();  // destroys the failed copy (its cleanup), makes a fresh one
        } catch (...) {
          env_.fused_fail(std::current_exception());
          return direct_result::taken_done;
        }
        return direct_result::taken;
      case replica_env::after_error::stop:
        break;
    }
    return direct_result::taken_done;  // the graph fails; upstream pushes fail from now on
  }

  graph_core* graph_;
  replica_env env_;
  std::size_t in_ch_;
  std::size_t out_ch_;
  const void* self_key_;  // this stage (graph_core::node_key)
  const void* host_key_;
  std::shared_ptr<fn_source<F>> src_;
  out_sender tx_;
  receiver<T> rx_;  // keeps the direct channel connected until release()
  std::unique_ptr<cache_padded<counters>[]> ctr_;  // per host thread, then the foreign one
  std::size_t threads_;
  fault_hook* faults_;  // null unless the graph is under sluice::testing::stress
  const bool asym_fences_;  // the fence protocol of the handshake (detail/waker.hpp)
  std::string name_;    // this stage's, for faults_ (set only with it)
  std::vector<std::unique_ptr<instance>> inst_;
  std::mutex foreign_mu_;
  std::unique_ptr<instance> foreign_;  // guarded by foreign_mu_
  bool released_ = false;              // guarded by foreign_mu_
  // One host thread only: the handshake that lets a foreign pusher share the host's copy.
  std::atomic<bool> host_in_call_{false};    // written by the host around each unlocked call
  std::atomic<bool> foreign_joined_{false};  // set once, by the first foreign push
};

// logic_error naming the stage when `fuse` is set on a stage that cannot be fused.
inline void reject_fuse(const stage_options& o, const std::string& name, const char* what) {
  if (o.fuse) {
    throw std::logic_error("sluice::graph: stage '" + name + "' cannot be fused: " + what +
                           " (fuse applies to a map, filter, flat_map or sink)");
  }
}

}  // namespace sluice::detail
