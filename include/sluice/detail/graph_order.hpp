// sluice/detail/graph_order.hpp — keeping input order through replicas: the reorder
// window of ordered map/filter replicas, and the order of an ordered flat_map.
//
// Ordered replicas (map/filter, replicas > 1, ordered): a replica pops its batch and
// takes a sequence number under one mutex (so batch order is input order), works
// without locks, then hands the output batch to the reorder_window. The window has a
// fixed number of slots: a batch whose number is a window ahead of the next to emit
// waits, so a slow item blocks the others instead of making memory grow. Whoever fills
// the slot that is next becomes the emitter and pushes slots in order until it finds a
// gap; the others go back to work.
//
// Ordered flat_map replicas: a replica pops a batch of input items (up to kBatch) and
// numbers it under one mutex; the batch gets a private bounded channel (the stage's
// capacity, at most 1024) that the replica's function pushes each item's outputs into,
// in turn. One extra thread of the stage (the emitter) drains the private channels in
// number order into the stage's output. The window (2 x replicas) bounds how many
// private channels exist at once, and so the items held past the output channel.
// A replica's time blocked on the window, or pushing into its private channel (the
// emitter forwards one batch at a time, held up by the output or by earlier batches), is
// the stage's backpressure (window_wait, private_push_ns()), not its busy time.
// (A private channel of 64 per input item cost two thread wakes an item: 0.13 M
// outputs/s where unordered replicas moved 15-23 M; graph bench flatmap8_*, 2026-12-04.)
//
// Requires: one reorder_window / flat_map_order per ordered stage, shared by its
//   replicas (and its emitter); a replica delivers every sequence number it took.
// Guarantees: output order is input order; at most `window` batches (items) are held
//   past the replicas; when the output ends or teardown interrupts a wait, every batch
//   or private channel still held becomes a dead letter and no replica stays blocked.
// Non-guarantees: throughput when one item is much slower than the window's others
//   (they wait for it, by design).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_task.hpp"
#include "sluice/detail/wait_clock.hpp"

namespace sluice::detail {

// ---- reorder window (ordered map/filter replicas) -------------------------------

template <class U>
class reorder_window {
 public:
  reorder_window(graph_core& g, std::size_t out_channel, std::size_t window, std::shared_ptr<wait_clock> turns,
                 std::shared_ptr<wait_clock> window_wait)
      : turn_wait(std::move(turns)), graph_(&g), out_(out_channel), window_wait_(std::move(window_wait)),
        slots_(window) {}
  reorder_window(const reorder_window&) = delete;
  reorder_window& operator=(const reorder_window&) = delete;
  ~reorder_window() {
    // Batches still parked here when the stage ends (teardown, output gone).
    for (auto& s : slots_) {
      if (s) discard_items(*graph_, out_, *s);
    }
  }

  // Popping and numbering happen together under this mutex: batch order is input order.
  // A replica waiting for it waits for input (another holds it in a blocking pop):
  // timed on turn_wait (node_spec::turn_wait), so it counts as starved, not busy.
  std::mutex pop_mu;
  std::uint64_t next_seq = 0;  // guarded by pop_mu
  std::shared_ptr<wait_clock> turn_wait;

  std::unique_lock<std::mutex> take_turn() { return lock_timed(pop_mu, turn_wait.get()); }

  // Hands batch `seq` over (items is left empty). Returns false when the stage must
  // stop: the output ended, or teardown (the stop token) interrupted the wait.
  // `stored` is set once the batch is in its slot: if this throws afterwards (a push of the
  // emitter), the batch is the buffer's and the caller must not deliver it again.
  bool deliver(std::uint64_t seq, std::vector<U>& items, sender<U>& tx, const std::stop_token& stop, bool& stored) {
    std::unique_lock lk(mu_);
    const std::size_t w = slots_.size();
    for (;;) {
      // Also wakes for a batch that a push which threw left in the next slot while nobody
      // emits: then this replica emits it (its own batch is not stored yet).
      auto may_go = [&] { return dead_ || seq < next_ + w || (!emitting_ && slots_[next_ % w]); };
      if (!may_go()) {
        // The window is full: its emitter is held up by the output. Timed on window_wait_
        // (node_spec::window_wait), so it counts as backpressured, not busy.
        const timed_wait held(window_wait_.get());
        if (!cv_.wait(lk, stop, may_go)) return false;
      }
      if (dead_) {
        discard_items(*graph_, out_, items);
        return false;
      }
      if (seq < next_ + w) break;
      if (!emit(lk, tx)) {
        discard_items(*graph_, out_, items);
        return false;
      }
    }
    auto& slot = slots_[seq % w];
    slot.emplace(std::move(items));
    items.clear();
    stored = true;
    if (emitting_) return true;  // the emitter will find it
    return emit(lk, tx);
  }

  // A replica whose input ended: emits what a push that threw left in its slot, unless
  // someone is emitting already (then they will). Cheap when there is nothing.
  void flush(sender<U>& tx) {
    std::unique_lock lk(mu_);
    if (emitting_ || dead_) return;
    (void)emit(lk, tx);
  }

