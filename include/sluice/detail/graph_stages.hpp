// sluice/detail/graph_stages.hpp — the typed loops a stage thread runs, one
// replica_task per thread, named after the graph methods that make them: source,
// stage, consume, map / filter / sink (item_task), flat_map (ordered or not).
//
// Requires: made only by graph.hpp's builders, run only on the graph's stage threads.
// Guarantees: each popped item is either handed to the stage function, pushed on, or
//   given to the dead-letter hook; no stage function is called once env.stopping().
//   A task's destructor hands the items it still holds to the dead-letter hook.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_order.hpp"
#include "sluice/detail/graph_task.hpp"
#include "sluice/detail/ticks.hpp"

namespace sluice::detail {

// ---- sources, whole-stream stages ------------------------------------------------

// source: f(sender<T>&[, stop_token]).
template <class T, class F>
class source_task final : public replica_task {
 public:
  source_task(sender<T> tx, std::shared_ptr<fn_source<F>> fn) : tx_(std::move(tx)), fn_(std::move(fn)) {}
  void run(replica_env& env) override { call_stage(fn_.get(), env.stop_token(), tx_); }
  void renew() override { fn_.renew(); }

 private:
  sender<T> tx_;
  fn_slot<F> fn_;
};

// stage<U>: f(receiver<T>&, sender<U>&[, stop_token]).
template <class T, class U, class F>
class stage_task final : public replica_task {
 public:
  stage_task(receiver<T> rx, sender<U> tx, std::shared_ptr<fn_source<F>> fn)
      : rx_(std::move(rx)), tx_(std::move(tx)), fn_(std::move(fn)) {}
  void run(replica_env& env) override { call_stage(fn_.get(), env.stop_token(), rx_, tx_); }
  void renew() override { fn_.renew(); }

 private:
  receiver<T> rx_;
  sender<U> tx_;
  fn_slot<F> fn_;
};

// consume: f(receiver<T>&[, stop_token]).
template <class T, class F>
class consume_task final : public replica_task {
 public:
  consume_task(receiver<T> rx, std::shared_ptr<fn_source<F>> fn) : rx_(std::move(rx)), fn_(std::move(fn)) {}
  void run(replica_env& env) override { call_stage(fn_.get(), env.stop_token(), rx_); }
  void renew() override { fn_.renew(); }

 private:
  receiver<T> rx_;
  fn_slot<F> fn_;
};

// ---- per-item stages: map, filter, sink --------------------------------------------

enum class item_kind { map, filter, sink };

// U is the output item type (unused for a sink). The current batch survives a restart:
// the item that threw is dropped, the rest go to the fresh function copy. A batch takes
// up to batch_ items while the function is fast, one while it takes more than
// kSlowItemNs an item (measured over each batch; the first batch is one item).
template <item_kind K, class T, class U, class F>
class item_task final : public replica_task {
  static constexpr bool kHasOutput = K != item_kind::sink;
  using out_sender = std::conditional_t<kHasOutput, sender<U>, int>;

 public:
  item_task(graph_core& g, receiver<T> rx, std::size_t in_channel, out_sender tx, std::size_t out_channel,
            std::shared_ptr<fn_source<F>> fn, std::shared_ptr<reorder_window<U>> order, std::size_t threads)
      : graph_(&g),
        rx_(std::move(rx)),
        in_ch_(in_channel),
        tx_(std::move(tx)),
        out_ch_(out_channel),
        fn_(std::move(fn)),
        order_(std::move(order)),
        batch_(batch_for(rx_, threads)) {
    in_.reserve(batch_);
    if constexpr (kHasOutput) out_.reserve(batch_);
  }
  ~item_task() override {
    discard_items(*graph_, in_ch_, in_, pos_);
    if constexpr (kHasOutput) discard_items(*graph_, out_ch_, out_);
  }

