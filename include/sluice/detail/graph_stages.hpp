// sluice/detail/graph_stages.hpp — the typed loops a stage thread runs (one
// replica_task per thread), the reorder buffers of ordered replicas, and the helpers
// that route undelivered items to the graph's dead-letter hook.
//
// Batching: item stages (map, filter, sink) and the internal routing stages pop up to
// a batch of items at once (pop_some: whatever is buffered, at least one), work through
// it, and push the results with one push_all. A batch is what makes one wake-up and one
// fence cover many items. A replica therefore holds at most one input batch and one
// output batch besides the channels' capacity.
//
// Ordered replicas (map/filter, replicas > 1, ordered): a replica pops its batch and
// takes a sequence number under one mutex (so batch order is input order), works
// without locks, then hands the output batch to the reorder_buffer. The buffer has a
// fixed window of slots: a batch whose number is a window ahead of the next to emit
// waits, so a slow item blocks the others instead of making memory grow. Whoever fills
// the slot that is next becomes the emitter and pushes slots in order until it finds a
// gap; the others go back to work.
//
// Ordered flat_map replicas: each input item gets a private bounded channel that its
// replica's function pushes into; one extra thread of the stage (the emitter) drains the
// private channels in input order into the stage's output. The window bounds how many
// private channels exist at once.
//
// Requires: called only from graph.hpp's builders and the graph's stage threads.
// Guarantees: each popped item is either handed to the stage function, pushed on, or
// given to the dead-letter hook; no stage function is called once env.stopping().
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
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

namespace sluice::detail {

// Items per pop_some/push_all of a single-thread stage, and of a replica.
inline constexpr std::size_t kBatch = 64;
inline constexpr std::size_t kReplicaBatch = 8;

// ---- calling stage functions ------------------------------------------------------

// Whether f takes a std::stop_token after args.
template <class F, class... Args>
inline constexpr bool takes_stop_v = std::is_invocable_v<F&, Args..., const std::stop_token&>;

template <class F, class... Args>
inline constexpr bool callable_v = std::is_invocable_v<F&, Args...> || takes_stop_v<F, Args...>;

template <class F, class... Args>
struct stage_result {
  using type = std::invoke_result_t<F&, Args...>;
};
template <class F, class... Args>
  requires takes_stop_v<F, Args...>
struct stage_result<F, Args...> {
  using type = std::invoke_result_t<F&, Args..., const std::stop_token&>;
};
template <class F, class... Args>
using stage_result_t = typename stage_result<F, Args...>::type;

template <class F, class... Args>
decltype(auto) call_stage(F& f, const std::stop_token& st, Args&&... args) {
  if constexpr (takes_stop_v<F, Args&&...>) {
    return std::invoke(f, std::forward<Args>(args)..., st);
  } else {
    return std::invoke(f, std::forward<Args>(args)...);
  }
}

// ---- the stage function: one prototype, one copy per replica ---------------------

// The prototype shared by a stage's replicas. Copyable functions are copied for every
// replica and again for every restart; a move-only function is used in place (the
// builder allows it only with one replica and no restart policy).
template <class F>
struct fn_source {
  explicit fn_source(F f) : proto(std::move(f)) {}
  F proto;
};

template <class F>
class fn_slot {
 public:
  static constexpr bool kCopies = std::is_copy_constructible_v<F>;

  explicit fn_slot(std::shared_ptr<fn_source<F>> src) : src_(std::move(src)) {
    if constexpr (kCopies) fn_.emplace(src_->proto);
  }
  F& get() noexcept {
    if constexpr (kCopies) {
      return *fn_;
    } else {
      return src_->proto;
    }
  }
  // Destroys the current copy (its destructor is the stage's cleanup), makes a fresh one.
  void renew() {
    if constexpr (kCopies) {
      fn_.reset();
      fn_.emplace(src_->proto);
    }
  }

 private:
  std::shared_ptr<fn_source<F>> src_;  // the last replica to go destroys the prototype
  std::optional<F> fn_;
};

// ---- the graph's handle on a channel --------------------------------------------

template <class T>
class typed_channel_control final : public channel_control {
 public:
  explicit typed_channel_control(sender<T> tx) noexcept : tx_(std::move(tx)) {}
  void cancel(std::exception_ptr why) noexcept override { tx_.cancel(std::move(why)); }
  void close() noexcept override { tx_.close(); }
  [[nodiscard]] channel_stats stats() const override { return tx_.stats(); }
  [[nodiscard]] bool closed() const noexcept override { return tx_.is_closed(); }