 private:
  // Pushes the slots in order from next_ until a gap. Requires mu_ (held by lk).
  bool emit(std::unique_lock<std::mutex>& lk, sender<U>& tx) {
    const std::size_t w = slots_.size();
    emitting_ = true;
    while (!dead_ && slots_[next_ % w]) {
      // The batch stays in its slot while it is pushed, without the lock: no replica may
      // store into that slot (its next number, next_ + w, is outside the window until
      // next_ moves), and the other slots are other objects. So a push that throws (a
      // fault injected by sluice::testing::stress) leaves the batch where the next
      // emitter, or a replica's flush() at the end of its input, finds it.
      std::vector<U>& batch = *slots_[next_ % w];
      lk.unlock();
      bool ok = false;
      try {
        ok = push_batch(*graph_, tx, out_, batch);  // clears batch (pushed or discarded)
      } catch (...) {
        lk.lock();
        emitting_ = false;
        cv_.notify_all();
        throw;
      }
      lk.lock();
      slots_[next_ % w].reset();
      ++next_;
      cv_.notify_all();  // a slot is free: a waiting replica may store its batch
      if (!ok) {
        dead_ = true;
        for (auto& s : slots_) {
          if (s) {
            discard_items(*graph_, out_, *s);
            s.reset();
          }
        }
      }
    }
    emitting_ = false;
    return !dead_;
  }

  graph_core* graph_;
  std::size_t out_;
  std::shared_ptr<wait_clock> window_wait_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::optional<std::vector<U>>> slots_;  // guarded by mu_
  std::uint64_t next_ = 0;                            // guarded by mu_: next seq to emit
  bool emitting_ = false;                             // guarded by mu_
  bool dead_ = false;                                 // guarded by mu_: output ended
};

// ---- flat_map order (ordered flat_map replicas) -------------------------------------

// Shared state of an ordered flat_map with several replicas (see the file comment).
template <class U>
class flat_map_order {
 public:
  flat_map_order(graph_core& g, std::size_t out_channel, std::size_t window, std::size_t private_capacity,
                 std::shared_ptr<wait_clock> turns, std::shared_ptr<wait_clock> window_wait)
      : graph_(&g), out_(out_channel), turn_wait_(std::move(turns)), window_wait_(std::move(window_wait)),
        slots_(window), private_capacity_(private_capacity) {}

  // Nanoseconds the replicas have spent blocked pushing into private channels, the
  // pushes going on now included (the snapshot's; any thread).
  [[nodiscard]] std::uint64_t private_push_ns() {
    std::lock_guard lk(mu_);
    std::uint64_t ns = done_push_ns_;
    for (const auto& sl : slots_) {
      if (sl) ns += sl->stats().blocked_push_ns;
    }
    if (draining_ != nullptr) ns += draining_->stats().blocked_push_ns;
    return ns;
  }