  void run(replica_env& env) override {
    for (;;) {
      // open_: a batch was popped (and numbered) and is not delivered yet. A restart
      // resumes it, even when the item that threw was its last one: an ordered
      // replica must deliver every number it took, or the reorder window stops.
      if (!open_) {
        in_.clear();
        pos_ = 0;
        if (env.stopping()) return;
        if (!refill(env)) {
          // A batch a push threw on may wait in the reorder buffer (restart policy).
          if constexpr (kHasOutput) {
            if (order_) order_->flush(tx_);
          }
          return;
        }
        open_ = true;
        batch_t0_ = ticks();
      }
      while (pos_ < in_.size()) {
        if (env.stopping()) return;  // the rest of the batch becomes dead letters
        T& v = in_[pos_++];
        bool more = true;
        try {
          more = apply(v, env.stop_token());
        } catch (...) {
          if constexpr (kHasOutput) {
            if (!order_ && !out_.empty() && env.restarts()) {
              // What the batch made before this item goes on now, not after the backoff
              // (a 3 s backoff held three finished results for 3 s, and a cancel during it
              // made them dead letters). v is a dead letter first: a push that throws (a
              // fault injected under stress) then leaves out_ for the resumed batch.
              env.discard_failed(in_ch_, typeid(T), std::addressof(v), std::current_exception());
              (void)push_batch(*graph_, tx_, out_ch_, out_);  // the output ended: dead letters
              throw;
            }
          }
          env.item_failed(in_ch_, v);  // a dead letter; rethrows unless the policy skips
        }
        if (!more) {
          env.finish_stage();  // a sink said "enough": not a failure
          return;
        }
      }
      if (!in_.empty()) {
        const std::uint64_t per_item = ticks_to_ns(ticks() - batch_t0_) / in_.size();
        take_ = per_item > kSlowItemNs ? 1 : batch_;
      }
      // open_ stays set until the batch is handed on, so a push that throws (restart)
      // resumes here with the same batch and number.
      if constexpr (kHasOutput) {
        if (order_) {
          if (stored_) {
            order_->flush(tx_);  // stored before a push threw: help emit it
          } else if (!order_->deliver(seq_, out_, tx_, env.stop_token(), stored_)) {
            return;
          }
          stored_ = false;
        } else if (!push_batch(*graph_, tx_, out_ch_, out_)) {
          return;  // the output ended (consumer finished early, or teardown)
        }
      }
      open_ = false;
    }
  }
  void renew() override { fn_.renew(); }

 private:
  // Pops the next batch into in_. When an item's move into it throws (batch_inserter:
  // that item is a dead letter), the items popped before it are the open batch still
  // (numbered, when ordered, under the same turn), so that a restart delivers them; the
  // restart cleared them before, and they were lost without a trace.
  bool refill(replica_env& env) {
    const batch_inserter<T> into(in_, env, in_ch_, true);
    if (order_) {
      const auto lk = order_->take_turn();
      std::size_t n = 0;
      try {
        n = rx_.pop_some(into, take_);
      } catch (...) {
        if (!in_.empty()) {
          seq_ = order_->next_seq++;
          open_ = true;
        }
        throw;
      }
      if (n == 0) return false;
      seq_ = order_->next_seq++;
      return true;
    }
    try {
      return rx_.pop_some(into, take_) != 0;
    } catch (...) {
      open_ = !in_.empty();
      throw;
    }
  }

  // Returns false when a sink wants no more items.
  bool apply(T& v, const std::stop_token& st) {
    F& f = fn_.get();
    if constexpr (K == item_kind::map) {
      out_.push_back(call_stage(f, st, std::move(v)));
    } else if constexpr (K == item_kind::filter) {
      if (call_stage(f, st, std::as_const(v))) out_.push_back(std::move(v));
    } else {
      using R = stage_result_t<F, T&&>;
      if constexpr (std::is_same_v<R, void>) {
        call_stage(f, st, std::move(v));
      } else {
        return static_cast<bool>(call_stage(f, st, std::move(v)));
      }
    }
    return true;
  }

  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  out_sender tx_;
  std::size_t out_ch_;
  fn_slot<F> fn_;
  std::shared_ptr<reorder_window<U>> order_;
  std::size_t batch_;
  std::size_t take_ = 1;           // items the next pop takes (batch_, or 1 for a slow function)
  std::uint64_t batch_t0_ = 0;     // ticks() when the open batch was popped
  std::vector<T> in_;
  std::size_t pos_ = 0;
  std::vector<U> out_;
  std::uint64_t seq_ = 0;
  bool open_ = false;
  bool stored_ = false;  // this batch is in the reorder buffer (a push threw after)
};

// ---- flat_map -----------------------------------------------------------------------

// flat_map (one replica, or unordered replicas): f(T, sender<U>&[, stop_token]).
template <class T, class U, class F>
class flat_map_task final : public replica_task {
 public:
  flat_map_task(graph_core& g, receiver<T> rx, std::size_t in_channel, sender<U> tx,
              std::shared_ptr<fn_source<F>> fn, std::size_t threads)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), tx_(std::move(tx)), fn_(std::move(fn)),
        batch_(batch_for(rx_, threads)) {}
  ~flat_map_task() override { discard_items(*graph_, in_ch_, in_, pos_); }