 private:
  sender<T> tx_;
};

// ---- dead letters ----------------------------------------------------------------

// Hands items[from..] to the dead-letter hook of `channel` and clears `items`.
template <class T>
void discard_items(graph_core& g, std::size_t channel, std::vector<T>& items, std::size_t from = 0) noexcept {
  if (g.has_discard_hook()) {
    for (std::size_t i = from; i < items.size(); ++i) g.discard(channel, typeid(T), &items[i]);
  }
  items.clear();
}

// Pushes the whole batch (moving the items); on failure (the output ended: closed,
// disconnected or cancelled) the rest go to the dead-letter hook. Clears `items`.
template <class T>
bool push_batch(graph_core& g, sender<T>& tx, std::size_t channel, std::vector<T>& items) {
  if (items.empty()) return true;
  if (items.size() == 1) {
    // push_until leaves the item untouched when it fails (unlike push(T)).
    if (tx.push_until(std::move(items.front()), time_point::max()) == status::ok) {
      items.clear();
      return true;
    }
    discard_items(g, channel, items);
    return false;
  }
  const std::size_t n = tx.push_all(std::move(items));
  if (n == items.size()) {
    items.clear();
    return true;
  }
  // push_all moves an element only once it is in: items[n..] are intact.
  discard_items(g, channel, items, n);
  return false;
}

// Pushes one item; it is left intact when the push fails.
template <class T>
bool push_keep(sender<T>& tx, T& v) {
  return tx.push_until(std::move(v), time_point::max()) == status::ok;
}

template <class T>
std::size_t batch_for(const receiver<T>& rx, std::size_t threads) {
  const std::size_t want = threads > 1 ? kReplicaBatch : kBatch;
  return std::max<std::size_t>(1, std::min(want, rx.capacity()));
}

// ---- reorder buffer (ordered map/filter replicas) -------------------------------

template <class U>
class reorder_buffer {
 public:
  reorder_buffer(graph_core& g, std::size_t out_channel, std::size_t window)
      : graph_(&g), out_(out_channel), slots_(window) {}
  reorder_buffer(const reorder_buffer&) = delete;
  reorder_buffer& operator=(const reorder_buffer&) = delete;
  ~reorder_buffer() {
    // Batches still parked here when the stage ends (teardown, output gone).
    for (auto& s : slots_) {
      if (s) discard_items(*graph_, out_, *s);
    }
  }

  // Popping and numbering happen together under this mutex: batch order is input order.
  std::mutex pop_mu;
  std::uint64_t next_seq = 0;  // guarded by pop_mu

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
      if (!cv_.wait(lk, stop, [&] { return dead_ || seq < next_ + w || (!emitting_ && slots_[next_ % w]); })) {
        return false;
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
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::optional<std::vector<U>>> slots_;  // guarded by mu_
  std::uint64_t next_ = 0;                            // guarded by mu_: next seq to emit
  bool emitting_ = false;                             // guarded by mu_
  bool dead_ = false;                                 // guarded by mu_: output ended
};

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
class through_task final : public replica_task {
 public:
  through_task(receiver<T> rx, sender<U> tx, std::shared_ptr<fn_source<F>> fn)
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
// the item that threw is dropped, the rest go to the fresh function copy.
template <item_kind K, class T, class U, class F>
class item_task final : public replica_task {
  static constexpr bool kHasOutput = K != item_kind::sink;
  using out_sender = std::conditional_t<kHasOutput, sender<U>, int>;