  // Replica side. Pops a batch of up to `max` items through `out` (into `batch`) and
  // numbers it; nullopt when the input is done. If the pop throws with items in `batch`
  // already, they are numbered (`numbered`) before the exception goes on.
  template <class T, class Out>
  std::optional<std::uint64_t> next(receiver<T>& rx, Out out, const std::vector<T>& batch, std::size_t max,
                                    std::optional<std::uint64_t>& numbered) {
    const auto turn = lock_timed(pop_mu_, turn_wait_.get());  // another replica in rx.pop_some(): input
    std::size_t n = 0;
    try {
      n = rx.pop_some(out, max);
    } catch (...) {
      if (!batch.empty()) numbered = next_seq_++;
      throw;
    }
    if (n == 0) {
      std::lock_guard lk2(mu_);
      if (!ended_) {
        ended_ = true;
        total_ = next_seq_;
      }
      cv_.notify_all();
      return std::nullopt;
    }
    return next_seq_++;
  }
  // Replica side: a private channel for batch `seq`, once it is inside the window.
  // An empty sender: stop (output gone or teardown).
  sender<U> open(std::uint64_t seq, const std::stop_token& stop) {
    channel_options<U> co;
    co.capacity = private_capacity_;
    if constexpr (channel_traits<U>::weighted) {
      co.weigh = [](const U& v) -> std::size_t { return channel_traits<U>::weigh(v); };
    }
    // What this channel discards (a cancel, or its end with items left in it) was made
    // for the stage's output and never pushed there: that channel's dead letters, counted
    // with a hook or without one (they were handed to the hook alone, and counted nowhere).
    co.on_discard = [g = graph_, ch = out_](U&& v) { g->discard_held(ch, v); };
    auto [tx, rx] = bounded<U>(std::move(co));
    // Under stress, the user's pushes into it get faults as every graph channel's do
    // (and the emitter's pops from it); set before the receiver reaches the emitter.
    if (fault_hook* h = graph_->faults(); h != nullptr) [[unlikely]] channel_access::set_fault_hook(tx, h);
    std::unique_lock lk(mu_);
    const std::size_t w = slots_.size();
    const auto inside = [&] { return dead_ || seq < next_ + w; };
    if (!inside()) {
      const timed_wait held(window_wait_.get());  // the emitter is behind: backpressure
      if (!cv_.wait(lk, stop, inside)) return {};
    }
    if (dead_) return {};
    slots_[seq % w].emplace(std::move(rx));
    cv_.notify_all();
    return std::move(tx);
  }
  // Emitter side: forwards the private channels in order until the input is done and
  // every item was forwarded, the output ends, or teardown.
  void emit(sender<U>& out, replica_env& env) {
    const std::stop_token stop = env.stop_token();
    std::vector<U> buf;
    buf.reserve(kBatch);
    for (;;) {
      receiver<U> rx;
      {
        std::unique_lock lk(mu_);
        const std::size_t w = slots_.size();
        const auto ready = [&] { return dead_ || slots_[next_ % w] || (ended_ && next_ == total_); };
        bool go = ready();
        if (!go) {
          const timed_wait waiting(turn_wait_.get());  // for the next item: input
          go = cv_.wait(lk, stop, ready);
        }
        if (!go) break;
        if (dead_ || !slots_[next_ % w]) break;
        rx = std::move(*slots_[next_ % w]);
        slots_[next_ % w].reset();
        draining_ = &rx;
      }
      bool ok = true;
      try {
        const auto take = [&] {
          // What is buffered already is taken untimed; a pop that has to wait (the
          // replica is still making the item's outputs) is timed: input.
          // An item whose move into buf throws is a dead letter naming the stage (it was
          // destroyed unreported), then the exception fails the stage.
          if (channel_access::try_pop_some(rx, batch_inserter<U>(buf, env, out_, false), kBatch) != 0) return true;
          const timed_wait waiting(turn_wait_.get());
          return rx.pop_some(batch_inserter<U>(buf, env, out_, false), kBatch) != 0;
        };
        while (ok && take()) ok = push_batch(*graph_, out, out_, buf);
      } catch (...) {
        // A push that threw: what it held is a dead letter, and the order ends as when the
        // output ends (the replicas stop waiting for a window that will not move).
        discard_items(*graph_, out_, buf);
        std::vector<receiver<U>> gone;  // destroyed after the lock: on_discard may snapshot
        std::lock_guard lk(mu_);
        drained(rx);
        dead_ = true;
        drop_slots(gone);
        cv_.notify_all();
        throw;
      }
      std::lock_guard lk(mu_);  // released before rx is destroyed
      drained(rx);
      ++next_;
      if (!ok) break;
      cv_.notify_all();
    }
    shut();
  }
  // Done or stopped: wakes every replica waiting for the window, and disconnects every
  // private channel left (their pushes fail at once; their items become dead letters).
  // The emitter's task calls it again when destroyed: an emitter thread that started
  // after teardown never runs emit(), and a replica blocked on a full private channel
  // would wait for it forever.
  void shut() noexcept {
    std::vector<receiver<U>> gone;  // destroyed after the lock: their items' on_discard
    std::lock_guard lk(mu_);        // may take a snapshot, which takes mu_
    dead_ = true;
    drop_slots(gone);
    cv_.notify_all();
  }

 private:
  // Under mu_: the batch in rx is forwarded (or abandoned); its pushes' blocked time
  // moves to the finished total.
  void drained(const receiver<U>& rx) noexcept {
    done_push_ns_ += rx.stats().blocked_push_ns;
    draining_ = nullptr;
  }
  // Under mu_: takes every private channel still waiting out of the window, keeping
  // their time; the caller destroys them (disconnects them: their items are dead
  // letters) once it has let go of mu_.
  void drop_slots(std::vector<receiver<U>>& gone) noexcept {
    for (auto& sl : slots_) {
      if (!sl) continue;
      done_push_ns_ += sl->stats().blocked_push_ns;
      try {
        gone.push_back(std::move(*sl));
      } catch (...) {  // no memory for the list: disconnected here, under the lock
      }
      sl.reset();
    }
  }

  graph_core* graph_;
  std::size_t out_;
  std::shared_ptr<wait_clock> turn_wait_;
  std::shared_ptr<wait_clock> window_wait_;
  std::mutex pop_mu_;
  std::uint64_t next_seq_ = 0;  // guarded by pop_mu_
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::optional<receiver<U>>> slots_;  // guarded by mu_
  const receiver<U>* draining_ = nullptr;          // guarded by mu_: the emitter's batch
  std::uint64_t done_push_ns_ = 0;                 // guarded by mu_
  std::uint64_t next_ = 0;                         // guarded by mu_: next item to forward
  bool ended_ = false;                             // guarded by mu_: input done
  std::uint64_t total_ = 0;                        // guarded by mu_: items numbered in all
  bool dead_ = false;                              // guarded by mu_
  std::size_t private_capacity_;
};

}  // namespace sluice::detail