  void run(replica_env& env) override {
    for (;;) {
      if (pos_ == in_.size()) {
        in_.clear();
        pos_ = 0;
        // A throw in the pop leaves what came before it in in_: delivered after a restart.
        if (env.stopping() || rx_.pop_some(batch_inserter<T>(in_, env, in_ch_, true), batch_) == 0) return;
      }
      while (pos_ < in_.size()) {
        if (env.stopping() || tx_.is_closed()) return;
        T& v = in_[pos_++];
        try {
          call_stage(fn_.get(), env.stop_token(), std::move(v), tx_);
        } catch (...) {
          env.item_failed(in_ch_, v);  // a dead letter; rethrows unless the policy skips
        }
      }
      if (tx_.is_closed()) return;  // the output ended: nobody will read
    }
  }
  void renew() override { fn_.renew(); }

 private:
  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  sender<U> tx_;
  fn_slot<F> fn_;
  std::size_t batch_;
  std::vector<T> in_;
  std::size_t pos_ = 0;
};

// Ordered flat_map replica (index < replicas) or the emitter (index == replicas).
template <class T, class U, class F>
class ordered_flat_map_task final : public replica_task {
 public:
  ordered_flat_map_task(graph_core& g, receiver<T> rx, std::size_t in_channel, sender<U> tx,
                        std::shared_ptr<fn_source<F>> fn, std::shared_ptr<flat_map_order<U>> order, bool emitter)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), tx_(std::move(tx)), fn_(std::move(fn)),
        order_(std::move(order)), emitter_(emitter),
        // Whole batches of 64 (unordered replicas take 8): each batch costs a private
        // channel and a hand-off to the emitter (graph_order.hpp). Weighted items: one.
        batch_(channel_traits<T>::weighted ? 1 : std::min<std::size_t>(kBatch, rx_.capacity())) {
    if (emitter_) {
      rx_.reset();  // the emitter never reads the input
    } else {
      in_.reserve(batch_);
    }
  }
  ~ordered_flat_map_task() override {
    discard_items(*graph_, in_ch_, in_, pos_);
    if (emitter_) order_->shut();  // also when run() never ran (a start after teardown)
  }

  void run(replica_env& env) override {
    if (emitter_) {
      order_->emit(tx_, env);
      return;
    }
    tx_.reset();  // replicas push only into private channels
    for (;;) {
      // open_: a batch was popped and numbered, and its private channel is not closed
      // yet. A restart resumes it in the same channel: every number taken must be
      // delivered (closed) or the emitter stops at it.
      if (!open_ && !unopened_) {
        in_.clear();
        pos_ = 0;
        if (env.stopping()) return;
        // An item whose move into in_ throws is a dead letter (batch_inserter); the ones
        // before it are numbered still (unopened_), and a restart delivers them.
        const auto seq = order_->next(rx_, batch_inserter<T>(in_, env, in_ch_, true), in_, batch_, unopened_);
        if (!seq) return;
        unopened_ = seq;
      }
      if (unopened_) {
        open_ = true;
        priv_ = order_->open(*unopened_, env.stop_token());
        unopened_.reset();
      }
      if (!priv_) return;  // output gone or teardown: the batch becomes dead letters
      while (pos_ < in_.size()) {
        if (env.stopping()) return;  // the rest of the batch becomes dead letters
        T& v = in_[pos_++];
        try {
          call_stage(fn_.get(), env.stop_token(), std::move(v), priv_);
        } catch (...) {
          env.item_failed(in_ch_, v);  // a dead letter; rethrows unless the policy skips
        }
      }
      priv_.reset();  // closes the batch's channel: the emitter moves on past it
      open_ = false;
    }
  }
  void renew() override { fn_.renew(); }

 private:
  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  sender<U> tx_;
  fn_slot<F> fn_;
  std::shared_ptr<flat_map_order<U>> order_;
  bool emitter_;
  std::size_t batch_;
  std::vector<T> in_;
  std::size_t pos_ = 0;
  bool open_ = false;
  std::optional<std::uint64_t> unopened_;  // the number of a batch popped, its channel not open yet
  sender<U> priv_;  // the open batch's private channel
};

}  // namespace sluice::detail