 public:
  item_task(graph_core& g, receiver<T> rx, std::size_t in_channel, out_sender tx, std::size_t out_channel,
            std::shared_ptr<fn_source<F>> fn, std::shared_ptr<reorder_buffer<U>> order, std::size_t threads)
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
        if (!refill()) {
          // A batch a push threw on may wait in the reorder buffer (restart policy).
          if constexpr (kHasOutput) {
            if (order_) order_->flush(tx_);
          }
          return;
        }
        open_ = true;
      }
      while (pos_ < in_.size()) {
        if (env.stopping()) return;  // the rest of the batch becomes dead letters
        T& v = in_[pos_++];
        bool more = true;
        try {
          more = apply(v, env.stop_token());
        } catch (...) {
          // The item is dropped whatever the policy does next: a dead letter with its error.
          env.discard_failed(in_ch_, typeid(T), &v, std::current_exception());
          if (!env.skips()) throw;
          env.count_error();  // skip: the item is dropped, counted as an error
        }
        if (!more) {
          env.finish_stage();  // a sink said "enough": not a failure
          return;
        }
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
  bool refill() {
    if (order_) {
      std::lock_guard lk(order_->pop_mu);
      if (rx_.pop_some(std::back_inserter(in_), batch_) == 0) return false;
      seq_ = order_->next_seq++;
      return true;
    }
    return rx_.pop_some(std::back_inserter(in_), batch_) != 0;
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
  std::shared_ptr<reorder_buffer<U>> order_;
  std::size_t batch_;
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
class expand_task final : public replica_task {
 public:
  expand_task(graph_core& g, receiver<T> rx, std::size_t in_channel, sender<U> tx,
              std::shared_ptr<fn_source<F>> fn, std::size_t threads)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), tx_(std::move(tx)), fn_(std::move(fn)),
        batch_(batch_for(rx_, threads)) {}
  ~expand_task() override { discard_items(*graph_, in_ch_, in_, pos_); }

  void run(replica_env& env) override {
    for (;;) {
      if (pos_ == in_.size()) {
        in_.clear();
        pos_ = 0;
        if (env.stopping() || rx_.pop_some(std::back_inserter(in_), batch_) == 0) return;
      }
      while (pos_ < in_.size()) {
        if (env.stopping() || tx_.is_closed()) return;
        T& v = in_[pos_++];
        try {
          call_stage(fn_.get(), env.stop_token(), std::move(v), tx_);
        } catch (...) {
          env.discard_failed(in_ch_, typeid(T), &v, std::current_exception());
          if (!env.skips()) throw;
          env.count_error();
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

// Shared state of an ordered flat_map with several replicas (see the file comment).
template <class U>
class expand_order {
 public:
  expand_order(graph_core& g, std::size_t out_channel, std::size_t window, std::size_t private_capacity)
      : graph_(&g), out_(out_channel), slots_(window), private_capacity_(private_capacity) {}

  // Replica side. Pops one item and numbers it; nullopt when the input is done.
  template <class T>
  std::optional<std::pair<std::uint64_t, T>> next(receiver<T>& rx) {
    std::lock_guard lk(pop_mu_);
    auto v = rx.pop();
    if (!v) {
      std::lock_guard lk2(mu_);
      if (!ended_) {
        ended_ = true;
        total_ = next_seq_;
      }
      cv_.notify_all();
      return std::nullopt;
    }
    return std::pair<std::uint64_t, T>(next_seq_++, std::move(*v));
  }
  // Replica side: a private channel for item `seq`, once it is inside the window.
  // An empty sender: stop (output gone or teardown).
  sender<U> open(std::uint64_t seq, const std::stop_token& stop) {
    channel_options<U> co;
    co.capacity = private_capacity_;
    if constexpr (channel_traits<U>::weighted) {
      co.weigh = [](const U& v) -> std::size_t { return channel_traits<U>::weigh(v); };
    }
    if (graph_->has_discard_hook()) {
      co.on_discard = [g = graph_, ch = out_](U&& v) { g->discard(ch, typeid(U), &v); };
    }
    auto [tx, rx] = bounded<U>(std::move(co));
    std::unique_lock lk(mu_);
    const std::size_t w = slots_.size();
    if (!cv_.wait(lk, stop, [&] { return dead_ || seq < next_ + w; }) || dead_) return {};
    slots_[seq % w].emplace(std::move(rx));
    cv_.notify_all();
    return std::move(tx);
  }
  // Emitter side: forwards the private channels in order until the input is done and
  // every item was forwarded, the output ends, or teardown.
  void emit(sender<U>& out, const std::stop_token& stop) {
    std::vector<U> buf;
    buf.reserve(kBatch);
    for (;;) {
      receiver<U> rx;
      {
        std::unique_lock lk(mu_);
        const std::size_t w = slots_.size();
        if (!cv_.wait(lk, stop, [&] { return dead_ || slots_[next_ % w] || (ended_ && next_ == total_); })) {
          break;
        }
        if (dead_ || !slots_[next_ % w]) break;
        rx = std::move(*slots_[next_ % w]);
        slots_[next_ % w].reset();
      }
      bool ok = true;
      try {
        while (ok && rx.pop_some(std::back_inserter(buf), kBatch) != 0) ok = push_batch(*graph_, out, out_, buf);
      } catch (...) {
        // A push that threw: what it held is a dead letter, and the order ends as when the
        // output ends (the replicas stop waiting for a window that will not move).
        discard_items(*graph_, out_, buf);
        std::lock_guard lk(mu_);
        dead_ = true;
        for (auto& sl : slots_) sl.reset();
        cv_.notify_all();
        throw;
      }
      std::lock_guard lk(mu_);
      ++next_;
      if (!ok) break;
      cv_.notify_all();
    }
    // Done or stopped: wake every replica waiting for the window, and disconnect every
    // private channel left (their pushes fail at once; their items become dead letters).
    std::lock_guard lk(mu_);
    dead_ = true;
    for (auto& s : slots_) s.reset();
    cv_.notify_all();
  }

 private:
  graph_core* graph_;
  std::size_t out_;
  std::mutex pop_mu_;
  std::uint64_t next_seq_ = 0;  // guarded by pop_mu_
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::optional<receiver<U>>> slots_;  // guarded by mu_
  std::uint64_t next_ = 0;                         // guarded by mu_: next item to forward
  bool ended_ = false;                             // guarded by mu_: input done
  std::uint64_t total_ = 0;                        // guarded by mu_: items numbered in all
  bool dead_ = false;                              // guarded by mu_
  std::size_t private_capacity_;
};

// Ordered flat_map replica (index < replicas) or the emitter (index == replicas).
template <class T, class U, class F>
class ordered_expand_task final : public replica_task {
 public:
  ordered_expand_task(graph_core& g, receiver<T> rx, std::size_t in_channel, sender<U> tx,
                      std::shared_ptr<fn_source<F>> fn, std::shared_ptr<expand_order<U>> order, bool emitter)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), tx_(std::move(tx)), fn_(std::move(fn)),
        order_(std::move(order)), emitter_(emitter) {
    if (emitter_) rx_.reset();  // the emitter never reads the input
  }
  ~ordered_expand_task() override {
    if (item_) {
      std::vector<T> rest;
      rest.push_back(std::move(item_->second));
      discard_items(*graph_, in_ch_, rest);
    }
  }

  void run(replica_env& env) override {
    if (emitter_) {
      order_->emit(tx_, env.stop_token());
      return;
    }
    tx_.reset();  // replicas push only into private channels
    for (;;) {
      if (env.stopping()) return;
      if (!item_) {
        item_ = order_->next(rx_);
        if (!item_) return;
      }
      sender<U> priv = order_->open(item_->first, env.stop_token());
      if (!priv) return;
      if (env.stopping()) return;
      auto it = std::move(item_);
      item_.reset();
      try {
        call_stage(fn_.get(), env.stop_token(), std::move(it->second), priv);
      } catch (...) {
        env.discard_failed(in_ch_, typeid(T), &it->second, std::current_exception());
        if (!env.skips()) throw;
        env.count_error();
      }
    }
  }
  void renew() override { fn_.renew(); }

 private:
  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  sender<U> tx_;
  fn_slot<F> fn_;
  std::shared_ptr<expand_order<U>> order_;
  bool emitter_;
  std::optional<std::pair<std::uint64_t, T>> item_;
};

// ---- internal routing stages ---------------------------------------------------------

enum class route_kind { broadcast, round_robin, partition };
struct no_key {};  // the Key of broadcast and round_robin

// One input, n outputs. Key is only used by partition (std::hash of key(v), modulo n).
template <route_kind K, class T, class Key>
class route_task final : public replica_task {
 public:
  route_task(graph_core& g, receiver<T> rx, std::size_t in_channel, std::vector<sender<T>> outs,
             std::vector<std::size_t> out_channels, Key key)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), outs_(std::move(outs)),
        out_ch_(std::move(out_channels)), live_(outs_.size(), true), nlive_(outs_.size()),
        key_(std::move(key)), batch_(batch_for(rx_, 1)) {}
  ~route_task() override { discard_items(*graph_, in_ch_, in_, pos_); }

  void run(replica_env& env) override {
    for (;;) {
      in_.clear();
      pos_ = 0;
      if (nlive_ == 0 || env.stopping() || rx_.pop_some(std::back_inserter(in_), batch_) == 0) return;
      if constexpr (K == route_kind::broadcast) {
        // Each branch's copy has exactly one fate: pushed, or a dead letter of that
        // branch's channel. With a dead-letter hook that includes the copies a branch
        // that ended early would have had, so exact accounting sees every item; without
        // one, ended branches cost nothing. No stopping() check between branches: a
        // push to a cancelled channel fails at once and its copy becomes a dead letter.
        const bool hook = graph_->has_discard_hook();
        std::size_t last = outs_.size();  // the last branch that needs a copy takes the batch
        while (last > 0 && !live_[last - 1] && !hook) --last;
        for (std::size_t i = 0; i < last; ++i) {
          if (!live_[i] && !hook) continue;
          std::vector<T> copy;
          if (i + 1 == last) {
            copy = std::move(in_);
            in_.clear();
          } else {
            copy = in_;
          }
          if (!live_[i]) {
            discard_items(*graph_, out_ch_[i], copy);
            continue;
          }
          bool ok = false;
          try {
            ok = push_batch(*graph_, outs_[i], out_ch_[i], copy);
          } catch (...) {
            // The push threw (an injected fault, a throwing copy): this branch's copy and
            // those of the branches not reached yet are dead letters, each of its branch.
            discard_items(*graph_, out_ch_[i], copy);
            for (std::size_t j = i + 1; j < last && hook; ++j) {
              std::vector<T> rest = in_;
              discard_items(*graph_, out_ch_[j], rest);
            }
            in_.clear();
            throw;
          }
          if (!ok) drop(i);
        }
        in_.clear();
      } else {
        while (pos_ < in_.size()) {
          if (env.stopping() || nlive_ == 0) return;
          T& v = in_[pos_];
          if constexpr (K == route_kind::round_robin) {
            bool sent = false;
            while (!sent && nlive_ > 0) {
              next_ = (next_ + 1) % outs_.size();
              if (!live_[next_]) continue;
              if (push_keep(outs_[next_], v)) {
                sent = true;
              } else {
                drop(next_);
              }
            }
            if (!sent) return;
          } else {
            const auto k = key_(std::as_const(v));
            const std::size_t i = std::hash<std::decay_t<decltype(k)>>{}(k) % outs_.size();
            if (!live_[i] || !push_keep(outs_[i], v)) {
              if (live_[i]) drop(i);
              graph_->discard(out_ch_[i], typeid(T), &v);  // its branch has ended
            }
          }
          ++pos_;
        }
      }
    }
  }
  void renew() override {}

 private:
  void drop(std::size_t i) {
    live_[i] = false;
    --nlive_;
    outs_[i].reset();
  }

  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  std::vector<sender<T>> outs_;
  std::vector<std::size_t> out_ch_;
  std::vector<bool> live_;
  std::size_t nlive_;
  Key key_;
  std::size_t batch_;
  std::vector<T> in_;
  std::size_t pos_ = 0;
  std::size_t next_ = static_cast<std::size_t>(-1);
};

// merge: thread i forwards input i into the shared output.
template <class T>
class forward_task final : public replica_task {
 public:
  forward_task(graph_core& g, receiver<T> rx, std::size_t /*in_channel*/, sender<T> tx, std::size_t out_channel)
      : graph_(&g), rx_(std::move(rx)), tx_(std::move(tx)), out_ch_(out_channel),
        batch_(batch_for(rx_, 1)) {}

  void run(replica_env& env) override {
    std::vector<T> buf;
    buf.reserve(batch_);
    try {
      while (!env.stopping() && rx_.pop_some(std::back_inserter(buf), batch_) != 0) {
        if (!push_batch(*graph_, tx_, out_ch_, buf)) return;
      }
    } catch (...) {
      discard_items(*graph_, out_ch_, buf);  // a push that threw: what it held is a dead letter
      throw;
    }
  }
  void renew() override {}

 private:
  graph_core* graph_;
  receiver<T> rx_;
  sender<T> tx_;
  std::size_t out_ch_;
  std::size_t batch_;
};

}  // namespace sluice::detail
