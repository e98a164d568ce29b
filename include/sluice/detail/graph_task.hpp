// sluice/detail/graph_task.hpp — what every typed stage task is made of: calling a
// stage function (with or without a trailing std::stop_token), one copy of the function
// per replica, the graph's handle on a channel, and the pushes that hand undelivered
// items to the graph's dead-letter hook.
//
// Batching: item stages (map, filter, sink) and the internal routing stages pop up to
// a batch of items at once (pop_some: whatever is buffered, at least one), work through
// it, and push the results with one push_all. A batch is what makes one wake-up and one
// fence cover many items. A replica therefore holds at most one input batch and one
// output batch besides the channels' capacity.
//
// Requires: called only from graph.hpp's builders and the graph's stage threads.
// Guarantees: push_batch pushes every item of the batch, or pushes a prefix and hands
//   the rest to the dead-letter hook; either way the batch is left empty. When an item's
//   move throws, the exception leaves with the batch holding that item and those after
//   it, never the ones already pushed. fn_slot::renew()
//   destroys the old copy (the stage's cleanup) before it makes the fresh one.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/stage.hpp"

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
  // Muted (detail/counter.hpp): the graph never pushes through tx_, so the stage that
  // is the edge's only sender takes the lone-side path; the channel stays open until
  // the graph closes it, as with any sender.
  explicit typed_channel_control(sender<T> tx) noexcept : tx_(std::move(tx)) { channel_access::mute(tx_); }
  ~typed_channel_control() override { channel_access::release_muted(tx_); }
  typed_channel_control(const typed_channel_control&) = delete;
  typed_channel_control& operator=(const typed_channel_control&) = delete;
  void cancel(std::exception_ptr why) noexcept override { tx_.cancel(std::move(why)); }
  void close() noexcept override { tx_.close(); }
  void disconnect() noexcept override { channel_access::disconnect(tx_); }
  [[nodiscard]] channel_stats stats() const override { return tx_.stats(); }
  [[nodiscard]] bool closed() const noexcept override { return tx_.is_closed(); }
  void wait_discards() noexcept override { channel_access::wait_discards(tx_); }

 private:
  sender<T> tx_;
};

// ---- dead letters ----------------------------------------------------------------

// Counts items[from..] as dead letters of `channel`, hands them to the dead-letter hook
// (if any) and clears `items`.
template <class T>
void discard_items(graph_core& g, std::size_t channel, std::vector<T>& items, std::size_t from = 0) noexcept {
  if (g.has_discard_hook()) {
    for (std::size_t i = from; i < items.size(); ++i) g.discard_held(channel, items[i]);
  } else if (items.size() > from) {
    g.count_held(channel, items.size() - from);  // no hook to hand them to: counted in one step
  }
  items.clear();
}

// The output iterator a stage pops its batch through (receiver::pop_some into `into`,
// reserved to the batch size, so push_back never reallocates). An item whose move into
// the batch throws has left the channel already (counted popped), and pop_some destroys
// it after the throw: it becomes a dead letter here while it still exists, naming the
// stage and the exception (it was lost without a trace). Then, when `skippable`, the
// stage's error policy decides as for a throw of its function (skip: counted, the pop
// goes on); otherwise, or under any other policy, the exception leaves pop_some, and the
// items before it stay in `into` for the caller to deliver or dead-letter.
template <class T>
class batch_inserter {
 public:
  using iterator_category = std::output_iterator_tag;
  using value_type = void;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = void;

  batch_inserter(std::vector<T>& into, replica_env& env, std::size_t channel, bool skippable) noexcept
      : into_(&into), env_(&env), channel_(channel), skippable_(skippable) {}
  batch_inserter& operator=(T&& item) {
    try {
      into_->push_back(std::move(item));
    } catch (...) {
      env_->discard_failed(channel_, typeid(T), std::addressof(item), std::current_exception());
      if (!skippable_ || !env_->skips()) throw;
      env_->count_error();
    }
    return *this;
  }
  batch_inserter& operator*() noexcept { return *this; }
  batch_inserter& operator++() noexcept { return *this; }
  batch_inserter operator++(int) noexcept { return *this; }
  // What the batch holds without reallocating: the ring's pop_into claims that many items
  // per CAS (ring_flavour::nothrow_room), as it does for a vector's back_inserter; without
  // it, every graph pop claimed one slot at a time.
  [[nodiscard]] std::size_t spare_capacity() const noexcept { return into_->capacity() - into_->size(); }

 private:
  std::vector<T>* into_;
  replica_env* env_;
  std::size_t channel_;
  bool skippable_;
};

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
  std::size_t went_in = 0;
  std::size_t n = 0;
  try {
    n = channel_access::push_all_counted(tx, items, went_in);
  } catch (...) {
    // An item's move threw: those before it are in the channel (moved-from shells here),
    // it and the rest are still ours. The batch keeps only those, so that a restart
    // pushes them again and a teardown makes them dead letters, each once (the whole
    // batch went to on_discard, shells and all, after its prefix was delivered).
    if (went_in != 0) {
      std::vector<T> rest;  // by construction: an item type need not be assignable
      try {
        rest.reserve(items.size() - went_in);
        for (std::size_t i = went_in; i < items.size(); ++i) rest.push_back(std::move(items[i]));
        items.swap(rest);
      } catch (...) {
        // A move threw again: the rest cannot be kept for a restart. They are dead letters
        // now, each once, handed to on_discard: those moved aside already, then those
        // still in place (push_back into reserved room leaves `rest` as it was when a
        // move throws). They were counted and never handed to the hook, and under restart
        // the run ended "ok" without them.
        const std::size_t moved = rest.size();
        discard_items(g, channel, rest);
        discard_items(g, channel, items, went_in + moved);
      }
    }
    throw;
  }
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

// A per-item stage whose function takes longer than this per item pops one item at a
// time (item_task): a batch exists to spread a pop's cost (~100 ns) over cheap items, and
// over slow ones it only held the batch's finished items back. At 20 ms an item, a map
// pushed nothing for 64 items (1.3 s: its consumer waited, and the stall watchdog, which
// sees only items moving on channels, reported the steadily working graph as stalled).
inline constexpr std::uint64_t kSlowItemNs = 20'000;

// How many items one pop of a stage's thread takes. Replicas take fewer, so that one
// thread's batch does not leave its siblings idle. Replicas of a weighted item type
// (channel_traits: items that carry bytes, few per channel and each slow to process)
// take one at a time: two gzip blocks queued for two replicas must go one to each, not
// both to whichever woke first.
template <class T>
std::size_t batch_for(const receiver<T>& rx, std::size_t threads) {
  if constexpr (channel_traits<T>::weighted) {
    if (threads > 1) return 1;
  }
  const std::size_t want = threads > 1 ? kReplicaBatch : kBatch;
  return std::max<std::size_t>(1, std::min(want, rx.capacity()));
}

}  // namespace sluice::detail
